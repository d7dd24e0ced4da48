// Package dedup is the first stage: it answers the requests that cannot be
// served (invalid: FAILED; past their deadline: EXPIRED; a second request
// with a known idempotency key: DUPLICATE; one that admission control
// predicts cannot be served in time: REJECTED) and forwards the rest to
// their priority lane's accepted topic exactly as the client wrote them. It
// reads only a request's head (the runtime checks the whole of it): tensors
// are never built here.
//
// Admission (admission.go, pressure.go) predicts, per model and lane, the
// wait of a request admitted now: the work ahead of it at the model's
// capacity, from the serving records infer publishes on the pressure topic
// and the requests this process admitted since, plus its own batch and the
// hops after it. In reject mode a request whose wait exceeds what is left
// of its deadline is answered REJECTED with retry_after_ms; in pause mode
// the input pauses instead. The dedup process that owns requests partition
// 0 publishes the verdict per model and lane, for clients.
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
	"math"
	"sync"
	"sync/atomic"
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
	// Lanes are the priority lanes, from the highest, each with its topic
	// (the graph's); an accepted request goes to its priority's lane.
	// Empty: every request to the accepted edge's default topic.
	Lanes []Lane
	// Admission is how each model is admitted; a model not listed (or
	// unknown) is admitted without a look.
	Admission []ModelAdmission
	// Pressure, when set, reads the serving records admission predicts
	// from, and publishes the admission records (from the process that
	// owns partition 0). Without it nothing is rejected or paused, except
	// on the Downstream watcher's measure.
	Pressure *PressureConfig
	// Downstream, when set, is the lag watcher's view of the stages after
	// dedup: the fallback when infer publishes nothing, and emit's backlog.
	Downstream Downstream
}

// decisions are the values of Decisions' label.
var decisions = []string{"accepted", "duplicate", "redelivery", "invalid", "expired", "rerouted", "too_large", "rejected"}

// Metrics are the stage's Prometheus metrics.
type Metrics struct {
	Decisions           *prometheus.CounterVec
	PartitionViolations prometheus.Counter
	Admission           *prometheus.CounterVec
	PredictedWait       *prometheus.GaugeVec
	AdmissionStatus     *prometheus.GaugeVec
	ShedFraction        *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	const ns = "asyncinfer"
	m := &Metrics{
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "dedup_decisions_total",
			Help: "What dedup did with each request: accepted, duplicate, redelivery, invalid, expired, rerouted, too_large, rejected."},
			[]string{"decision"}),
		PartitionViolations: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns,
			Name: "dedup_partitioning_violations_total",
			Help: "Requests not on the partition murmur2(idempotency key) picks: a producer ignores the partitioning rule (they are re-routed)."}),
	}
	for _, d := range decisions {
		m.Decisions.WithLabelValues(d)
	}
	m.Admission = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "admission_decisions_total",
		Help: "Admission's decisions per model and priority lane: admitted, rejected (answered REJECTED, reason overloaded)."},
		[]string{"model", "lane", "decision"})
	m.PredictedWait = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "admission_predicted_wait_seconds",
		Help: "Predicted time from now to the answer of a request admitted now, per model and lane: the work ahead at the model's capacity, its batch, the hops after (-1: no prediction; +Inf: the model's circuit is open)."},
		[]string{"model", "lane"})
	m.AdmissionStatus = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "admission_status",
		Help: "1 for a model and lane's admission status (OK, BUSY, SHEDDING, PAUSED, UNKNOWN), 0 for the others."},
		[]string{"model", "lane", "status"})
	m.ShedFraction = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "admission_shed_fraction",
		Help: "Fraction of a model and lane's requests clients are asked to refuse before producing (published on the pressure topic)."},
		[]string{"model", "lane"})
	if err := pipeline.Register(reg, m.Decisions, m.PartitionViolations, m.Admission, m.PredictedWait, m.AdmissionStatus, m.ShedFraction); err != nil {
		return nil, err
	}
	return m, nil
}

// Stage is the dedup stage.
type Stage struct {
	cfg    Config
	m      *Metrics
	r      *pipeline.Runner
	models map[string]*modelState // admission, by configured model name
	// decided holds Decisions' children, admitted and rejected
	// Admission's per model and lane: resolved once, not per request.
	decided            map[string]prometheus.Counter
	admitted, rejected map[string][]prometheus.Counter
	pub                *publisher // nil without Config.Pressure
	// share is the fraction of the requests partitions this process owns
	// (float64 bits); inferLag and emitLag the watcher's measures less
	// DownstreamNoise. Refreshed by Run.
	share, inferLag, emitLag atomic.Int64

	mu        sync.Mutex
	misplaced int       // since the last warning
	lastWarn  time.Time // of the misplaced-request warning
	paused    bool      // PauseBackpressure in force
}

// New returns the stage (m nil: unregistered metrics).
func New(cfg Config, m *Metrics) (*Stage, error) {
	if m == nil {
		m, _ = NewMetrics(nil)
	}
	if cfg.MisplacedWarnEvery <= 0 {
		cfg.MisplacedWarnEvery = time.Minute
	}
	if len(cfg.Lanes) > 0 {
		ls := make([]topics.Lane, len(cfg.Lanes))
		for i, l := range cfg.Lanes {
			ls[i] = l.Lane
		}
		if err := topics.ValidateLanes(ls); err != nil {
			return nil, fmt.Errorf("dedup: %w", err)
		}
	}
	s := &Stage{cfg: cfg, m: m, models: map[string]*modelState{}, decided: map[string]prometheus.Counter{},
		admitted: map[string][]prometheus.Counter{}, rejected: map[string][]prometheus.Counter{}}
	for _, d := range decisions {
		s.decided[d] = m.Decisions.WithLabelValues(d)
	}
	s.share.Store(int64(math.Float64bits(1)))
	lanes := max(1, len(cfg.Lanes))
	for _, ma := range cfg.Admission {
		if ma.Mode == "" {
			ma.Mode = AdmissionOff
		}
		switch ma.Mode {
		case AdmissionOff, AdmissionReject, AdmissionPause:
		default:
			return nil, fmt.Errorf("dedup: model %s: admission %q: want %s, %s or %s", ma.Name, ma.Mode, AdmissionReject, AdmissionPause, AdmissionOff)
		}
		if _, dup := s.models[ma.Name]; dup || ma.Name == "" {
			return nil, fmt.Errorf("dedup: admission of model %q given twice or without a name", ma.Name)
		}
		if ma.PauseAbove <= 0 {
			ma.PauseAbove = ma.Objective
			if ma.PauseAbove <= 0 {
				ma.PauseAbove = time.Second
			}
		}
		if ma.Mode == AdmissionOff {
			continue
		}
		s.models[ma.Name] = &modelState{cfg: ma, ahead: make([]float64, lanes), lanes: make([]laneState, lanes)}
		for l := range lanes {
			lane := s.laneName(l)
			s.admitted[ma.Name] = append(s.admitted[ma.Name], m.Admission.WithLabelValues(ma.Name, lane, "admitted"))
			s.rejected[ma.Name] = append(s.rejected[ma.Name], m.Admission.WithLabelValues(ma.Name, lane, "rejected"))
			m.PredictedWait.WithLabelValues(ma.Name, lane).Set(-1)
			m.ShedFraction.WithLabelValues(ma.Name, lane)
		}
	}
	if cfg.Pressure != nil && len(s.models) > 0 {
		p, err := newPublisher(*cfg.Pressure, s)
		if err != nil {
			return nil, err
		}
		s.pub = p
	}
	return s, nil
}

// Bind keeps the runner: admission pauses its input and asks which
// partitions it owns.
func (s *Stage) Bind(r *pipeline.Runner) { s.r = r }

// laneOf is the lane index of a priority.
func (s *Stage) laneOf(priority int32) int {
	if len(s.cfg.Lanes) == 0 {
		return 0
	}
	for i, l := range s.cfg.Lanes {
		if priority >= l.MinPriority {
			return i
		}
	}
	return len(s.cfg.Lanes) - 1
}

func (s *Stage) laneName(l int) string {
	if l < len(s.cfg.Lanes) {
		return s.cfg.Lanes[l].Name
	}
	return "normal"
}

func (s *Stage) laneTopic(l int) string {
	if l < len(s.cfg.Lanes) {
		return s.cfg.Lanes[l].Topic
	}
	return "" // the edge's default
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
				s.decided["rerouted"].Inc()
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
	if e, ok := c.Get(key); ok && (e.Status != schemas.StatusRejected || e.RequestID == pipeline.StateRef(h.RequestID)) {
		// A key whose request was REJECTED is free again: the client's
		// retry (a new request id with the same key, after retry_after)
		// is decided afresh. The rejected request id itself is answered.
		if e.RequestID == pipeline.StateRef(h.RequestID) {
			// Its outputs exist (write order): a re-delivery after a crash.
			s.decided["redelivery"].Inc()
			finish(c)
			return
		}
		s.decided["duplicate"].Inc()
		// The original's request id as the state keeps it: its SHA-256
		// when it is longer than pipeline.MaxStateRef.
		s.answer(c, h, headers, &schemas.Result{Status: schemas.StatusDuplicate, Reason: "idempotency_key_seen",
			OriginalRequestID: e.RequestID, OriginalStatus: e.Status})
		finish(c)
		return
	}
	switch {
	case h.Invalid != nil:
		s.decided["invalid"].Inc()
		msg := pipeline.Cut(h.Invalid.Error(), maxMessage)
		s.answer(c, h, headers, &schemas.Result{Status: schemas.StatusFailed, ErrorCode: CodeInvalidRequest, ErrorMessage: msg})
		if s.cfg.CopyFailedToDLQ {
			c.DeadLetterCopy(h.RequestID, "failed:"+CodeInvalidRequest, h.Invalid)
		}
		c.Remember(key, h.RequestID, schemas.StatusFailed)
	case h.DeadlineMs > 0 && time.Now().UnixMilli() > h.DeadlineMs:
		s.decided["expired"].Inc()
		s.answer(c, h, headers, &schemas.Result{Status: schemas.StatusExpired, Reason: "deadline_passed"})
		c.Remember(key, h.RequestID, schemas.StatusExpired)
	default:
		lane := s.laneOf(h.Priority)
		if ms := s.models[h.Model]; ms != nil {
			v := ms.decide(h, lane, s.lane(lane), time.Now(), s.shareNow(), time.Duration(s.inferLag.Load()), time.Duration(s.emitLag.Load()))
			if v.expired != "" {
				s.decided["expired"].Inc()
				res := &schemas.Result{Status: schemas.StatusExpired, Reason: v.expired}
				if v.expired == ReasonDeadlineUnreachable {
					res.ErrorMessage = lateMessage(h.Model, s.laneName(lane), v)
				}
				s.answer(c, h, headers, res)
				c.Remember(key, h.RequestID, schemas.StatusExpired)
				break
			}
			if !v.admit {
				s.decided["rejected"].Inc()
				s.rejected[h.Model][lane].Inc()
				s.answer(c, h, headers, &schemas.Result{Status: schemas.StatusRejected, Reason: ReasonOverloaded,
					RetryAfterMs: max(1, v.retryAfter.Milliseconds()), ErrorMessage: overloadMessage(h.Model, s.laneName(lane), v)})
				c.Remember(key, h.RequestID, schemas.StatusRejected)
				break
			}
			s.admitted[h.Model][lane].Inc()
			if ms.cfg.Mode == AdmissionPause {
				s.checkPause(ms, time.Now())
			}
		}
		// Forward the client's bytes untouched: its schema id and any
		// fields this version does not know travel on.
		k := rec.Key // keyed by the idempotency key, as clients are asked to
		if string(k) != key {
			k = []byte(key)
		}
		err := c.EmitBytesTo(topics.EdgeAccepted, s.laneTopic(lane), k, rec.Value, headers)
		switch {
		case err == nil:
			s.decided["accepted"].Inc()
			c.Remember(key, h.RequestID, "")
		case errors.Is(err, pipeline.ErrTooLarge):
			s.decided["too_large"].Inc()
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
