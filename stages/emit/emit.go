// Package emit is the last stage: it delivers every outcome to its reply
// topic (the results topic, or a client's own reply topic when the
// allow-list names it; never an internal topic), keyed by request id, with
// the status in a header. It keeps a window of the request ids it emitted
// (the runtime keeps it in the emitted-ids changelog, co-partitioned with
// outcomes), so an outcome repeated by a crash upstream is delivered once.
//
// It reads only a result's head: when the outcome's schema is the one the
// reply topic is written with, its bytes are forwarded as they are.
package emit

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/topics"
)

// HeaderStatus carries the result's status on every emitted record.
const HeaderStatus = "asyncinfer-status"

// CodeResultTooLarge: the result does not fit the reply topic.
const CodeResultTooLarge = "RESULT_TOO_LARGE"

// Config is the emit stage's configuration.
type Config struct {
	Results string // the default reply topic
	// ReplyTopics are the topics, besides Results, a request may name as its
	// reply topic. A request naming another gets its answer on Results.
	ReplyTopics []string
}

// Metrics are the stage's Prometheus metrics.
type Metrics struct {
	Emitted     *prometheus.CounterVec
	Repeats     prometheus.Counter
	ReplyDenied prometheus.Counter
	Reencoded   prometheus.Counter
	EndToEnd    *prometheus.HistogramVec
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	const ns = "asyncinfer"
	m := &Metrics{
		Emitted: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "results_emitted_total",
			Help: "Results delivered, by status."}, []string{"status"}),
		Repeats: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "emit_repeats_dropped_total",
			Help: "Outcomes for a request id already emitted, dropped."}),
		ReplyDenied: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "emit_reply_topic_denied_total",
			Help: "Results whose reply topic is not allowed; sent to the results topic instead."}),
		Reencoded: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "emit_reencoded_total",
			Help: "Results decoded and encoded again because the outcome's schema is not the reply topic's (others are forwarded byte for byte)."}),
		EndToEnd: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "end_to_end_seconds",
			Help:    "From a request's created_at to its result's emission.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}, []string{"status"}),
	}
	for _, st := range statuses {
		m.Emitted.WithLabelValues(string(st))
	}
	if err := pipeline.Register(reg, m.Emitted, m.Repeats, m.ReplyDenied, m.Reencoded, m.EndToEnd); err != nil {
		return nil, err
	}
	return m, nil
}

// statuses are the statuses a result has.
var statuses = []schemas.Status{schemas.StatusSucceeded, schemas.StatusFailed, schemas.StatusExpired,
	schemas.StatusRejected, schemas.StatusDuplicate}

// Stage is the emit stage.
type Stage struct {
	cfg     Config
	codec   *schemas.Codec
	allowed map[string]bool
	m       *Metrics
	// counted holds the per-status children of Emitted and EndToEnd,
	// resolved once rather than per result.
	counted map[schemas.Status]statusMetrics
}

type statusMetrics struct {
	emitted  prometheus.Counter
	endToEnd prometheus.Observer
}

// statusMetrics returns the children for status.
func (s *Stage) statusMetrics(status schemas.Status) statusMetrics {
	if sm, ok := s.counted[status]; ok {
		return sm
	}
	return statusMetrics{s.m.Emitted.WithLabelValues(string(status)), s.m.EndToEnd.WithLabelValues(string(status))}
}

// New returns the stage. The codec must have every reply topic bound; m nil:
// unregistered metrics.
func New(cfg Config, codec *schemas.Codec, m *Metrics) *Stage {
	if m == nil {
		m, _ = NewMetrics(nil)
	}
	allowed := map[string]bool{cfg.Results: true}
	for _, t := range cfg.ReplyTopics {
		allowed[t] = true
	}
	counted := make(map[schemas.Status]statusMetrics, len(statuses))
	for _, st := range statuses {
		counted[st] = statusMetrics{m.Emitted.WithLabelValues(string(st)), m.EndToEnd.WithLabelValues(string(st))}
	}
	return &Stage{cfg: cfg, codec: codec, allowed: allowed, m: m, counted: counted}
}

// Decoder is the stage's decoder: a result's head.
func Decoder(c *schemas.Codec) pipeline.Decoder[*schemas.ResultHead] {
	return func(ctx context.Context, b []byte) (*schemas.ResultHead, error) { return c.DecodeResultHead(ctx, b) }
}

// Process delivers one outcome.
func (s *Stage) Process(c *pipeline.Context, h *schemas.ResultHead) {
	rec := c.Record()
	if _, ok := c.Get(h.RequestID); ok {
		s.m.Repeats.Inc()
		c.Finish()
		return
	}
	topic := s.cfg.Results
	if h.ReplyTopic != "" {
		if s.allowed[h.ReplyTopic] {
			topic = h.ReplyTopic
		} else {
			s.m.ReplyDenied.Inc()
		}
	}
	// The status header is ours: whatever else claims it is replaced.
	headers := pipeline.SetHeader(rec.Headers, HeaderStatus, statusBytes(h.Status))
	// Outcomes are keyed by request id already (every stage keys its
	// answers so): the key travels on as it is.
	key := rec.Key
	if string(key) != h.RequestID {
		key = []byte(h.RequestID)
	}
	var err error
	if id, _ := schemas.SchemaID(rec.Value); s.sameSchema(topic, id) {
		err = c.EmitBytesTo(topics.EdgeResults, topic, key, rec.Value, headers)
	} else {
		// Written with another schema than the reply topic's: decode and
		// encode for the topic.
		s.m.Reencoded.Inc()
		res, derr := s.codec.DecodeResult(context.Background(), rec.Value)
		if derr != nil {
			c.DeadLetter(pipeline.ReasonUndecodable, derr)
			return
		}
		err = c.EmitTo(topics.EdgeResults, topic, key, res, headers)
	}
	if errors.Is(err, pipeline.ErrTooLarge) {
		// Infer keeps room for this stage's header, so only a foreign
		// writer gets here: the client still gets an answer, FAILED.
		h = &schemas.ResultHead{RequestID: h.RequestID, Status: schemas.StatusFailed, ErrorCode: CodeResultTooLarge,
			ErrorMessage: pipeline.Cut(err.Error(), 1024), ReplyTopic: h.ReplyTopic, CreatedAtMs: h.CreatedAtMs}
		headers = pipeline.SetHeader(rec.Headers, HeaderStatus, []byte(h.Status))
		err = c.EmitTo(topics.EdgeResults, topic, []byte(h.RequestID), &schemas.Result{RequestID: h.RequestID,
			Status: h.Status, ErrorCode: h.ErrorCode, ErrorMessage: h.ErrorMessage, ReplyTopic: h.ReplyTopic,
			CreatedAtMs: h.CreatedAtMs, CompletedAtMs: time.Now().UnixMilli()}, headers)
		if errors.Is(err, pipeline.ErrTooLarge) {
			c.DeadLetter(pipeline.ReasonTooLarge, err) // not even the request id fits
			return
		}
	}
	if err != nil {
		c.Fail(err)
		return
	}
	c.Remember(h.RequestID, h.RequestID, h.Status)
	sm, created := s.statusMetrics(h.Status), h.CreatedAtMs
	c.OnCommit(func() {
		sm.emitted.Inc()
		if created > 0 {
			sm.endToEnd.Observe(time.Since(time.UnixMilli(created)).Seconds())
		}
	})
	c.Finish()
}

// statusHeaders are the status header's values, made once.
var statusHeaders = map[schemas.Status][]byte{}

func init() {
	for _, st := range statuses {
		statusHeaders[st] = []byte(st)
	}
}

func statusBytes(st schemas.Status) []byte {
	if b, ok := statusHeaders[st]; ok {
		return b
	}
	return []byte(st)
}

func (s *Stage) sameSchema(topic string, id int) bool {
	want, ok := s.codec.TopicSchemaID(topic)
	return ok && id == want
}
