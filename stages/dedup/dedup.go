// Package dedup is the first stage: it decodes and validates requests,
// answers the ones that cannot be served (invalid: FAILED; past their
// deadline: EXPIRED; a second request with a known idempotency key:
// DUPLICATE), and forwards the rest to the accepted topic exactly as the
// client wrote them.
//
// Its state, the idempotency keys seen in a time window, is partition-local:
// the dedup-state changelog is written to the same partition number as the
// request, and a partition is restored from it, paused, on assignment. The
// write order is outputs acknowledged → changelog entry → offset commit, so a
// key found in the state with the same request id proves its outputs exist:
// that record is a re-delivery and is dropped silently.
package dedup

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

// Error code of a request that fails validation.
const CodeInvalidRequest = "INVALID_REQUEST"

// Config is the dedup stage's configuration.
type Config struct {
	Topics  pipeline.Topics
	Window  time.Duration // how long an idempotency key is remembered; default 10m
	MaxKeys int           // keys remembered per partition; default 1,000,000
}

// Metrics are the stage's Prometheus metrics.
type Metrics struct {
	Decisions           *prometheus.CounterVec
	PartitionViolations prometheus.Counter
	Keys                prometheus.Gauge
}

// NewMetrics creates and registers the stage's metrics (reg nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns = "asyncinfer"
	m := &Metrics{
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "dedup_decisions_total",
			Help: "What dedup did with each request: accepted, duplicate, redelivery, invalid, expired, undecodable."},
			[]string{"decision"}),
		PartitionViolations: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns,
			Name: "dedup_partitioning_violations_total",
			Help: "Requests not on the partition murmur2(idempotency key) picks: their duplicates may go unseen."}),
		Keys: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "dedup_window_keys",
			Help: "Idempotency keys held in the window."}),
	}
	if reg != nil {
		reg.MustRegister(m.Decisions, m.PartitionViolations, m.Keys)
	}
	return m
}

// Stage is the dedup stage.
type Stage struct {
	cfg   Config
	codec *schemas.Codec
	win   *pipeline.Window
	m     *Metrics
	r     *pipeline.Runner

	mu         sync.Mutex
	gen        map[int32]int // assignment generation, so a stale restore stops
	partitions int           // of the requests topic; 0 until known
}

// New returns the stage.
func New(cfg Config, codec *schemas.Codec, m *Metrics) (*Stage, error) {
	if cfg.Topics.Requests == "" {
		return nil, errors.New("dedup: topics are not set")
	}
	if cfg.Window <= 0 {
		cfg.Window = 10 * time.Minute
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 1_000_000
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	return &Stage{cfg: cfg, codec: codec, win: pipeline.NewWindow(cfg.Window, cfg.MaxKeys), m: m, gen: map[int32]int{}}, nil
}

// Window is the stage's state, for tests and status.
func (s *Stage) Window() *pipeline.Window { return s.win }

// Bind keeps the runner.
func (s *Stage) Bind(r *pipeline.Runner) { s.r = r }

// Run learns the requests topic's partition count, for the partitioning
// check, and returns when ctx is done.
func (s *Stage) Run(ctx context.Context) error {
	adm := kadm.NewClient(s.r.Client())
	for ctx.Err() == nil {
		td, err := adm.ListTopics(ctx, s.cfg.Topics.Requests)
		if err == nil {
			if t, ok := td[s.cfg.Topics.Requests]; ok && t.Err == nil {
				s.mu.Lock()
				s.partitions = len(t.Partitions)
				s.mu.Unlock()
				break
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	<-ctx.Done()
	return nil
}

// Assigned pauses the partition and restores its window from the changelog.
func (s *Stage) Assigned(_ context.Context, r *pipeline.Runner, topic string, p int32) {
	s.mu.Lock()
	s.gen[p]++
	gen := s.gen[p]
	s.mu.Unlock()
	pipeline.RestoreWindow(r, s.win, s.codec, topic, s.cfg.Topics.DedupState, p, func() bool { return s.current(p, gen) })
}

func (s *Stage) current(p int32, gen int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen[p] == gen
}

// Revoked forgets the partition's window: its next owner restores it.
func (s *Stage) Revoked(_ string, p int32) {
	s.mu.Lock()
	s.gen[p]++
	s.mu.Unlock()
	s.win.Drop(p)
}

// Handle decides about one request.
func (s *Stage) Handle(ctx context.Context, w *pipeline.Work) {
	rec := w.Record
	var req *schemas.Request
	err := pipeline.Retry(ctx, func() (err error) {
		req, err = s.codec.DecodeRequest(ctx, rec.Value)
		return err
	}, func(err error) bool { return !errors.Is(err, schemas.ErrMalformed) })
	if err != nil && !errors.Is(err, schemas.ErrMalformed) {
		// Not the bytes' fault (the registry is unreachable): stop rather
		// than dead-letter good input; the restart re-delivers it.
		s.r.Fail(fmt.Errorf("dedup: decode: %w", err))
		return
	}
	if err != nil {
		s.m.Decisions.WithLabelValues("undecodable").Inc()
		dl, derr := w.DeadLetter("undecodable", err)
		if derr != nil {
			s.r.Fail(derr)
			return
		}
		w.Finish(pipeline.Output{Records: []*kgo.Record{dl}})
		return
	}
	key := req.Key()
	s.mu.Lock()
	n := s.partitions
	s.mu.Unlock()
	if n > 0 && pipeline.KeyPartition([]byte(key), n) != rec.Partition {
		s.m.PartitionViolations.Inc()
	}
	if e, ok := s.win.Get(rec.Partition, key); ok {
		if e.RequestID == req.RequestID {
			// Its outputs exist (write order): a re-delivery after a crash.
			s.m.Decisions.WithLabelValues("redelivery").Inc()
			w.Finish(pipeline.Output{})
			return
		}
		s.m.Decisions.WithLabelValues("duplicate").Inc()
		s.answer(w, req, &schemas.Result{Status: schemas.StatusDuplicate, Reason: "idempotency_key_seen",
			OriginalRequestID: e.RequestID, OriginalStatus: e.Status}, nil)
		return
	}
	entry := s.win.Entry(key, req.RequestID, "")
	if err := req.Validate(); err != nil {
		s.m.Decisions.WithLabelValues("invalid").Inc()
		entry.Status = schemas.StatusFailed
		s.answer(w, req, &schemas.Result{Status: schemas.StatusFailed, ErrorCode: CodeInvalidRequest,
			ErrorMessage: err.Error()}, &entry)
		return
	}
	if req.DeadlineMs > 0 && time.Now().UnixMilli() > req.DeadlineMs {
		s.m.Decisions.WithLabelValues("expired").Inc()
		entry.Status = schemas.StatusExpired
		s.answer(w, req, &schemas.Result{Status: schemas.StatusExpired, Reason: "deadline_passed"}, &entry)
		return
	}
	s.m.Decisions.WithLabelValues("accepted").Inc()
	// Forward the client's bytes untouched: its schema id and any fields
	// this version does not know travel on.
	s.finish(w, &kgo.Record{Topic: s.cfg.Topics.Accepted, Key: []byte(key), Value: rec.Value, Headers: rec.Headers}, &entry)
}

// answer finishes w with a terminal outcome (and a state entry, if any).
func (s *Stage) answer(w *pipeline.Work, req *schemas.Request, res *schemas.Result, entry *schemas.StateEntry) {
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
		res.Timings.EndToEndMs = float64(now.Sub(time.UnixMilli(req.CreatedAtMs))) / float64(time.Millisecond)
	}
	v, err := s.codec.EncodeResult(s.cfg.Topics.Outcomes, res)
	if err != nil {
		s.r.Fail(fmt.Errorf("dedup: encode outcome: %w", err))
		return
	}
	s.finish(w, &kgo.Record{Topic: s.cfg.Topics.Outcomes, Key: []byte(req.RequestID), Value: v, Headers: w.Record.Headers}, entry)
}

// finish produces out, then the changelog entry, then commits the entry to
// the window (the write order of the package comment).
func (s *Stage) finish(w *pipeline.Work, out *kgo.Record, entry *schemas.StateEntry) {
	p := w.Record.Partition
	o := pipeline.Output{Records: []*kgo.Record{out}}
	if entry != nil {
		v, err := s.codec.EncodeStateEntry(s.cfg.Topics.DedupState, entry)
		if err != nil {
			s.r.Fail(fmt.Errorf("dedup: encode state entry: %w", err))
			return
		}
		e := *entry
		s.win.Stage(p, e)
		o.Changelog = []*kgo.Record{{Topic: s.cfg.Topics.DedupState, Partition: p, Key: []byte(e.Key), Value: v}}
		o.Apply = func() { s.win.Commit(p, e) }
		o.Discard = func() { s.win.Discard(p, e) }
	}
	w.Finish(o)
}
