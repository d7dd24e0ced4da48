package schemas

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
)

// The reference decoder: goavro's native form, mapped into the Go types.
// The codec decoded this way until the direct decoder (decode.go) replaced
// it; the tests hold the direct decoder and the head decoders to it.
//
// Mapping goavro's native values into the Go types, by field name and by the
// writer's types: a field the writer lacks, or wrote as null, takes its zero
// value; a field we do not know is ignored; a value is accepted when Avro's
// promotion rules allow it (int to long to float to double, string and bytes
// either way), and int32 fields also take a long that fits. Empty arrays and
// maps become nil, so that decoding is stable under re-encoding. The first
// error is the first met in the Go type's field order (parameters by key).

// referenceDecode decodes b as the codec did before the direct decoder: the
// same checks of the message (body), then goavro and the mapping.
func referenceDecode[T any](ctx context.Context, c *Codec, b []byte, k Kind, mapTo func(*conv, rec) *T, check func(*T) error) (v *T, err error) {
	defer func() {
		if p := recover(); p != nil {
			v, err = nil, malformedf("schemas: decode %s: panic: %v", k, p)
		}
	}()
	w, body, err := c.body(ctx, b, k)
	if err != nil {
		return nil, fmt.Errorf("schemas: decode %s: %w", k, err)
	}
	native, rest, err := w.codec.NativeFromBinary(body)
	if err != nil {
		return nil, malformedf("schemas: decode %s: goavro refuses what scan accepted: %w", k, err)
	}
	if len(rest) != 0 {
		return nil, malformedf("schemas: decode %s: goavro left %d bytes that scan read", k, len(rest))
	}
	m, ok := native.(map[string]any)
	if !ok {
		return nil, malformedf("schemas: decode %s: goavro returned %T for a record", k, native)
	}
	var cv conv
	v = mapTo(&cv, rec{m: m, n: w.root})
	if cv.err == nil {
		cv.err = check(v)
	}
	if cv.err != nil {
		return nil, malformedf("schemas: decode %s: %w", k, cv.err)
	}
	return v, nil
}

func referenceRequest(ctx context.Context, c *Codec, b []byte) (*Request, error) {
	return referenceDecode(ctx, c, b, KindRequest, (*conv).request, requiredRequest)
}

func referenceResult(ctx context.Context, c *Codec, b []byte) (*Result, error) {
	return referenceDecode(ctx, c, b, KindResult, (*conv).result, requiredResult)
}

func referenceDeadLetter(ctx context.Context, c *Codec, b []byte) (*DeadLetter, error) {
	return referenceDecode(ctx, c, b, KindDeadLetter, (*conv).deadLetter, func(d *DeadLetter) error {
		return required("reason", d.Reason)
	})
}

func referenceStateEntry(ctx context.Context, c *Codec, b []byte) (*StateEntry, error) {
	return referenceDecode(ctx, c, b, KindStateEntry, (*conv).stateEntry, requiredStateEntry)
}

func referencePressure(ctx context.Context, c *Codec, b []byte) (*Pressure, error) {
	return referenceDecode(ctx, c, b, KindPressure, (*conv).pressure, requiredPressure)
}

// conv keeps the first error, so the mapping reads as a list of fields.
type conv struct{ err error }

// loc names where a value is, for errors: "inputs[1].shape[2]". The index is
// kept apart so that converting a million floats builds no strings.
type loc struct {
	path string
	idx  int // index in the array at path; -1: none
}

func (l loc) String() string {
	if l.idx < 0 {
		return l.path
	}
	return l.path + "[" + strconv.Itoa(l.idx) + "]"
}

func (c *conv) fail(l loc, format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("field %s: %s", l, fmt.Sprintf(format, args...))
	}
}

// val is a decoded value, where it is, and its writer type (nil when the
// writer has no such field).
type val struct {
	l loc
	v any
	n *node
}

func (c *conv) wrongType(x val, want string) {
	c.fail(x.l, "wrong type: writer has %s, want %s", x.n.typeName(), want)
}

func (c *conv) badValue(x val) {
	c.fail(x.l, "goavro returned %T for %s", x.v, x.n.typeName())
}

// rec is a decoded record with its writer type.
type rec struct {
	m    map[string]any
	n    *node
	path string
}

func (r rec) field(name string) val {
	p := name
	if r.path != "" {
		p = r.path + "." + name
	}
	return val{loc{p, -1}, r.m[name], r.n.byName[name]}
}

// unwrap resolves a union to the branch goavro took. Its result has a nil
// type for null, so every converter treats absent and null alike.
func (c *conv) unwrap(x val) val {
	for x.n != nil {
		switch {
		case x.n.kind == tNull:
			x.n = nil
		case x.n.kind != tUnion:
			return x
		case x.v == nil:
			x.n = nil
		default:
			m, ok := x.v.(map[string]any)
			if !ok || len(m) != 1 {
				c.badValue(x)
				x.n = nil
				break
			}
			for name, bv := range m {
				b := x.n.branch(name)
				if b == nil {
					c.fail(x.l, "goavro returned union branch %q the writer schema lacks", name)
				}
				x.v, x.n = bv, b
			}
		}
	}
	x.v = nil
	return x
}

func (c *conv) record(x val, name string) (rec, bool) {
	if x = c.unwrap(x); x.n == nil {
		return rec{}, false
	}
	if x.n.kind != tRecord {
		c.wrongType(x, "record "+name)
		return rec{}, false
	}
	m, ok := x.v.(map[string]any)
	if !ok {
		c.badValue(x)
		return rec{}, false
	}
	return rec{m: m, n: x.n, path: x.l.String()}, true
}

// clist converts an array element by element.
func clist[T any](c *conv, x val, elem func(val) T) []T {
	if x = c.unwrap(x); x.n == nil {
		return nil
	}
	if x.n.kind != tArray {
		c.wrongType(x, "array")
		return nil
	}
	a, ok := x.v.([]any)
	if !ok {
		c.badValue(x)
		return nil
	}
	if len(a) == 0 {
		return nil
	}
	out := make([]T, len(a))
	for i, e := range a {
		out[i] = elem(val{loc{x.l.path, i}, e, x.n.items})
		if c.err != nil {
			return nil
		}
	}
	return out
}

func (c *conv) str(x val) string {
	if x = c.unwrap(x); x.n == nil {
		return ""
	}
	switch x.n.kind {
	case tString, tEnum:
		if s, ok := x.v.(string); ok {
			return s
		}
	case tBytes, tFixed:
		if b, ok := x.v.([]byte); ok {
			return string(b)
		}
	default:
		c.wrongType(x, "string")
		return ""
	}
	c.badValue(x)
	return ""
}

func (c *conv) status(x val) Status {
	s := Status(c.str(x))
	if s != "" && !s.valid() {
		c.fail(x.l, "unknown status %q", s)
		return ""
	}
	return s
}

func (c *conv) long(x val) int64 {
	if x = c.unwrap(x); x.n == nil {
		return 0
	}
	switch x.n.kind {
	case tInt:
		if i, ok := x.v.(int32); ok {
			return int64(i)
		}
	case tLong:
		if i, ok := x.v.(int64); ok {
			return i
		}
	default:
		c.wrongType(x, "long")
		return 0
	}
	c.badValue(x)
	return 0
}

func (c *conv) int(x val) int32 {
	if x = c.unwrap(x); x.n == nil {
		return 0
	}
	switch x.n.kind {
	case tInt:
		if i, ok := x.v.(int32); ok {
			return i
		}
	case tLong:
		if i, ok := x.v.(int64); ok {
			if i < math.MinInt32 || i > math.MaxInt32 {
				c.fail(x.l, "%d does not fit an int", i)
				return 0
			}
			return int32(i)
		}
	default:
		c.wrongType(x, "int")
		return 0
	}
	c.badValue(x)
	return 0
}

func (c *conv) float(x val) float32 {
	if x = c.unwrap(x); x.n == nil {
		return 0
	}
	switch x.n.kind {
	case tFloat:
		if f, ok := x.v.(float32); ok {
			return f
		}
	case tInt:
		if i, ok := x.v.(int32); ok {
			return float32(i)
		}
	case tLong:
		if i, ok := x.v.(int64); ok {
			return float32(i)
		}
	default:
		c.wrongType(x, "float")
		return 0
	}
	c.badValue(x)
	return 0
}

func (c *conv) double(x val) float64 {
	if x = c.unwrap(x); x.n == nil {
		return 0
	}
	switch x.n.kind {
	case tDouble:
		if f, ok := x.v.(float64); ok {
			return f
		}
	case tFloat:
		if f, ok := x.v.(float32); ok {
			return float64(f)
		}
	case tInt:
		if i, ok := x.v.(int32); ok {
			return float64(i)
		}
	case tLong:
		if i, ok := x.v.(int64); ok {
			return float64(i)
		}
	default:
		c.wrongType(x, "double")
		return 0
	}
	c.badValue(x)
	return 0
}

func (c *conv) boolean(x val) bool {
	if x = c.unwrap(x); x.n == nil {
		return false
	}
	if x.n.kind != tBoolean {
		c.wrongType(x, "boolean")
		return false
	}
	b, ok := x.v.(bool)
	if !ok {
		c.badValue(x)
	}
	return b
}

// bytes copies, because goavro's bytes alias the message buffer. Empty is nil
// unless keepEmpty, for the one field where null and empty differ
// (raw_contents: no raw form, or the raw form of zero elements).
func (c *conv) bytes(x val, keepEmpty bool) []byte {
	if x = c.unwrap(x); x.n == nil {
		return nil
	}
	var b []byte
	switch x.n.kind {
	case tBytes, tFixed:
		bv, ok := x.v.([]byte)
		if !ok {
			c.badValue(x)
			return nil
		}
		b = bv
	case tString:
		s, ok := x.v.(string)
		if !ok {
			c.badValue(x)
			return nil
		}
		b = []byte(s)
	default:
		c.wrongType(x, "bytes")
		return nil
	}
	if len(b) == 0 && !keepEmpty {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}

func (c *conv) someBytes(x val) []byte { return c.bytes(x, false) }

func (c *conv) parameters(x val) map[string]any {
	if x = c.unwrap(x); x.n == nil {
		return nil
	}
	if x.n.kind != tMap {
		c.wrongType(x, "map")
		return nil
	}
	m, ok := x.v.(map[string]any)
	if !ok {
		c.badValue(x)
		return nil
	}
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]any, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) { // the first error by key, not at random
		e := m[k]
		ev := c.unwrap(val{loc{x.l.path + "[" + strconv.Quote(k) + "]", -1}, e, x.n.items})
		if ev.n == nil {
			c.fail(ev.l, "null parameter")
			return nil
		}
		switch ev.n.kind {
		case tString, tEnum:
			out[k] = c.str(ev)
		case tInt, tLong:
			out[k] = c.long(ev)
		case tFloat, tDouble:
			out[k] = c.double(ev)
		case tBoolean:
			out[k] = c.boolean(ev)
		default:
			c.wrongType(ev, "string, long, double or boolean")
		}
		if c.err != nil {
			return nil
		}
	}
	return out
}

func (c *conv) tensor(x val) Tensor {
	r, ok := c.record(x, "Tensor")
	if !ok {
		return Tensor{}
	}
	return Tensor{
		Name:     c.str(r.field("name")),
		Datatype: c.str(r.field("datatype")),
		Shape:    clist(c, r.field("shape"), c.long),
		FP32:     clist(c, r.field("fp32_contents"), c.float),
		FP64:     clist(c, r.field("fp64_contents"), c.double),
		Int32:    clist(c, r.field("int_contents"), c.int),
		Int64:    clist(c, r.field("int64_contents"), c.long),
		Bool:     clist(c, r.field("bool_contents"), c.boolean),
		Bytes:    clist(c, r.field("bytes_contents"), c.someBytes),
		Raw:      c.bytes(r.field("raw_contents"), true),
	}
}

func (c *conv) request(r rec) *Request {
	return &Request{
		RequestID:      c.str(r.field("request_id")),
		IdempotencyKey: c.str(r.field("idempotency_key")),
		Tenant:         c.str(r.field("tenant")),
		Model:          c.str(r.field("model")),
		ModelVersion:   c.str(r.field("model_version")),
		Inputs:         clist(c, r.field("inputs"), c.tensor),
		Parameters:     c.parameters(r.field("parameters")),
		Priority:       c.int(r.field("priority")),
		DeadlineMs:     c.long(r.field("deadline_ms")),
		ReplyTopic:     c.str(r.field("reply_topic")),
		CreatedAtMs:    c.long(r.field("created_at_ms")),
	}
}

func (c *conv) timings(x val) Timings {
	r, ok := c.record(x, "Timings")
	if !ok {
		return Timings{}
	}
	return Timings{
		QueuedMs:    c.double(r.field("queued_ms")),
		BatchWaitMs: c.double(r.field("batch_wait_ms")),
		InferenceMs: c.double(r.field("inference_ms")),
		EndToEndMs:  c.double(r.field("end_to_end_ms")),
	}
}

func (c *conv) result(r rec) *Result {
	return &Result{
		RequestID:         c.str(r.field("request_id")),
		IdempotencyKey:    c.str(r.field("idempotency_key")),
		Tenant:            c.str(r.field("tenant")),
		Status:            c.status(r.field("status")),
		Reason:            c.str(r.field("reason")),
		ErrorCode:         c.str(r.field("error_code")),
		ErrorMessage:      c.str(r.field("error_message")),
		RetryAfterMs:      c.long(r.field("retry_after_ms")),
		OriginalRequestID: c.str(r.field("original_request_id")),
		OriginalStatus:    c.status(r.field("original_status")),
		Attempt:           c.int(r.field("attempt")),
		Outputs:           clist(c, r.field("outputs"), c.tensor),
		Model:             c.str(r.field("model")),
		ModelVersion:      c.str(r.field("model_version")),
		BatchSize:         c.int(r.field("batch_size")),
		Timings:           c.timings(r.field("timings")),
		ReplyTopic:        c.str(r.field("reply_topic")),
		CreatedAtMs:       c.long(r.field("created_at_ms")),
		CompletedAtMs:     c.long(r.field("completed_at_ms")),
	}
}

func (c *conv) deadLetter(r rec) *DeadLetter {
	return &DeadLetter{
		Reason:          c.str(r.field("reason")),
		Error:           c.str(r.field("error")),
		Stage:           c.str(r.field("stage")),
		SourceTopic:     c.str(r.field("source_topic")),
		SourcePartition: c.int(r.field("source_partition")),
		SourceOffset:    c.long(r.field("source_offset")),
		RequestID:       c.str(r.field("request_id")),
		Answered:        c.boolean(r.field("answered")),
		Payload:         c.someBytes(r.field("payload")),
		PayloadSize:     c.long(r.field("payload_size")),
		PayloadSHA256:   c.someBytes(r.field("payload_sha256")),
		Truncated:       c.boolean(r.field("truncated")),
		AtMs:            c.long(r.field("at_ms")),
	}
}

func (c *conv) stateEntry(r rec) *StateEntry {
	e := c.stateFields(r)
	e.More = clist(c, r.field("more"), c.stateItem)
	return &e
}

func (c *conv) stateItem(x val) StateEntry {
	r, ok := c.record(x, "StateItem")
	if !ok {
		return StateEntry{}
	}
	return c.stateFields(r)
}

// stateFields converts the fields a StateEntry and a StateItem share.
func (c *conv) stateFields(r rec) StateEntry {
	return StateEntry{
		Key:         c.str(r.field("key")),
		RequestID:   c.str(r.field("request_id")),
		Status:      c.status(r.field("status")),
		ExpiresAtMs: c.long(r.field("expires_at_ms")),
	}
}

func (c *conv) pressure(r rec) *Pressure {
	return &Pressure{
		Source:            c.str(r.field("source")),
		Model:             c.str(r.field("model")),
		Lane:              c.str(r.field("lane")),
		MinPriority:       c.int(r.field("min_priority")),
		Instance:          c.str(r.field("instance")),
		Status:            c.str(r.field("status")),
		AtMs:              c.long(r.field("at_ms")),
		IntervalMs:        c.long(r.field("interval_ms")),
		PredictedWaitMs:   c.long(r.field("predicted_wait_ms")),
		RetryAfterMs:      c.long(r.field("retry_after_ms")),
		ShedFraction:      c.double(r.field("shed_fraction")),
		CapacityPerSecond: c.double(r.field("capacity_per_second")),
		Backlog:           c.long(r.field("backlog")),
		Running:           c.long(r.field("running")),
		FixedMs:           c.double(r.field("fixed_ms")),
		PerItemMs:         c.double(r.field("per_item_ms")),
		Batch:             c.int(r.field("batch")),
		BatchLimit:        c.int(r.field("batch_limit")),
		BatchMeasured:     c.int(r.field("batch_measured")),
	}
}

// valid reports whether s is one of the five terminal statuses.
func (s Status) valid() bool {
	switch s {
	case StatusSucceeded, StatusFailed, StatusExpired, StatusRejected, StatusDuplicate:
		return true
	}
	return false
}
