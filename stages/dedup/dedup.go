// Package dedup is the first stage: it answers the requests that cannot be
// served (invalid: FAILED; past their deadline: EXPIRED; a second request
// with a known idempotency key: DUPLICATE) and forwards the rest to the
// accepted topic exactly as the client wrote them. It reads only a request's
// head (the runtime checks the whole of it): tensors are never built here.
//
// Its state, the idempotency keys seen in a time window, is partition-local
// (the runtime keeps it in the dedup-state changelog, co-partitioned with the
// requests). The write order is outputs acknowledged → changelog entry →
// offset commit, so a key found in the state with the same request id proves
// its outputs exist: that record is a re-delivery and is dropped silently.
//
// Deduplication needs every request with one key on one partition. A
// request on another partition than murmur2(key) picks (a client with
// another partitioner) is re-routed to its partition first: one extra hop,
// for misplaced requests only, so deduplication holds for every client.
package dedup

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
	"github.com/asyncinfer/asyncinfer/topics"
)

// Error codes of the requests dedup answers FAILED.
const (
	CodeInvalidRequest = "INVALID_REQUEST"
	// CodeRequestTooLarge: the request does not fit the pipeline's topics
	// with the headers the pipeline adds (it arrived compressed above the
	// limit, or at the limit itself).
	CodeRequestTooLarge = "REQUEST_TOO_LARGE"
)

// HeaderRerouted marks a request dedup moved to its key's partition.
const HeaderRerouted = "asyncinfer-rerouted"

// maxMessage bounds an error message built from a client's input.
const maxMessage = 1024

// Config is the dedup stage's configuration.
type Config struct {
	// CopyFailedToDLQ also writes a dead letter (marked answered) of every
	// request answered FAILED, for operators.
	CopyFailedToDLQ bool
	// MisplacedWarnEvery is how often a warning says that producers ignore
	// the partitioning rule (0: a minute).
	MisplacedWarnEvery time.Duration
}

// Metrics are the stage's Prometheus metrics.
type Metrics struct {
	Decisions           *prometheus.CounterVec
	PartitionViolations prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	const ns = "asyncinfer"
	m := &Metrics{
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "dedup_decisions_total",
			Help: "What dedup did with each request: accepted, duplicate, redelivery, invalid, expired, rerouted, too_large."},
			[]string{"decision"}),
		PartitionViolations: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns,
			Name: "dedup_partitioning_violations_total",
			Help: "Requests not on the partition murmur2(idempotency key) picks: a producer ignores the partitioning rule (they are re-routed)."}),
	}
	for _, d := range []string{"accepted", "duplicate", "redelivery", "invalid", "expired", "rerouted", "too_large"} {
		m.Decisions.WithLabelValues(d)
	}
	if err := pipeline.Register(reg, m.Decisions, m.PartitionViolations); err != nil {
		return nil, err
	}
	return m, nil
}

// Stage is the dedup stage.
type Stage struct {
	cfg Config
	m   *Metrics

	mu        sync.Mutex
	misplaced int       // since the last warning
	lastWarn  time.Time // of the misplaced-request warning
}

// New returns the stage (m nil: unregistered metrics).
func New(cfg Config, m *Metrics) *Stage {
	if m == nil {
		m, _ = NewMetrics(nil)
	}
	if cfg.MisplacedWarnEvery <= 0 {
		cfg.MisplacedWarnEvery = time.Minute
	}
	return &Stage{cfg: cfg, m: m}
}

// Decoder is the stage's decoder: a request's head, the whole request
// checked.
func Decoder(c *schemas.Codec) pipeline.Decoder[*schemas.RequestHead] {
	return func(ctx context.Context, b []byte) (*schemas.RequestHead, error) { return c.DecodeRequestHead(ctx, b) }
}

// Misplaced is how many requests arrived on another partition than their
// key's, for the status page.
func (s *Stage) Misplaced() int { return int(metricValue(s.m.PartitionViolations)) }

// Notices says, once a producer was seen to ignore the partitioning rule,
// how many requests arrived misplaced (each re-routed, one hop more).
func (s *Stage) Notices() []string {
	n := s.Misplaced()
	if n == 0 {
		return nil
	}
	return []string{fmt.Sprintf("%d requests arrived on another partition than murmur2(idempotency key) picks: a producer ignores the partitioning rule (use Kafka's default partitioner; librdkafka: partitioner=murmur2_random); each was re-routed, one extra hop", n)}
}

// Process decides about one request.
func (s *Stage) Process(c *pipeline.Context, h *schemas.RequestHead) {
	rec := c.Record()
	key := h.Key()
	_, rerouted := pipeline.Header(rec.Headers, HeaderRerouted)
	headers := rec.Headers
	if !rerouted {
		// Entry: what a client sent in our namespace is dropped, and the
		// request's coordinates travel on.
		headers = pipeline.SetHeader(pipeline.ClientHeaders(rec.Headers), pipeline.HeaderSource, pipeline.SourceOf(rec))
	}
	if n := c.InputPartitions(); n > 0 && pipeline.KeyPartition([]byte(key), n) != rec.Partition {
		s.misplacedRequest(c)
		if !rerouted {
			err := c.Emit(topics.EdgeReroute, []byte(key), rec.Value, pipeline.SetHeader(headers, HeaderRerouted, []byte{'1'}))
			if err == nil {
				s.m.Decisions.WithLabelValues("rerouted").Inc()
				c.Finish()
				return
			}
			if !errors.Is(err, pipeline.ErrTooLarge) {
				c.Fail(err)
				return
			}
			// Too large to move: decided here, where it is.
		}
		// Re-routed and still misplaced: the partition count changed in
		// between. Decide here rather than go round again.
	}
	if e, ok := c.Get(key); ok {
		if e.RequestID == pipeline.StateRef(h.RequestID) {
			// Its outputs exist (write order): a re-delivery after a crash.
			s.m.Decisions.WithLabelValues("redelivery").Inc()
			finish(c)
			return
		}
		s.m.Decisions.WithLabelValues("duplicate").Inc()
		// The original's request id as the state keeps it: its SHA-256
		// when it is longer than pipeline.MaxStateRef.
		s.answer(c, h, headers, &schemas.Result{Status: schemas.StatusDuplicate, Reason: "idempotency_key_seen",
			OriginalRequestID: e.RequestID, OriginalStatus: e.Status})
		finish(c)
		return
	}
	switch {
	case h.Invalid != nil:
		s.m.Decisions.WithLabelValues("invalid").Inc()
		msg := pipeline.Cut(h.Invalid.Error(), maxMessage)
		s.answer(c, h, headers, &schemas.Result{Status: schemas.StatusFailed, ErrorCode: CodeInvalidRequest, ErrorMessage: msg})
		if s.cfg.CopyFailedToDLQ {
			c.DeadLetterCopy(h.RequestID, "failed:"+CodeInvalidRequest, h.Invalid)
		}
		c.Remember(key, h.RequestID, schemas.StatusFailed)
	case h.DeadlineMs > 0 && time.Now().UnixMilli() > h.DeadlineMs:
		s.m.Decisions.WithLabelValues("expired").Inc()
		s.answer(c, h, headers, &schemas.Result{Status: schemas.StatusExpired, Reason: "deadline_passed"})
		c.Remember(key, h.RequestID, schemas.StatusExpired)
	default:
		// Forward the client's bytes untouched: its schema id and any
		// fields this version does not know travel on.
		err := c.Emit(topics.EdgeAccepted, []byte(key), rec.Value, headers)
		switch {
		case err == nil:
			s.m.Decisions.WithLabelValues("accepted").Inc()
			c.Remember(key, h.RequestID, "")
		case errors.Is(err, pipeline.ErrTooLarge):
			s.m.Decisions.WithLabelValues("too_large").Inc()
			s.answer(c, h, headers, &schemas.Result{Status: schemas.StatusFailed, ErrorCode: CodeRequestTooLarge,
				ErrorMessage: pipeline.Cut(err.Error(), maxMessage)})
			if s.cfg.CopyFailedToDLQ {
				c.DeadLetterCopy(h.RequestID, "failed:"+CodeRequestTooLarge, err)
			}
			c.Remember(key, h.RequestID, schemas.StatusFailed)
		default:
			c.Fail(err)
		}
	}
	finish(c)
}

// finish finishes c unless an emit failed and ended it already.
func finish(c *pipeline.Context) {
	if !c.Ended() {
		c.Finish()
	}
}

// answer emits a terminal outcome for the request.
func (s *Stage) answer(c *pipeline.Context, h *schemas.RequestHead, headers []kgo.RecordHeader, res *schemas.Result) {
	h.Answer(res, time.Now())
	err := c.Emit(topics.EdgeOutcomes, []byte(h.RequestID), res, headers)
	switch {
	case errors.Is(err, pipeline.ErrTooLarge):
		// Even the answer does not fit: the request id or idempotency key
		// is nearly the topic's limit. No answer can name it; the dead
		// letter does (cut), and the partition moves on.
		c.DeadLetter(pipeline.ReasonTooLarge, fmt.Errorf("no answer to this request fits the topics (its request id or idempotency key is too large): %w", err))
	case err != nil:
		// Our own encoding failed: a bug, not the request's fault. Stop
		// rather than lose the answer; the request is read again.
		c.Fail(err)
	}
}

// misplacedRequest counts a request on the wrong partition and says so
// once per interval: a producer ignores the partitioning rule, and each of
// its requests costs a hop.
func (s *Stage) misplacedRequest(c *pipeline.Context) {
	s.m.PartitionViolations.Inc()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.misplaced++
	if time.Since(s.lastWarn) < s.cfg.MisplacedWarnEvery {
		return
	}
	c.Logger().Warn("requests arrive on another partition than murmur2(idempotency key) picks: a producer ignores the partitioning rule; they are re-routed (one extra hop each). Use Kafka's default partitioner (librdkafka: partitioner=murmur2_random)",
		"misplaced", s.misplaced, "since", s.lastWarn.Format(time.RFC3339))
	s.misplaced, s.lastWarn = 0, time.Now()
}
