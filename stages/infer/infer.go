// Package infer is the batch ▸ infer stage: it reads accepted requests,
// queues them per model in bounded in-memory queues, and a pool of workers
// per model takes batches off the queue and calls the model backend, with
// retries, a circuit breaker, and splitting of failing batches, so one
// poison input fails alone. Every request leaves with one outcome.
//
// The batcher and the workers live in one process so that the batcher sees at
// once when a worker is free. What a freed worker takes is its model's
// policy's decision (policy.go): with a latency objective it is adaptive
// (batches sized from the model's fitted cost and each request's deadline,
// requests that cannot make it dropped early and answered EXPIRED); else
// greedy (what is queued, up to the model's limits), optionally waiting up
// to max_wait for a fuller batch.
//
// Work that goes stale (its partition was revoked, its transaction aborted,
// the stage is stopping) leaves the queue without a model call, and a call
// whose every item went stale is cancelled: a model outage longer than the
// transaction timeout costs the model nothing once it is back.
package infer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/topics"
)

// Model is a model backend. Infer runs one batch and returns one list of
// output tensors per request, in order; package backend says what its
// errors mean (transient, too large, per item, or a bad input that the
// stage finds by splitting the batch). Infer is called concurrently by the
// model's workers, with a context that ends at the call's timeout or when
// every request of the batch went stale.
type Model interface {
	Infer(ctx context.Context, batch []*schemas.Request) ([][]schemas.Tensor, error)
}

// ModelConfig is how one model is served.
type ModelConfig struct {
	Name          string
	Backend       Model
	MaxBatchItems int           // items per call; default 64
	MaxBatchBytes int           // bytes of encoded requests per call; default 900 KiB
	MaxWait       time.Duration // window: longest wait for a fuller batch; 0: greedy
	// Batching is how a freed worker forms a batch (BatchingAuto: adaptive
	// with an Objective and no MaxWait, else window).
	Batching Batching
	// DownstreamLatency is the estimated time from the model's answer to a
	// result the client can read: producing the outcome, emit's hop, the
	// reply topic's produce and the client's fetch. The adaptive batcher
	// subtracts it from each request's deadline. Default 10ms.
	DownstreamLatency time.Duration
	Timeout           time.Duration // per call; default 30s
	Concurrency       int           // workers (parallel calls); default 1
	MaxAttempts       int           // consecutive transient failures before an item fails; default 5
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
	if m.MaxBatchItems <= 0 {
		m.MaxBatchItems = 64
	}
	if m.MaxBatchBytes <= 0 {
		m.MaxBatchBytes = 900 << 10
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
	if m.DownstreamLatency <= 0 {
		m.DownstreamLatency = DefaultDownstreamLatency
	}
	if m.Batching == BatchingAuto {
		m.Batching = BatchingWindow
		if m.Objective > 0 && m.MaxWait == 0 {
			m.Batching = BatchingAdaptive
		}
	}
}

// DefaultDownstreamLatency is the default ModelConfig.DownstreamLatency:
// two Kafka hops at linger 0 (p99 5–12 ms measured on the reference box).
const DefaultDownstreamLatency = 10 * time.Millisecond

// Error codes of FAILED outcomes from this stage.
const (
	CodeUnknownModel     = "UNKNOWN_MODEL"
	CodeInferenceFailed  = "INFERENCE_FAILED"
	CodeModelUnavailable = "MODEL_UNAVAILABLE"
	// CodeResultTooLarge: the model's outputs do not fit the pipeline's
	// topics (max.message.bytes); the answer says so instead.
	CodeResultTooLarge = "RESULT_TOO_LARGE"
)

// UnknownModelLabel is the metric label of every model nobody serves: the
// names come from clients, so they must not become label values.
const UnknownModelLabel = "_unknown"

// maxMessage bounds an error message in a FAILED result: a backend's text,
// or a model name a client sent.
const maxMessage = 1024

// Config is the infer stage's configuration.
type Config struct {
	Models []ModelConfig
	// QueueCap bounds each model's queue: the runner's in-flight bound, so
	// that a queue can never be full (the runner counts stale work until the
	// stage lets go of it).
	QueueCap int
	// CopyFailedToDLQ also writes a dead letter (marked answered) of every
	// request answered FAILED, for operators.
	CopyFailedToDLQ bool
	// Lanes are the priority lanes the stage reads, from the highest, each
	// with its topic (the graph's); empty: one lane. A higher lane's
	// requests are always taken first, and lower lanes are paused while a
	// higher one keeps a model saturated (laneControl).
	Lanes []topics.Lane
	// Pressure, when set, publishes each model's serving state to the
	// pressure topic, for dedup's admission.
	Pressure *PressureConfig
}

// Stage is the batch ▸ infer stage.
type Stage struct {
	cfg        Config
	models     map[string]*served
	m          *Metrics
	r          *pipeline.Runner
	lanes      []topics.Lane
	laneTopics []string
	lc         *laneControl
	// laneLoads's buffers (used under the lane control's lock).
	loadsBuf  []laneLoad
	countsBuf []int
}

type served struct {
	cfg   ModelConfig
	q     *queue
	ex    *executor
	costs *costs
	limit *batchLimit
	busy  *busyMeter
	// running is the items in calls now; arrivals counts requests per lane
	// (the share of a lane's Kafka backlog the model is charged with).
	running  atomic.Int64
	arrivals []atomic.Int64
	// queueLen and outcomes are metric children resolved once, not per
	// request; an outcome's Inc is bound once too (a method value made per
	// request was one allocation of each).
	queueLen prometheus.Gauge
	outcomes map[schemas.Status]func()
	flushes  [numFlushReasons]prometheus.Counter
	// target is the model's target batch (policy.target), refreshed every
	// second by gauges: laneControl's measure of a saturated model.
	target atomic.Int64
}

// Metrics are the stage's Prometheus metrics.
type Metrics struct {
	BatchSize   *prometheus.HistogramVec
	Calls       *prometheus.CounterVec
	CallSeconds *prometheus.HistogramVec
	Outcomes    *prometheus.CounterVec
	QueueLen    *prometheus.GaugeVec
	Breaker     *prometheus.GaugeVec
	Stale       *prometheus.CounterVec
	Flushes     *prometheus.CounterVec
	CostFixed   *prometheus.GaugeVec
	CostPerItem *prometheus.GaugeVec
	Busy        *prometheus.GaugeVec
	Oldest      *prometheus.GaugeVec
	EarlyDrops  *prometheus.CounterVec
	BatchLimit  *prometheus.GaugeVec
	Capacity    *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	const ns = "asyncinfer"
	m := &Metrics{
		BatchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "batch_size",
			Help: "Items per model call.", Buckets: prometheus.ExponentialBuckets(1, 2, 10)}, []string{"model"}),
		Calls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "model_calls_total",
			Help: "Model calls by result (ok, transient, permanent, too_large, partial, cancelled, deadline)."}, []string{"model", "result"}),
		CallSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "model_call_seconds",
			Help: "Duration of model calls.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"model"}),
		Outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "infer_outcomes_total",
			Help: "Outcomes of the infer stage by status; models nobody serves share the label " + UnknownModelLabel + "."}, []string{"model", "status"}),
		QueueLen: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "model_queue_length",
			Help: "Requests queued in front of a model's workers."}, []string{"model"}),
		Breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "circuit_open",
			Help: "1 while a model's circuit breaker is open or half-open."}, []string{"model"}),
		Stale: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "infer_stale_dropped_total",
			Help: "Queued or batched requests dropped without a model call because their work went stale (revoke, aborted transaction)."}, []string{"model"}),
		Flushes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "batch_flushes_total",
			Help: "Batches taken off a model's queue, by why they left then (full, worker_freed, wait_over, deadline)."}, []string{"model", "reason"}),
		CostFixed: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "model_cost_fixed_seconds",
			Help: "Fitted fixed cost a of a model call, t(b) = a + c*b."}, []string{"model", "version"}),
		CostPerItem: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "model_cost_per_item_seconds",
			Help: "Fitted cost c of each item of a model call, t(b) = a + c*b."}, []string{"model", "version"}),
		Busy: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "model_busy_ratio",
			Help: "Fraction of a model's workers' time spent in model calls over the last second."}, []string{"model"}),
		Oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "model_queue_oldest_seconds",
			Help: "How long the oldest request queued for a model has waited."}, []string{"model"}),
		EarlyDrops: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "infer_early_drops_total",
			Help: "Requests the adaptive batcher answered EXPIRED (deadline_unreachable) because no batch could answer them in time."}, []string{"model"}),
		BatchLimit: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "model_batch_limit",
			Help: "Most items per call a model takes now: max_batch_items, or less after the backend refused a batch as too large."}, []string{"model"}),
		Capacity: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "model_capacity_per_second",
			Help: "Requests per second this process serves of a model within its objective, from the fitted cost and the target batch (0: not measured yet, or the circuit is open); published on the pressure topic."}, []string{"model"}),
	}
	if err := pipeline.Register(reg, m.BatchSize, m.Calls, m.CallSeconds, m.Outcomes, m.QueueLen, m.Breaker, m.Stale,
		m.Flushes, m.CostFixed, m.CostPerItem, m.Busy, m.Oldest, m.EarlyDrops, m.BatchLimit, m.Capacity); err != nil {
		return nil, err
	}
	return m, nil
}

// New returns the stage (m nil: unregistered metrics).
func New(cfg Config, m *Metrics) (*Stage, error) {
	if len(cfg.Models) == 0 {
		return nil, errors.New("infer: no models")
	}
	if cfg.QueueCap <= 0 {
		cfg.QueueCap = pipeline.DefaultMaxInFlight
	}
	if m == nil {
		m, _ = NewMetrics(nil)
	}
	s := &Stage{cfg: cfg, models: make(map[string]*served), m: m, lanes: cfg.Lanes}
	if len(s.lanes) == 0 {
		s.lanes = []topics.Lane{{Name: "normal", MinPriority: math.MinInt32}}
	}
	for _, l := range s.lanes {
		s.laneTopics = append(s.laneTopics, l.Topic)
	}
	if err := topics.ValidateLanes(s.lanes); err != nil {
		return nil, fmt.Errorf("infer: %w", err)
	}
	for _, mc := range cfg.Models {
		if mc.Name == "" || mc.Backend == nil {
			return nil, fmt.Errorf("infer: model %q: name and backend are required", mc.Name)
		}
		if mc.Name == UnknownModelLabel {
			return nil, fmt.Errorf("infer: model name %q is reserved", mc.Name)
		}
		if _, dup := s.models[mc.Name]; dup {
			return nil, fmt.Errorf("infer: model %q configured twice", mc.Name)
		}
		mc.setDefaults()
		if mc.Batching != BatchingAdaptive && mc.Batching != BatchingWindow {
			return nil, fmt.Errorf("infer: model %q: batching %q: want %s or %s", mc.Name, mc.Batching, BatchingAdaptive, BatchingWindow)
		}
		if mc.Batching == BatchingAdaptive && mc.Objective <= mc.DownstreamLatency {
			return nil, fmt.Errorf("infer: model %q: adaptive batching needs a latency objective above the downstream latency %v", mc.Name, mc.DownstreamLatency)
		}
		name := mc.Name
		sv := &served{cfg: mc, costs: newCosts(), limit: newBatchLimit(mc.MaxBatchItems), busy: &busyMeter{},
			arrivals: make([]atomic.Int64, len(s.lanes))}
		drop := func(it *item) {
			m.Stale.WithLabelValues(name).Inc()
			s.left(it)
			it.c.Drop()
		}
		sv.ex = &executor{cfg: mc, m: m, answer: s.answer, drop: drop, costs: sv.costs, limit: sv.limit, busy: sv.busy}
		sv.q = newLaneQueue(len(s.lanes), cfg.QueueCap, newPolicy(mc, sv.limit, sv.costs), drop, sv.ex.unreachable)
		sv.target.Store(int64(mc.MaxBatchItems))
		s.models[mc.Name] = sv
		sv.queueLen = m.QueueLen.WithLabelValues(name)
		sv.outcomes = map[schemas.Status]func(){}
		for _, st := range []schemas.Status{schemas.StatusSucceeded, schemas.StatusFailed, schemas.StatusExpired} {
			sv.outcomes[st] = m.Outcomes.WithLabelValues(name, string(st)).Inc
		}
		for i, r := range flushReasons {
			sv.flushes[i] = m.Flushes.WithLabelValues(name, r)
		}
		m.EarlyDrops.WithLabelValues(name)
		m.BatchLimit.WithLabelValues(name).Set(float64(mc.MaxBatchItems))
	}
	m.Outcomes.WithLabelValues(UnknownModelLabel, string(schemas.StatusFailed))
	return s, nil
}

// Decoder is the stage's decoder: the whole request, tensors included.
func Decoder(c *schemas.Codec) pipeline.Decoder[*schemas.Request] {
	return func(ctx context.Context, b []byte) (*schemas.Request, error) { return c.DecodeRequest(ctx, b) }
}

// Bind wires each model's breaker, and the lanes, to the runner's pause
// registry and logger.
func (s *Stage) Bind(r *pipeline.Runner) {
	s.r = r
	s.lc = newLaneControl(len(s.lanes), s.cfg.QueueCap, func(l int, pause bool) {
		if pause {
			r.Pauses().PauseTopic(pipeline.PauseLane, s.laneTopics[l])
		} else {
			r.Pauses().ResumeTopic(pipeline.PauseLane, s.laneTopics[l])
		}
	}, s.laneLoads)
	for name, sv := range s.models {
		reason := pipeline.PauseBreaker + ":" + name
		br := newBreaker(sv.cfg.BreakerThreshold, sv.cfg.BreakerCooldown,
			func() {
				s.m.Breaker.WithLabelValues(name).Set(1)
				r.Pauses().PauseAll(reason)
				r.Logger().Warn("circuit opened: the model fails; input paused, requests wait in Kafka", "model", name)
			},
			func() {
				s.m.Breaker.WithLabelValues(name).Set(0)
				r.Pauses().ResumeAll(reason)
				r.Logger().Info("circuit closed: the model answers again; input resumed", "model", name)
			})
		// Half-open, the input flows again so that a request can be the
		// probe; a failed probe pauses it again. A backend that can say
		// whether it is up (an OIP server's readiness) is asked instead,
		// and no input is read until it is.
		br.onHalfOpen = func() { r.Pauses().ResumeAll(reason) }
		br.onReopen = func() { r.Pauses().PauseAll(reason) }
		if rd, ok := sv.cfg.Backend.(interface{ Ready(context.Context) error }); ok {
			br.probe = rd.Ready
		}
		sv.ex.br = br
	}
}

// Run runs the workers until ctx is cancelled (after the runner's drain),
// and the publisher of the serving state when configured.
func (s *Stage) Run(ctx context.Context) error {
	var pub *serving
	if s.cfg.Pressure != nil {
		var err error
		if pub, err = s.newServing(); err != nil {
			return err
		}
	}
	done := make(chan struct{})
	n := 0
	for _, sv := range s.models {
		for i := 0; i < sv.cfg.Concurrency; i++ {
			n++
			go func() {
				defer func() { done <- struct{}{} }()
				for {
					b, why := sv.q.take(ctx)
					if b == nil {
						return
					}
					sv.running.Add(int64(len(b)))
					s.lc.update()
					sv.queueLen.Set(float64(sv.q.len()))
					sv.flushes[why].Inc()
					sv.ex.run(ctx, b)
					sv.running.Add(-int64(len(b)))
				}
			}()
		}
	}
	if pub != nil {
		n++
		go func() {
			defer func() { done <- struct{}{} }()
			pub.run(ctx)
		}()
	}
	n++
	go func() {
		defer func() { done <- struct{}{} }()
		s.gauges(ctx)
	}()
	for ; n > 0; n-- {
		<-done
	}
	return nil
}

// gauges sets, every second, the gauges that move without an event: how
// busy each model's workers were over the second, and how long its oldest
// queued request has waited.
func (s *Stage) gauges(ctx context.Context) {
	const every = time.Second
	t := time.NewTicker(every)
	defer t.Stop()
	last := time.Now()
	busy := map[string]time.Duration{}
	for name, sv := range s.models {
		busy[name] = sv.busy.busy(last)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		for name, sv := range s.models {
			b := sv.busy.busy(now)
			if span := now.Sub(last) * time.Duration(sv.cfg.Concurrency); span > 0 {
				s.m.Busy.WithLabelValues(name).Set(min(1, float64(b-busy[name])/float64(span)))
			}
			busy[name] = b
			s.m.Oldest.WithLabelValues(name).Set(sv.q.oldest(now).Seconds())
			target, _, _, _, _ := sv.q.target(sv.costs)
			sv.target.Store(int64(target))
		}
		last = now
	}
}

// Process queues the request for its model, or answers it at once.
func (s *Stage) Process(c *pipeline.Context, req *schemas.Request) {
	sv, ok := s.models[req.Model]
	if !ok {
		s.answer(&item{c: c, req: req}, &schemas.Result{Status: schemas.StatusFailed, ErrorCode: CodeUnknownModel,
			ErrorMessage: pipeline.Cut(fmt.Sprintf("no model %q is served", req.Model), maxMessage)})
		return
	}
	lane := s.laneOf(c.Record().Topic)
	now := time.Now()
	it := &item{c: c, done: c.Done(), req: req, size: len(c.Record().Value), enqueued: now, lane: lane, counted: true}
	if req.DeadlineMs > 0 {
		it.deadline = time.UnixMilli(req.DeadlineMs)
	}
	if obj := sv.cfg.Objective; obj > 0 && req.CreatedAtMs > 0 {
		if d := time.UnixMilli(req.CreatedAtMs).Add(obj); it.deadline.IsZero() || d.Before(it.deadline) {
			it.deadline, it.byObjective = d, true
		}
	}
	sv.arrivals[lane].Add(1)
	s.lc.handed(lane, now)
	if !sv.q.push(it) {
		s.left(it)
		// The queue holds up to the runner's in-flight bound, and the runner
		// counts every Context until the stage lets go of it, so this cannot
		// happen unless that sizing is broken. Rejecting would be wrong:
		// dedup has recorded the key, so a retry would be answered
		// DUPLICATE. Stop instead; the record is consumed again.
		c.Fail(fmt.Errorf("infer: the queue of model %s is full although it is sized to the in-flight bound (a bug)", req.Model))
		return
	}
	sv.queueLen.Set(float64(sv.q.len()))
	s.lc.update()
}

// left counts an item out of its lane's live requests (once).
func (s *Stage) left(it *item) {
	if it.counted {
		it.counted = false
		s.lc.done(it.lane)
	}
}

// laneLoads is, for lane l, each model's requests of the lanes above l
// queued for it, with its target batch. Called by the lane control only,
// under its lock: the result is valid until the next call (its buffers are
// reused, a call per request would otherwise allocate two slices).
func (s *Stage) laneLoads(l int) []laneLoad {
	out := s.loadsBuf[:0]
	for _, sv := range s.models {
		s.countsBuf = sv.q.lanes(s.countsBuf)
		higher := 0
		for _, n := range s.countsBuf[:l] {
			higher += n
		}
		out = append(out, laneLoad{higher: higher, target: int(sv.target.Load())})
	}
	s.loadsBuf = out
	return out
}

// answer finishes an item's work with its outcome, keyed by request id so
// that emit sees every answer for one request id on one partition.
func (s *Stage) answer(it *item, res *schemas.Result) {
	s.left(it)
	c, req := it.c, it.req
	head := req.Head()
	head.Answer(res, time.Now())
	if req.CreatedAtMs > 0 {
		res.Timings.QueuedMs = ms(c.Received().Sub(time.UnixMilli(req.CreatedAtMs)))
	}
	label := req.Model
	if _, ok := s.models[label]; !ok {
		label = UnknownModelLabel
	}
	err := c.Emit(topics.EdgeOutcomes, []byte(req.RequestID), res, c.Record().Headers)
	if errors.Is(err, pipeline.ErrTooLarge) {
		*res = schemas.Result{RequestID: res.RequestID, IdempotencyKey: res.IdempotencyKey, Tenant: res.Tenant,
			Model: res.Model, ModelVersion: res.ModelVersion, ReplyTopic: res.ReplyTopic, CreatedAtMs: res.CreatedAtMs,
			CompletedAtMs: res.CompletedAtMs, Attempt: res.Attempt, BatchSize: res.BatchSize, Timings: res.Timings,
			Status: schemas.StatusFailed, ErrorCode: CodeResultTooLarge, ErrorMessage: pipeline.Cut(err.Error(), maxMessage)}
		err = c.Emit(topics.EdgeOutcomes, []byte(req.RequestID), res, c.Record().Headers)
		if errors.Is(err, pipeline.ErrTooLarge) {
			c.DeadLetter(pipeline.ReasonTooLarge, fmt.Errorf("no answer to this request fits the topics: %w", err))
			return
		}
	}
	if err != nil {
		c.Fail(fmt.Errorf("infer: emit outcome: %w", err))
		return
	}
	if res.Status == schemas.StatusFailed && s.cfg.CopyFailedToDLQ {
		c.DeadLetterCopy(req.RequestID, "failed:"+res.ErrorCode, errors.New(res.ErrorMessage))
	}
	var inc func()
	if sv := s.models[req.Model]; sv != nil {
		inc = sv.outcomes[res.Status]
	}
	if inc == nil {
		inc = s.m.Outcomes.WithLabelValues(label, string(res.Status)).Inc
	}
	c.OnCommit(inc)
	c.Finish()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Metrics are the stage's metrics.
func (s *Stage) Metrics() *Metrics { return s.m }
