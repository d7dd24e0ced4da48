package schemas

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/sr"
)

// HeaderSize is the size of the Confluent wire format header that precedes
// the Avro body: the magic byte 0 and the schema id, 4 bytes big-endian.
const HeaderSize = 5

// ErrMalformed is matched (errors.Is) by every decoding error that is about
// the message itself: a bad header, a schema id the registry does not know, a
// writer schema that is not a usable Avro record of the right name, a body
// that does not decode, a field of the wrong type, a required field left
// empty. Such a message never decodes, however often it is retried: dead-letter
// it. A decoding error that does not match (the registry unreachable, the
// context done) may go away: retry, do not dead-letter.
var ErrMalformed = errors.New("schemas: malformed message")

type malformedError struct{ err error }

func (e *malformedError) Error() string        { return e.err.Error() }
func (e *malformedError) Unwrap() error        { return e.err }
func (e *malformedError) Is(target error) bool { return target == ErrMalformed }

func malformed(err error) error { return &malformedError{err} }

func malformedf(format string, args ...any) error {
	return malformed(fmt.Errorf(format, args...))
}

// LookupTimeout bounds one registry lookup of a writer schema.
const LookupTimeout = 5 * time.Second

// SchemaID returns the schema id in the Confluent wire format header of b.
// Errors match ErrMalformed.
func SchemaID(b []byte) (int, error) {
	id, err := schemaID(b)
	if err != nil {
		return 0, fmt.Errorf("schemas: %w", err)
	}
	return id, nil
}

func schemaID(b []byte) (int, error) {
	if len(b) < HeaderSize {
		return 0, malformedf("message of %d bytes is shorter than the %d-byte header", len(b), HeaderSize)
	}
	if b[0] != 0 {
		return 0, malformedf("magic byte %#02x, want 0x00 (not the Confluent wire format)", b[0])
	}
	// Registries assign ids from 1; the 4 bytes are a signed int32.
	id := int(int32(binary.BigEndian.Uint32(b[1:HeaderSize])))
	if id <= 0 {
		return 0, malformedf("schema id %d out of range", id)
	}
	return id, nil
}

// Registry is the part of a Confluent-compatible schema registry the codec
// uses; *sr.Client satisfies it. Both methods are called concurrently.
// SchemaByID should return an *sr.ResponseError with error code 40403 (as
// the registry does) for an id it does not know: the codec tells that apart,
// as a malformed message, from a registry it cannot reach.
type Registry interface {
	// CreateSchema registers s under subject, or finds it registered, and
	// returns its id.
	CreateSchema(ctx context.Context, subject string, s sr.Schema) (sr.SubjectSchema, error)
	// SchemaByID returns the schema with the given id.
	SchemaByID(ctx context.Context, id int) (sr.Schema, error)
}

// Codec encodes and decodes messages in the Confluent wire format. It is safe
// for concurrent use.
//
// Encoding writes with the embedded schema registered for the topic.
// Decoding reads with the writer's schema, found by the id in the header, and
// maps fields by name: fields the Go type lacks are ignored and fields the
// writer lacks take their zero values, so a client that registered its own
// compatible version of a schema (more optional fields, or fewer) decodes
// fine. The top-level record must have the kind's name (Request, Result,
// DeadLetter, StateEntry, Pressure), as Avro schema resolution requires. A message
// larger than the kind's size limit, or whose decoded form would take more
// memory than the decode budget, is malformed (see MaxMessageBytes and
// DecodeBudget). Decoded values do not alias the message: the caller may
// reuse it.
type Codec struct {
	reg    Registry
	limits [lastKind + 1]limit
	topics map[string]binding    // fixed at construction
	own    map[int]*writerSchema // ids we registered: no lookup needed
	// looked up: id -> *writerSchema, or the error that makes the id
	// unusable for good (ids are immutable, so both are final).
	looked sync.Map
}

type binding struct {
	kind Kind
	id   int
}

// The embedded schemas, parsed once. They are constants of the package, so
// an error here is a bug the tests catch, but it is returned, not panicked.
var ownSchemas = sync.OnceValues(func() (map[Kind]*writerSchema, error) {
	m := make(map[Kind]*writerSchema)
	for k := KindRequest; k <= lastKind; k++ {
		w, err := parseWriter(Schema(k))
		if err != nil {
			return nil, fmt.Errorf("schemas: embedded %s schema: %w", k, err)
		}
		m[k] = w
	}
	return m, nil
})

// NewCodec returns a codec that encodes each kind of message for the topics
// bound to it. It registers each topic's schema under the subject
// "<topic>-value" (TopicNameStrategy); registering a schema already there is
// a no-op that returns its id. topics may be empty for a codec that only
// decodes. The options bound decoding (MaxMessageBytes, MaxDeadLetterBytes,
// DecodeBudget).
func NewCodec(ctx context.Context, reg Registry, topics map[string]Kind, opts ...Option) (*Codec, error) {
	if reg == nil {
		return nil, errors.New("schemas: nil registry")
	}
	cfg := defaultCfg()
	for _, o := range opts {
		o.apply(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	parsed, err := ownSchemas()
	if err != nil {
		return nil, err
	}
	c := &Codec{
		reg:    reg,
		topics: make(map[string]binding, len(topics)),
		own:    make(map[int]*writerSchema),
	}
	for k := KindRequest; k <= lastKind; k++ {
		c.limits[k] = cfg.limit(k)
	}
	// Sorted, so that a fresh registry assigns the same ids every time.
	for _, topic := range slices.Sorted(maps.Keys(topics)) {
		k := topics[topic]
		if topic == "" {
			return nil, errors.New("schemas: empty topic name")
		}
		if !k.valid() {
			return nil, fmt.Errorf("schemas: topic %q: invalid %v", topic, k)
		}
		subject := topic + "-value"
		ss, err := reg.CreateSchema(ctx, subject, sr.Schema{Schema: Schema(k), Type: sr.TypeAvro})
		if err != nil {
			return nil, fmt.Errorf("schemas: register %s schema under %q: %w", k, subject, err)
		}
		if ss.ID <= 0 {
			return nil, fmt.Errorf("schemas: register %s schema under %q: registry returned id %d", k, subject, ss.ID)
		}
		if w, ok := c.own[ss.ID]; ok && w != parsed[k] {
			return nil, fmt.Errorf("schemas: registry returned id %d for two different schemas", ss.ID)
		}
		c.topics[topic] = binding{k, ss.ID}
		c.own[ss.ID] = parsed[k]
	}
	return c, nil
}

// EncodeRequest encodes r for topic, which must be bound to KindRequest.
// It fails if r has no request id or model; it does not otherwise validate r
// (see Request.Validate).
func (c *Codec) EncodeRequest(topic string, r *Request) ([]byte, error) {
	return encode(c, topic, KindRequest, r, requestSize, appendRequest)
}

// EncodeResult encodes r for topic, which must be bound to KindResult. It
// fails if r has no request id or an unknown status.
func (c *Codec) EncodeResult(topic string, r *Result) ([]byte, error) {
	return encode(c, topic, KindResult, r, resultSize, appendResult)
}

// EncodeDeadLetter encodes d for topic, which must be bound to
// KindDeadLetter. It fails if d has no reason.
func (c *Codec) EncodeDeadLetter(topic string, d *DeadLetter) ([]byte, error) {
	return encode(c, topic, KindDeadLetter, d, deadLetterSize, appendDeadLetter)
}

// EncodeStateEntry encodes e for topic, which must be bound to
// KindStateEntry. It fails if e has no key or request id.
func (c *Codec) EncodeStateEntry(topic string, e *StateEntry) ([]byte, error) {
	return encode(c, topic, KindStateEntry, e, stateEntrySize, appendStateEntry)
}

// EncodePressure encodes p for topic, which must be bound to KindPressure.
// It fails if p has no source or model.
func (c *Codec) EncodePressure(topic string, p *Pressure) ([]byte, error) {
	return encode(c, topic, KindPressure, p, pressureSize, appendPressure)
}

func encode[T any](c *Codec, topic string, k Kind, v *T, size func(*T) int, app func([]byte, *T) ([]byte, error)) ([]byte, error) {
	bd, ok := c.topics[topic]
	switch {
	case !ok:
		return nil, fmt.Errorf("schemas: encode %s: topic %q is not bound to the codec", k, topic)
	case bd.kind != k:
		return nil, fmt.Errorf("schemas: encode %s: topic %q is bound to %s messages", k, topic, bd.kind)
	case v == nil:
		return nil, fmt.Errorf("schemas: encode %s: nil %s", k, k)
	}
	b := make([]byte, HeaderSize, HeaderSize+size(v))
	binary.BigEndian.PutUint32(b[1:], uint32(bd.id))
	b, err := app(b, v)
	if err != nil {
		return nil, fmt.Errorf("schemas: encode %s: %w", k, err)
	}
	return b, nil
}

// DecodeRequest decodes a request. It fails if the request has no request id
// or model; it does not otherwise validate it (see Request.Validate).
// Errors about the message match ErrMalformed.
func (c *Codec) DecodeRequest(ctx context.Context, b []byte) (*Request, error) {
	return decode(c, ctx, b, KindRequest, readRequest)
}

func readRequest(r reader, root *node) (*Request, int, error) {
	q := new(Request)
	r.request(root, q, nil)
	return read(&r, KindRequest, q, requiredRequest(q))
}

// read ends a read of v: the first error of the conversions, or else
// missing (a required field missing), as the message's; and how far it
// read.
func read[T any](r *reader, k Kind, v *T, missing error) (*T, int, error) {
	if err := r.end(k, missing); err != nil {
		return nil, r.off, err
	}
	return v, r.off, nil
}

// DecodeResult decodes a result. It fails if the result has no request id or
// status. Errors about the message match ErrMalformed.
func (c *Codec) DecodeResult(ctx context.Context, b []byte) (*Result, error) {
	return decode(c, ctx, b, KindResult, readResult)
}

func readResult(r reader, root *node) (*Result, int, error) {
	q := new(Result)
	r.result(root, q, true)
	return read(&r, KindResult, q, requiredResult(q))
}

// DecodeDeadLetter decodes a dead letter. It fails if the dead letter has no
// reason. Errors about the message match ErrMalformed.
func (c *Codec) DecodeDeadLetter(ctx context.Context, b []byte) (*DeadLetter, error) {
	return decode(c, ctx, b, KindDeadLetter, readDeadLetter)
}

func readDeadLetter(r reader, root *node) (*DeadLetter, int, error) {
	d := r.deadLetter(root)
	return read(&r, KindDeadLetter, d, required("reason", d.Reason))
}

// DecodeStateEntry decodes a state entry and the further entries of its
// record (More). It fails if any entry has no key or request id. Errors about the message match ErrMalformed.
func (c *Codec) DecodeStateEntry(ctx context.Context, b []byte) (*StateEntry, error) {
	return decode(c, ctx, b, KindStateEntry, readStateEntry)
}

func readStateEntry(r reader, root *node) (*StateEntry, int, error) {
	e := r.stateEntry(root)
	return read(&r, KindStateEntry, e, requiredStateEntry(e))
}

// DecodePressure decodes a pressure record. It fails if the record has no
// source or model.
func (c *Codec) DecodePressure(ctx context.Context, b []byte) (*Pressure, error) {
	return decode(c, ctx, b, KindPressure, readPressure)
}

func readPressure(r reader, root *node) (*Pressure, int, error) {
	p := r.pressure(root)
	return read(&r, KindPressure, p, requiredPressure(p))
}

// requiredStateEntry names the first entry, of the record's, without a key
// or request id.
func requiredStateEntry(e *StateEntry) error {
	if err := required("key", e.Key, "request_id", e.RequestID); err != nil {
		return err
	}
	for i := range e.More {
		m := &e.More[i]
		if m.Key == "" || m.RequestID == "" {
			at := "more[" + strconv.Itoa(i) + "]."
			return required(at+"key", m.Key, at+"request_id", m.RequestID)
		}
	}
	return nil
}

func requiredPressure(p *Pressure) error { return required("source", p.Source, "model", p.Model) }

// recovered turns a panic of a decoder into one more malformed message:
// nothing should panic, but a stage must not die of a message.
func recovered[T any](k Kind, v **T, err *error) {
	if p := recover(); p != nil {
		*v, *err = nil, malformedf("schemas: decode %s: panic: %v", k, p)
	}
}

// decode reads b, a message of kind k, with read: in one pass, strict,
// when its writer schema and size allow (fits); else, or when the strict
// reader stops or read fails, after scan, whose verdict and words are then
// the message's. Either way a message decodes to the same value or fails
// with the same error (FuzzWriterSchema, FuzzDecode*).
func decode[T any](c *Codec, ctx context.Context, b []byte, k Kind, read func(reader, *node) (*T, int, error)) (v *T, err error) {
	defer recovered(k, &v, &err)
	w, body, id, err := c.head(ctx, b, k)
	if err != nil {
		return nil, fmt.Errorf("schemas: decode %s: %w", k, err)
	}
	budget := c.limits[k].budget
	if w.fits(len(body), budget) {
		if v, ok := onePass(body, w.root, read); ok {
			return v, nil
		}
	}
	if err := scanBody(w, body, id, budget); err != nil {
		return nil, fmt.Errorf("schemas: decode %s: %w", k, err)
	}
	v, _, err = read(reader{buf: body}, w.root)
	return v, err
}

// onePass reads body with a strict reader: ok when it read all of it and
// found nothing wrong.
func onePass[T any](body []byte, root *node, read func(reader, *node) (*T, int, error)) (v *T, ok bool) {
	defer func() {
		if recover() != nil {
			v, ok = nil, false
		}
	}()
	v, off, err := read(reader{buf: body, strict: true}, root)
	return v, err == nil && off == len(body)
}

// end returns the first error of the conversions, or else err (a required
// field missing), as about the message.
func (r *reader) end(k Kind, err error) error {
	if r.err != nil {
		err = r.err
	}
	if err != nil {
		return malformedf("schemas: decode %s: %w", k, err)
	}
	return nil
}

func requiredRequest(q *Request) error { return required("request_id", q.RequestID, "model", q.Model) }

func requiredResult(q *Result) error {
	return required("request_id", q.RequestID, "status", string(q.Status))
}

// required takes name, value pairs and names the first empty value.
func required(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] == "" {
			return fmt.Errorf("required field %s is empty", pairs[i])
		}
	}
	return nil
}

// body checks everything about b but the conversion of its fields: its size,
// header, writer schema and body, which scan walks within the decode budget.
// It returns the writer schema and the body.
func (c *Codec) body(ctx context.Context, b []byte, k Kind) (*writerSchema, []byte, error) {
	w, body, id, err := c.head(ctx, b, k)
	if err != nil {
		return nil, nil, err
	}
	if err := scanBody(w, body, id, c.limits[k].budget); err != nil {
		return nil, nil, err
	}
	return w, body, nil
}

// head checks b's size, header and writer schema, and returns the schema,
// the body and the schema's id.
func (c *Codec) head(ctx context.Context, b []byte, k Kind) (*writerSchema, []byte, int, error) {
	lim := c.limits[k]
	if len(b) > lim.bytes {
		return nil, nil, 0, malformedf("message of %d bytes is over the %d bytes a %s may take (max.message.bytes): only a compressed batch can carry it", len(b), lim.bytes, k)
	}
	id, err := schemaID(b)
	if err != nil {
		return nil, nil, 0, err
	}
	w, err := c.writer(ctx, id)
	if err != nil {
		return nil, nil, 0, err
	}
	if w.root.kind != tRecord || w.root.shortName() != k.recordName() {
		return nil, nil, 0, malformedf("schema id %d is %s, want a record named %s", id, w.root, k.recordName())
	}
	return w, b[HeaderSize:], id, nil
}

// scanBody walks body with scan within budget.
func scanBody(w *writerSchema, body []byte, id int, budget int64) error {
	if err := w.scan(body, budget); err != nil {
		return malformedf("body does not decode with schema id %d: %w", id, err)
	}
	return nil
}

// writer returns the schema with the given id, from the registry the first
// time. A registry that cannot be reached is not cached: the next message
// tries again.
func (c *Codec) writer(ctx context.Context, id int) (*writerSchema, error) {
	if w, ok := c.own[id]; ok {
		return w, nil
	}
	if v, ok := c.looked.Load(id); ok {
		if w, ok := v.(*writerSchema); ok {
			return w, nil
		}
		return nil, v.(error)
	}
	// Only a schema id met for the first time asks the registry: bound the
	// wait here, so a registry that hangs (rather than refuses) surfaces as
	// an error the caller can wait out, and decoding needs no timer of its
	// own for the other messages.
	lctx, cancel := context.WithTimeout(ctx, LookupTimeout)
	s, err := c.reg.SchemaByID(lctx, id)
	cancel()
	if err != nil {
		var re *sr.ResponseError
		if errors.As(err, &re) && re.ErrorCode == sr.ErrSchemaNotFound.Code {
			// Not cached: a registry replica may not have it yet.
			return nil, malformed(fmt.Errorf("unknown schema id %d: %w", id, err))
		}
		return nil, fmt.Errorf("look up schema id %d: %w", id, err)
	}
	var w *writerSchema
	switch {
	case s.Type != sr.TypeAvro:
		err = malformedf("schema id %d is a %s schema, not Avro", id, s.Type)
	case len(s.References) > 0:
		err = malformedf("schema id %d uses schema references, which are not supported", id)
	default:
		w, err = parseWriter(s.Schema)
		if err != nil {
			err = malformedf("schema id %d: %w", id, err)
		}
	}
	if err != nil {
		v, _ := c.looked.LoadOrStore(id, err)
		if e, ok := v.(error); ok {
			return nil, e
		}
		return v.(*writerSchema), nil
	}
	v, _ := c.looked.LoadOrStore(id, w)
	if w, ok := v.(*writerSchema); ok {
		return w, nil
	}
	return nil, v.(error)
}
