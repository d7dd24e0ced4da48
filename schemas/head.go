package schemas

import "context"

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

// DecodeRequestHead decodes the head of a request and checks the whole of
// it: it fails exactly when DecodeRequest would (errors about the message
// match ErrMalformed), and Invalid says what Validate would.
func (c *Codec) DecodeRequestHead(ctx context.Context, b []byte) (*RequestHead, error) {
	r, err := c.DecodeRequest(ctx, b)
	if err != nil {
		return nil, err
	}
	return &RequestHead{
		RequestID: r.RequestID, IdempotencyKey: r.IdempotencyKey, Tenant: r.Tenant, Model: r.Model,
		ModelVersion: r.ModelVersion, ReplyTopic: r.ReplyTopic, Priority: r.Priority,
		DeadlineMs: r.DeadlineMs, CreatedAtMs: r.CreatedAtMs, Invalid: r.Validate(),
	}, nil
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
// DecodeResult would.
func (c *Codec) DecodeResultHead(ctx context.Context, b []byte) (*ResultHead, error) {
	r, err := c.DecodeResult(ctx, b)
	if err != nil {
		return nil, err
	}
	return &ResultHead{RequestID: r.RequestID, Status: r.Status, ErrorCode: r.ErrorCode,
		ErrorMessage: r.ErrorMessage, ReplyTopic: r.ReplyTopic, CreatedAtMs: r.CreatedAtMs}, nil
}

// TopicSchemaID is the id of the schema the codec encodes with for topic:
// a message whose header carries it can be forwarded to topic byte for byte.
func (c *Codec) TopicSchemaID(topic string) (int, bool) {
	bd, ok := c.topics[topic]
	return bd.id, ok
}
