package schemas

import (
	"context"
	"time"
)

// RequestHead is a request without its tensors and parameters: what a stage
// that routes requests (dedup) needs to decide about one.
type RequestHead struct {
	RequestID      string
	IdempotencyKey string
	Tenant         string
	Model          string
	ModelVersion   string
	ReplyTopic     string
	Priority       int32
	DeadlineMs     int64
	CreatedAtMs    int64
	// Invalid is what Request.Validate reports for the whole request (its
	// tensors and parameters included); nil when the request is valid.
	Invalid error
}

// Key is the request's idempotency key: its IdempotencyKey, or its
// RequestID when none is given.
func (h *RequestHead) Key() string {
	if h.IdempotencyKey != "" {
		return h.IdempotencyKey
	}
	return h.RequestID
}

// Head is the request's head (Invalid left nil: the request was decoded
// whole, its validity is the caller's to ask).
func (r *Request) Head() RequestHead {
	return RequestHead{RequestID: r.RequestID, IdempotencyKey: r.IdempotencyKey, Tenant: r.Tenant, Model: r.Model,
		ModelVersion: r.ModelVersion, ReplyTopic: r.ReplyTopic, Priority: r.Priority, DeadlineMs: r.DeadlineMs,
		CreatedAtMs: r.CreatedAtMs}
}

// Answer fills the fields of res that name the request it answers (ids,
// tenant, model, reply topic, created_at), its completion time and its
// end-to-end time.
func (h *RequestHead) Answer(res *Result, now time.Time) {
	res.RequestID = h.RequestID
	res.IdempotencyKey = h.IdempotencyKey
	res.Tenant = h.Tenant
	res.Model = h.Model
	res.ModelVersion = h.ModelVersion
	res.ReplyTopic = h.ReplyTopic
	res.CreatedAtMs = h.CreatedAtMs
	res.CompletedAtMs = now.UnixMilli()
	if h.CreatedAtMs > 0 {
		res.Timings.EndToEndMs = float64(now.Sub(time.UnixMilli(h.CreatedAtMs))) / float64(time.Millisecond)
	}
}

// DecodeRequestHead decodes the head of a request and checks the whole of
// it: it fails exactly when DecodeRequest would (errors about the message
// match ErrMalformed), and Invalid says what Validate would.
//
// It reads the tensors and parameters without decoding them: it checks
// every value DecodeRequest would convert and validates the tensors from
// views into b, so that it allocates the head and its strings, not the data.
func (c *Codec) DecodeRequestHead(ctx context.Context, b []byte) (*RequestHead, error) {
	return decode(c, ctx, b, KindRequest, readRequestHead)
}

func readRequestHead(r reader, root *node) (*RequestHead, int, error) {
	var q Request
	var check requestCheck
	r.request(root, &q, &check)
	if err := r.end(KindRequest, requiredRequest(&q)); err != nil {
		return nil, r.off, err
	}
	return &RequestHead{
		RequestID: q.RequestID, IdempotencyKey: q.IdempotencyKey, Tenant: q.Tenant, Model: q.Model,
		ModelVersion: q.ModelVersion, ReplyTopic: q.ReplyTopic, Priority: q.Priority,
		DeadlineMs: q.DeadlineMs, CreatedAtMs: q.CreatedAtMs, Invalid: check.invalid(&q),
	}, r.off, nil
}

// ResultHead is a result without its outputs: what a stage that delivers
// results (emit) needs.
type ResultHead struct {
	RequestID    string
	Status       Status
	ErrorCode    string
	ErrorMessage string
	ReplyTopic   string
	CreatedAtMs  int64
}

// DecodeResultHead decodes the head of a result; it fails exactly when
// DecodeResult would. It checks the outputs without decoding them.
func (c *Codec) DecodeResultHead(ctx context.Context, b []byte) (*ResultHead, error) {
	return decode(c, ctx, b, KindResult, readResultHead)
}

func readResultHead(r reader, root *node) (*ResultHead, int, error) {
	var q Result
	r.result(root, &q, false)
	if err := r.end(KindResult, requiredResult(&q)); err != nil {
		return nil, r.off, err
	}
	return &ResultHead{RequestID: q.RequestID, Status: q.Status, ErrorCode: q.ErrorCode,
		ErrorMessage: q.ErrorMessage, ReplyTopic: q.ReplyTopic, CreatedAtMs: q.CreatedAtMs}, r.off, nil
}

// TopicSchemaID is the id of the schema the codec encodes with for topic:
// a message whose header carries it can be forwarded to topic byte for byte.
func (c *Codec) TopicSchemaID(topic string) (int, bool) {
	bd, ok := c.topics[topic]
	return bd.id, ok
}
