// Package infer is the batch ▸ infer stage: it reads accepted requests,
// queues them per model in bounded in-memory queues, and a pool of workers
// per model takes batches off the queue and calls the model backend, with
// retries, a circuit breaker, and splitting of failing batches, so one
// poison input fails alone. Every request leaves with one outcome.
//
// The batcher and the workers live in one process so that the batcher sees at
// once when a worker is free: batching is greedy (a freed worker takes what
// is queued, up to the model's limits), optionally waiting up to max_wait for
// a fuller batch.
package infer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

// Model is a model backend. Infer runs one batch and returns one list of
// output tensors per request, in order. An error fails the whole batch: a
// pipeline.Transient error is retried (and counts towards the circuit
// breaker); any other error means an input is bad, and the batch is split
// to find it. Infer is called concurrently by the model's workers.
type Model interface {
	Infer(ctx context.Context, batch []*schemas.Request) ([][]schemas.Tensor, error)
}

// ModelConfig is how one model is served.
type ModelConfig struct {
	Name         string
	Backend      Model
	MaxBatch     int           // items per call; default 64
	MaxBatchSize int           // bytes of encoded requests per call; default 900 KiB
	MaxWait      time.Duration // longest wait for a fuller batch; 0: greedy
	Timeout      time.Duration // per call; default 30s
	Concurrency  int           // workers (parallel calls); default 1
	MaxAttempts  int           // consecutive transient failures before an item fails; default 5
	// Circuit breaker: consecutive transient failures that open it, and how
	// long it stays open before a probe. Defaults 5 and 500ms.
	BreakerThreshold int
	BreakerCooldown  time.Duration
	// Objective is the latency objective: a request's effective deadline is
	// min(its deadline, created_at + Objective), so a request that can no
	// longer make it is answered EXPIRED instead of taking a worker. 0: none.
	Objective time.Duration
	// Deterministic declares that the model gives the same outputs for the
	// same inputs. Informational for now (config print shows it).
	Deterministic bool
}

// WithDefaults is m with every unset limit at its default.
func (m ModelConfig) WithDefaults() ModelConfig {
	m.setDefaults()
	return m
}

func (m *ModelConfig) setDefaults() {
	if m.MaxBatch <= 0 {
		m.MaxBatch = 64
	}
	if m.MaxBatchSize <= 0 {
		m.MaxBatchSize = 900 << 10
	}
	if m.Timeout <= 0 {
		m.Timeout = 30 * time.Second
	}
	if m.Concurrency <= 0 {
		m.Concurrency = 1
	}
	if m.MaxAttempts <= 0 {
		m.MaxAttempts = 5
	}
	if m.BreakerThreshold <= 0 {
		m.BreakerThreshold = 5
	}
	if m.BreakerCooldown <= 0 {
		m.BreakerCooldown = 500 * time.Millisecond
	}
}

// Error codes of FAILED outcomes from this stage.
const (
	CodeUnknownModel     = "UNKNOWN_MODEL"
	CodeInferenceFailed  = "INFERENCE_FAILED"
	CodeModelUnavailable = "MODEL_UNAVAILABLE"
)

// Stage is the batch ▸ infer stage.
type Stage struct {
	topics pipeline.Topics
	codec  *schemas.Codec
	models map[string]*served
	queueN int
	m      *Metrics
	r      *pipeline.Runner
}

type served struct {
	cfg ModelConfig
	q   *queue
	br  *breaker
}

// Metrics are the stage's Prometheus metrics.
type Metrics struct {
	BatchSize   *prometheus.HistogramVec
	Calls       *prometheus.CounterVec
	CallSeconds *prometheus.HistogramVec
	Outcomes    *prometheus.CounterVec
	QueueLen    *prometheus.GaugeVec
	Breaker     *prometheus.GaugeVec
}

// NewMetrics creates and registers the stage's metrics (reg nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns = "asyncinfer"
	m := &Metrics{
		BatchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "batch_size",
			Help: "Items per model call.", Buckets: prometheus.ExponentialBuckets(1, 2, 10)}, []string{"model"}),
		Calls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "model_calls_total",
			Help: "Model calls by result (ok, transient, permanent)."}, []string{"model", "result"}),
		CallSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "model_call_seconds",
			Help: "Duration of model calls.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"model"}),
		Outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "infer_outcomes_total",
			Help: "Outcomes of the infer stage by status."}, []string{"model", "status"}),
		QueueLen: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "model_queue_length",
			Help: "Requests queued in front of a model's workers."}, []string{"model"}),
		Breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "circuit_open",
			Help: "1 while a model's circuit breaker is open or half-open."}, []string{"model"}),
	}
	if reg != nil {
		reg.MustRegister(m.BatchSize, m.Calls, m.CallSeconds, m.Outcomes, m.QueueLen, m.Breaker)
	}
	return m
}

// New returns the stage. queueCap bounds each model's queue: set it to the
// runner's max in-flight, so a full queue means a bug, never a drop.
func New(topics pipeline.Topics, codec *schemas.Codec, models []ModelConfig, queueCap int, m *Metrics) (*Stage, error) {
	if len(models) == 0 {
		return nil, errors.New("infer: no models")
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	s := &Stage{topics: topics, codec: codec, models: make(map[string]*served), queueN: queueCap, m: m}
	for _, mc := range models {
		if mc.Name == "" || mc.Backend == nil {
			return nil, fmt.Errorf("infer: model %q: name and backend are required", mc.Name)
		}
		if _, dup := s.models[mc.Name]; dup {
			return nil, fmt.Errorf("infer: model %q configured twice", mc.Name)
		}
		mc.setDefaults()
		s.models[mc.Name] = &served{cfg: mc, q: newQueue(queueCap)}
	}
	return s, nil
}

// Bind wires the breakers to the runner's pause registry.
func (s *Stage) Bind(r *pipeline.Runner) {
	s.r = r
	for name, sv := range s.models {
		name := name
		sv.br = newBreaker(sv.cfg.BreakerThreshold, sv.cfg.BreakerCooldown,
			func() {
				s.m.Breaker.WithLabelValues(name).Set(1)
				r.Pauses().PauseAll(pipeline.PauseBreaker + ":" + name)
				r.Logger().Warn("circuit opened; input paused", "model", name)
			},
			func() {
				s.m.Breaker.WithLabelValues(name).Set(0)
				r.Pauses().ResumeAll(pipeline.PauseBreaker + ":" + name)
				r.Logger().Info("circuit closed; input resumed", "model", name)
			})
	}
}

// Run runs the workers until ctx is cancelled (after the runner's drain).
func (s *Stage) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, sv := range s.models {
		for i := 0; i < sv.cfg.Concurrency; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.work(ctx, sv)
			}()
		}
	}
	wg.Wait()
	return nil
}

// Handle queues the request for its model, or answers it at once.
func (s *Stage) Handle(ctx context.Context, w *pipeline.Work) {
	var req *schemas.Request
	err := pipeline.Retry(ctx, func() (err error) {
		req, err = s.codec.DecodeRequest(ctx, w.Record.Value)
		return err
	}, func(err error) bool { return !errors.Is(err, schemas.ErrMalformed) })
	if err != nil && !errors.Is(err, schemas.ErrMalformed) {
		// Not the bytes' fault (the registry is unreachable): stop rather
		// than dead-letter good input; the restart re-delivers it.
		s.r.Fail(fmt.Errorf("infer: decode: %w", err))
		return
	}
	if err != nil {
		// dedup let it through, so this is corruption or a foreign writer.
		dl, derr := w.DeadLetter("undecodable", err)
		if derr != nil {
			s.r.Fail(derr)
			return
		}
		w.Finish(pipeline.Output{Records: []*kgo.Record{dl}})
		return
	}
	sv, ok := s.models[req.Model]
	if !ok {
		s.answer(w, req, &schemas.Result{Status: schemas.StatusFailed, ErrorCode: CodeUnknownModel,
			ErrorMessage: fmt.Sprintf("no model %q is served", req.Model)}, 0)
		return
	}
	it := &item{w: w, req: req, size: len(w.Record.Value), enqueued: time.Now()}
	if req.DeadlineMs > 0 {
		it.deadline = time.UnixMilli(req.DeadlineMs)
	}
	if obj := sv.cfg.Objective; obj > 0 && req.CreatedAtMs > 0 {
		if d := time.UnixMilli(req.CreatedAtMs).Add(obj); it.deadline.IsZero() || d.Before(it.deadline) {
			it.deadline, it.byObjective = d, true
		}
	}
	if !sv.q.push(it) {
		// The queue holds up to the runner's in-flight bound, so this cannot
		// happen unless that sizing is broken. Rejecting would be wrong: dedup
		// has recorded the key, so a retry would be answered DUPLICATE. Stop
		// instead; the record is re-delivered after the restart.
		s.r.Fail(fmt.Errorf("infer: the queue of model %s is full although it is sized to the in-flight bound (a bug)", req.Model))
		return
	}
	s.m.QueueLen.WithLabelValues(req.Model).Set(float64(sv.q.len()))
}

func (s *Stage) work(ctx context.Context, sv *served) {
	for {
		b := sv.q.take(ctx, sv.cfg.MaxBatch, sv.cfg.MaxBatchSize, sv.cfg.MaxWait)
		if b == nil {
			return
		}
		s.m.QueueLen.WithLabelValues(sv.cfg.Name).Set(float64(sv.q.len()))
		s.run(ctx, sv, b)
	}
}

// run calls the model for a batch until every item has an outcome.
func (s *Stage) run(ctx context.Context, sv *served, b []*item) {
	name := sv.cfg.Name
	for len(b) > 0 {
		b = s.expire(b)
		if len(b) == 0 {
			return
		}
		probe, err := sv.br.acquire(ctx)
		if err != nil {
			return // shutting down: unfinished, so re-delivered
		}
		reqs := make([]*schemas.Request, len(b))
		for i, it := range b {
			reqs[i] = it.req
			it.attempt++
		}
		cctx, cancel := context.WithTimeout(ctx, sv.cfg.Timeout)
		start := time.Now()
		outs, err := sv.cfg.Backend.Infer(cctx, reqs)
		cancel()
		took := time.Since(start)
		s.m.CallSeconds.WithLabelValues(name).Observe(took.Seconds())
		s.m.BatchSize.WithLabelValues(name).Observe(float64(len(b)))
		switch {
		case err == nil && len(outs) != len(b):
			err = fmt.Errorf("infer: model %s returned %d outputs for %d inputs", name, len(outs), len(b))
			fallthrough
		case err != nil && !pipeline.Retryable(err):
			if ctx.Err() != nil {
				return
			}
			s.m.Calls.WithLabelValues(name, "permanent").Inc()
			sv.br.success(probe) // the model answered: it is up
			for _, it := range b {
				it.failures = 0 // the limit is on consecutive transient failures
			}
			if len(b) == 1 {
				s.answer(b[0].w, b[0].req, &schemas.Result{Status: schemas.StatusFailed, ErrorCode: CodeInferenceFailed,
					ErrorMessage: err.Error(), Attempt: b[0].attempt, BatchSize: 1}, took)
				return
			}
			// Split: each half runs on its own, so a poison input ends up
			// alone and fails without its neighbours.
			half := len(b) / 2
			s.run(ctx, sv, b[:half])
			b = b[half:]
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			s.m.Calls.WithLabelValues(name, "transient").Inc()
			// Failures while the circuit is open or probing do not count:
			// an outage makes requests wait, not fail.
			// The failure that opens the circuit does not count either.
			sv.br.failure(probe)
			counted := sv.br.isClosed() && !probe
			var keep []*item
			for _, it := range b {
				if counted {
					it.failures++
				}
				if it.failures >= sv.cfg.MaxAttempts {
					s.answer(it.w, it.req, &schemas.Result{Status: schemas.StatusFailed, ErrorCode: CodeModelUnavailable,
						ErrorMessage: err.Error(), Attempt: it.attempt, BatchSize: int32(len(b))}, took)
					continue
				}
				keep = append(keep, it)
			}
			b = keep
			if len(b) > 0 && !sleep(ctx, backoff(b[0].failures)) {
				return
			}
		default:
			s.m.Calls.WithLabelValues(name, "ok").Inc()
			sv.br.success(probe)
			for i, it := range b {
				s.answer(it.w, it.req, &schemas.Result{Status: schemas.StatusSucceeded, Outputs: outs[i],
					Attempt: it.attempt, BatchSize: int32(len(b)),
					Timings: schemas.Timings{
						BatchWaitMs: ms(start.Sub(it.enqueued)),
						InferenceMs: ms(took),
					}}, took)
			}
			return
		}
	}
}

// expire answers the items whose deadline has passed and returns the rest.
func (s *Stage) expire(b []*item) []*item {
	now := time.Now()
	keep := b[:0]
	for _, it := range b {
		if !it.deadline.IsZero() && now.After(it.deadline) {
			reason := "deadline_passed"
			if it.byObjective {
				reason = "objective_passed"
			}
			s.answer(it.w, it.req, &schemas.Result{Status: schemas.StatusExpired, Reason: reason,
				Attempt: it.attempt}, 0)
			continue
		}
		keep = append(keep, it)
	}
	return keep
}

// answer finishes a work with its outcome, keyed by request id so that emit
// sees every answer for one request id on one partition.
func (s *Stage) answer(w *pipeline.Work, req *schemas.Request, res *schemas.Result, _ time.Duration) {
	now := time.Now()
	res.RequestID = req.RequestID
	res.IdempotencyKey = req.IdempotencyKey
	res.Tenant = req.Tenant
	res.Model = req.Model
	res.ModelVersion = req.ModelVersion
	res.ReplyTopic = req.ReplyTopic
	res.CreatedAtMs = req.CreatedAtMs
	res.CompletedAtMs = now.UnixMilli()
	if req.CreatedAtMs > 0 {
		res.Timings.QueuedMs = ms(w.Received.Sub(time.UnixMilli(req.CreatedAtMs)))
		res.Timings.EndToEndMs = ms(now.Sub(time.UnixMilli(req.CreatedAtMs)))
	}
	s.m.Outcomes.WithLabelValues(req.Model, string(res.Status)).Inc()
	v, err := s.codec.EncodeResult(s.topics.Outcomes, res)
	if err != nil {
		s.r.Fail(fmt.Errorf("infer: encode outcome: %w", err))
		return
	}
	w.Finish(pipeline.Output{Records: []*kgo.Record{{
		Topic: s.topics.Outcomes, Key: []byte(req.RequestID), Value: v, Headers: w.Record.Headers,
	}}})
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// backoff is exponential with full jitter, from 10ms up to 1s.
func backoff(attempt int) time.Duration {
	d := 10 * time.Millisecond << min(attempt, 7)
	d = min(d, time.Second)
	return time.Duration(rand.Int64N(int64(d)) + 1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
