// Package emit is the last stage: it delivers every outcome to its reply
// topic (the results topic, or a client's own reply topic when the
// allow-list names it; never an internal topic), keyed by request id, with
// the status in a header. It keeps a window of the request ids it emitted,
// partition-local like dedup's (changelog emitted-ids, co-partitioned with
// outcomes), so an outcome repeated by a crash upstream is delivered once.
package emit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

// HeaderStatus carries the result's status on every emitted record.
const HeaderStatus = "asyncinfer-status"

// Config is the emit stage's configuration.
type Config struct {
	Topics pipeline.Topics
	// ReplyTopics are the topics, besides Topics.Results, a request may name
	// as its reply topic. A request naming another gets its answer on
	// Topics.Results.
	ReplyTopics []string
	Window      time.Duration // how long an emitted id is remembered; default 10m
	MaxKeys     int           // ids per partition; default 1,000,000
	// CopyFailedToDLQ also writes a dead letter (marked answered) for every
	// FAILED result, for operators.
	CopyFailedToDLQ bool
}

// Metrics are the stage's Prometheus metrics.
type Metrics struct {
	Emitted     *prometheus.CounterVec
	Repeats     prometheus.Counter
	ReplyDenied prometheus.Counter
	EndToEnd    *prometheus.HistogramVec
}

// NewMetrics creates and registers the stage's metrics (reg nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns = "asyncinfer"
	m := &Metrics{
		Emitted: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "results_emitted_total",
			Help: "Results delivered, by status."}, []string{"status"}),
		Repeats: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "emit_repeats_dropped_total",
			Help: "Outcomes for a request id already emitted, dropped."}),
		ReplyDenied: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "emit_reply_topic_denied_total",
			Help: "Results whose reply topic is not allowed; sent to the results topic instead."}),
		EndToEnd: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "end_to_end_seconds",
			Help:    "From a request's created_at to its result's emission.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}, []string{"status"}),
	}
	if reg != nil {
		reg.MustRegister(m.Emitted, m.Repeats, m.ReplyDenied, m.EndToEnd)
	}
	return m
}

// Stage is the emit stage.
type Stage struct {
	cfg     Config
	codec   *schemas.Codec
	allowed map[string]bool
	win     *pipeline.Window
	m       *Metrics
	r       *pipeline.Runner

	mu  sync.Mutex
	gen map[int32]int
}

// New returns the stage. The codec must have every reply topic bound.
func New(cfg Config, codec *schemas.Codec, m *Metrics) (*Stage, error) {
	if cfg.Topics.Results == "" {
		return nil, errors.New("emit: topics are not set")
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
	allowed := map[string]bool{cfg.Topics.Results: true}
	for _, t := range cfg.ReplyTopics {
		if cfg.Topics.Internal(t) {
			return nil, fmt.Errorf("emit: reply topic %q is an internal topic", t)
		}
		allowed[t] = true
	}
	return &Stage{cfg: cfg, codec: codec, allowed: allowed, win: pipeline.NewWindow(cfg.Window, cfg.MaxKeys), m: m, gen: map[int32]int{}}, nil
}

// Bind keeps the runner.
func (s *Stage) Bind(r *pipeline.Runner) { s.r = r }

// Window is the stage's state, for tests and status.
func (s *Stage) Window() *pipeline.Window { return s.win }

// Assigned pauses the partition and restores its window from the changelog.
func (s *Stage) Assigned(_ context.Context, r *pipeline.Runner, topic string, p int32) {
	s.mu.Lock()
	s.gen[p]++
	gen := s.gen[p]
	s.mu.Unlock()
	pipeline.RestoreWindow(r, s.win, s.codec, topic, s.cfg.Topics.EmittedIDs, p, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.gen[p] == gen
	})
}

// Revoked forgets the partition's window.
func (s *Stage) Revoked(_ string, p int32) {
	s.mu.Lock()
	s.gen[p]++
	s.mu.Unlock()
	s.win.Drop(p)
}

// Handle delivers one outcome.
func (s *Stage) Handle(ctx context.Context, w *pipeline.Work) {
	rec := w.Record
	var res *schemas.Result
	err := pipeline.Retry(ctx, func() (err error) {
		res, err = s.codec.DecodeResult(ctx, rec.Value)
		return err
	}, func(err error) bool { return !errors.Is(err, schemas.ErrMalformed) })
	if err != nil && !errors.Is(err, schemas.ErrMalformed) {
		// Not the bytes' fault (the registry is unreachable): stop rather
		// than dead-letter good input; the restart re-delivers it.
		s.r.Fail(fmt.Errorf("emit: decode: %w", err))
		return
	}
	if err != nil {
		dl, derr := w.DeadLetter("undecodable", err)
		if derr != nil {
			s.r.Fail(derr)
			return
		}
		w.Finish(pipeline.Output{Records: []*kgo.Record{dl}})
		return
	}
	p := rec.Partition
	if _, ok := s.win.Get(p, res.RequestID); ok {
		s.m.Repeats.Inc()
		w.Finish(pipeline.Output{})
		return
	}
	topic := s.cfg.Topics.Results
	if res.ReplyTopic != "" {
		if s.allowed[res.ReplyTopic] {
			topic = res.ReplyTopic
		} else {
			s.m.ReplyDenied.Inc()
		}
	}
	v, err := s.codec.EncodeResult(topic, res)
	if err != nil && topic != s.cfg.Topics.Results {
		// A reply topic the codec has no schema for: answer on the results
		// topic rather than stop the stage for one client's topic.
		s.r.Logger().Warn("cannot encode for reply topic; using the results topic", "topic", topic, "err", err)
		s.m.ReplyDenied.Inc()
		topic = s.cfg.Topics.Results
		v, err = s.codec.EncodeResult(topic, res)
	}
	if err != nil {
		s.r.Fail(fmt.Errorf("emit: encode result for %s: %w", topic, err))
		return
	}
	headers := append(append([]kgo.RecordHeader(nil), rec.Headers...), kgo.RecordHeader{Key: HeaderStatus, Value: []byte(res.Status)})
	out := []*kgo.Record{{Topic: topic, Key: []byte(res.RequestID), Value: v, Headers: headers}}
	if s.cfg.CopyFailedToDLQ && res.Status == schemas.StatusFailed {
		dl, err := s.r.DeadLetterCopy(rec, "failed:"+res.ErrorCode, errors.New(res.ErrorMessage))
		if err != nil {
			s.r.Fail(err)
			return
		}
		out = append(out, dl)
	}
	entry := s.win.Entry(res.RequestID, res.RequestID, res.Status)
	ev, err := s.codec.EncodeStateEntry(s.cfg.Topics.EmittedIDs, &entry)
	if err != nil {
		s.r.Fail(fmt.Errorf("emit: encode state entry: %w", err))
		return
	}
	s.win.Stage(p, entry)
	status := string(res.Status)
	created := res.CreatedAtMs
	w.Finish(pipeline.Output{
		Records:   out,
		Changelog: []*kgo.Record{{Topic: s.cfg.Topics.EmittedIDs, Partition: p, Key: []byte(entry.Key), Value: ev}},
		Apply: func() {
			s.win.Commit(p, entry)
			s.m.Emitted.WithLabelValues(status).Inc()
			if created > 0 {
				s.m.EndToEnd.WithLabelValues(status).Observe(time.Since(time.UnixMilli(created)).Seconds())
			}
		},
		Discard: func() { s.win.Discard(p, entry) },
	})
}
