package schemas

import (
	"context"
	"math"
	"reflect"
	"strconv"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
)

const (
	topicRequests = "asyncinfer.requests"
	topicResults  = "asyncinfer.results"
	topicDLQ      = "asyncinfer.dlq"
	topicState    = "asyncinfer.dedup-state"
	topicPressure = "asyncinfer.pressure"
)

var testTopics = map[string]Kind{
	topicRequests: KindRequest,
	topicResults:  KindResult,
	topicDLQ:      KindDeadLetter,
	topicState:    KindStateEntry,
	topicPressure: KindPressure,
}

// Fixed schema ids, seeded before the codec registers, so golden bytes do not
// depend on the order anything registers in.
var testIDs = map[Kind]int{
	KindRequest:    1,
	KindResult:     2,
	KindDeadLetter: 3,
	KindStateEntry: 4,
	KindPressure:   10,
}

// clientRequestID is the id of clientRequestSchema in the test registries.
const clientRequestID = 5

// clientRequestSchema is a client's own version of the request schema: its
// own namespace, a field we do not know (at top level and in the tensor),
// optional fields left out, other types where Avro promotes (priority a long,
// idempotency_key not a union, created_at_ms with a logical type, parameters
// with an int and a null branch).
const clientRequestSchema = `{
  "type": "record", "name": "Request", "namespace": "com.example.ml",
  "fields": [
    {"name": "request_id", "type": "string"},
    {"name": "trace_id", "type": "string"},
    {"name": "model", "type": "string"},
    {"name": "idempotency_key", "type": "string"},
    {"name": "inputs", "type": {"type": "array", "items": {
      "type": "record", "name": "Tensor",
      "fields": [
        {"name": "name", "type": "string"},
        {"name": "datatype", "type": "string"},
        {"name": "shape", "type": {"type": "array", "items": "int"}},
        {"name": "layout", "type": ["null", "string"], "default": null},
        {"name": "raw_contents", "type": ["null", "bytes"], "default": null},
        {"name": "int64_contents", "type": {"type": "array", "items": "int"}, "default": []}
      ]}}},
    {"name": "parameters", "type": {"type": "map", "values": ["null", "string", "int", "float"]}},
    {"name": "priority", "type": "long"},
    {"name": "created_at_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "deadline_ms", "type": "long"}
  ]
}`

// clientSchemas are more of clients' own versions of the schemas, at ids of
// their own in the test registries, each with a message: fields in another
// order, unions where we have none, enums and fixed where we have strings
// and bytes, types Avro promotes, fields we do not know. The differential
// tests and the fuzz targets start from them.
var clientSchemas = []struct {
	id     int
	kind   Kind
	schema string
	native map[string]any
}{
	{6, KindRequest, `{"type": "record", "name": "Request", "namespace": "org.client", "fields": [
		{"name": "model", "type": "string"},
		{"name": "request_id", "type": "bytes"},
		{"name": "inputs", "type": {"type": "array", "items": ["null", {"type": "record", "name": "T", "fields": [
			{"name": "raw_contents", "type": ["null", "string"]},
			{"name": "shape", "type": {"type": "array", "items": "int"}},
			{"name": "name", "type": {"type": "enum", "name": "N", "symbols": ["a", "b", "c"]}},
			{"name": "fp32_contents", "type": {"type": "array", "items": ["null", "float", "long"]}},
			{"name": "datatype", "type": "string"},
			{"name": "bool_contents", "type": {"type": "array", "items": "boolean"}},
			{"name": "int_contents", "type": {"type": "array", "items": "long"}},
			{"name": "bytes_contents", "type": {"type": "array", "items": {"type": "fixed", "name": "F2", "size": 2}}}]}]}},
		{"name": "parameters", "type": ["null", {"type": "map", "values": ["string", "int", "float", "boolean", "null", "double"]}]},
		{"name": "priority", "type": ["null", "long"]},
		{"name": "deadline_ms", "type": "int"},
		{"name": "extra", "type": {"type": "map", "values": {"type": "array", "items": "string"}}}]}`,
		map[string]any{
			"model": "m", "request_id": []byte("r-6"),
			"inputs": []any{
				map[string]any{"org.client.T": map[string]any{
					"raw_contents": nil, "shape": []any{int32(3)}, "name": "a",
					"fp32_contents": []any{map[string]any{"float": float32(1.5)}, nil, map[string]any{"long": int64(-3)}},
					"datatype":      "FP32", "bool_contents": []any{}, "int_contents": []any{}, "bytes_contents": []any{},
				}},
				nil,
				map[string]any{"org.client.T": map[string]any{
					"raw_contents": map[string]any{"string": "\x01\x00"}, "shape": []any{int32(2)}, "name": "c",
					"fp32_contents": []any{}, "datatype": "BOOL", "bool_contents": []any{true, false},
					"int_contents": []any{int64(7)}, "bytes_contents": []any{[]byte("xy")},
				}},
			},
			"parameters": map[string]any{"map": map[string]any{
				"s": map[string]any{"string": "v"}, "i": map[string]any{"int": int32(-2)},
				"f": map[string]any{"float": float32(0.25)}, "b": map[string]any{"boolean": true},
				"d": map[string]any{"double": 2.5},
			}},
			"priority": map[string]any{"long": int64(5)}, "deadline_ms": int32(9),
			"extra": map[string]any{"k": []any{"a", "b"}},
		}},
	{7, KindResult, `{"type": "record", "name": "Result", "namespace": "org.client", "fields": [
		{"name": "outputs", "type": ["null", {"type": "array", "items": {"type": "record", "name": "T", "fields": [
			{"name": "name", "type": "bytes"}, {"name": "shape", "type": {"type": "array", "items": "long"}},
			{"name": "fp64_contents", "type": {"type": "array", "items": "float"}},
			{"name": "int64_contents", "type": {"type": "array", "items": ["int", "long"]}}]}}]},
		{"name": "status", "type": "string"},
		{"name": "timings", "type": ["null", {"type": "record", "name": "Tm", "fields": [
			{"name": "inference_ms", "type": "float"}, {"name": "gpu", "type": "string"}, {"name": "queued_ms", "type": "long"}]}]},
		{"name": "request_id", "type": {"type": "fixed", "name": "Id", "size": 3}},
		{"name": "original_status", "type": ["null", {"type": "enum", "name": "S", "symbols": ["DUPLICATE", "FAILED"]}]},
		{"name": "attempt", "type": ["null", "int"]},
		{"name": "batch_size", "type": "long"},
		{"name": "error_message", "type": ["null", "string"]}]}`,
		map[string]any{
			"outputs": map[string]any{"array": []any{map[string]any{
				"name": []byte("y"), "shape": []any{int64(2)}, "fp64_contents": []any{float32(0.5), float32(-1)},
				"int64_contents": []any{map[string]any{"int": int32(1)}, map[string]any{"long": int64(1) << 40}},
			}}},
			"status": "DUPLICATE",
			"timings": map[string]any{"org.client.Tm": map[string]any{
				"inference_ms": float32(2.5), "gpu": "a100", "queued_ms": int64(3)}},
			"request_id":      []byte("r-7"),
			"original_status": map[string]any{"org.client.S": "FAILED"},
			"attempt":         nil, "batch_size": int64(4), "error_message": map[string]any{"string": "boom"},
		}},
	{8, KindStateEntry, `{"type": "record", "name": "StateEntry", "namespace": "org.client", "fields": [
		{"name": "shard", "type": "int"}, {"name": "key", "type": "string"},
		{"name": "request_id", "type": "bytes"}, {"name": "expires_at_ms", "type": "int"},
		{"name": "status", "type": ["null", "string"]}]}`,
		map[string]any{"shard": int32(4), "key": "k", "request_id": []byte("r"), "expires_at_ms": int32(99),
			"status": map[string]any{"string": "EXPIRED"}}},
	{9, KindDeadLetter, `{"type": "record", "name": "DeadLetter", "namespace": "org.client", "fields": [
		{"name": "payload", "type": {"type": "fixed", "name": "F", "size": 3}},
		{"name": "reason", "type": "string"},
		{"name": "source_partition", "type": "long"},
		{"name": "answered", "type": ["null", "boolean"]},
		{"name": "payload_sha256", "type": "string"}]}`,
		map[string]any{"payload": []byte{1, 2, 3}, "reason": "x", "source_partition": int64(12),
			"answered": map[string]any{"boolean": true}, "payload_sha256": ""}},
}

// newTestRegistry starts a srfake registry seeded with the schemas at the
// fixed ids.
func newTestRegistry(t testing.TB) (*srfake.Registry, *sr.Client) {
	t.Helper()
	reg := srfake.New()
	t.Cleanup(reg.Close)
	for topic, k := range testTopics {
		reg.SeedSchema(topic+"-value", 1, testIDs[k], sr.Schema{Schema: Schema(k)})
	}
	reg.SeedSchema("client.requests-value", 1, clientRequestID, sr.Schema{Schema: clientRequestSchema})
	for _, cs := range clientSchemas {
		reg.SeedSchema("client-"+strconv.Itoa(cs.id)+"-value", 1, cs.id, sr.Schema{Schema: cs.schema})
	}
	cl, err := sr.NewClient(sr.URLs(reg.URL()))
	if err != nil {
		t.Fatal(err)
	}
	return reg, cl
}

func newTestCodec(t testing.TB) (*Codec, *srfake.Registry) {
	t.Helper()
	reg, cl := newTestRegistry(t)
	c, err := NewCodec(context.Background(), cl, testTopics)
	if err != nil {
		t.Fatal(err)
	}
	for topic, k := range testTopics {
		if got := c.topics[topic].id; got != testIDs[k] {
			t.Fatalf("topic %s bound to id %d, want the seeded %d", topic, got, testIDs[k])
		}
	}
	return c, reg
}

// memRegistry is an in-memory Registry for fuzzing, where an HTTP round trip
// per unknown schema id would slow every input down.
type memRegistry struct {
	mu      sync.Mutex
	schemas map[int]sr.Schema
	next    int
}

func newMemRegistry() *memRegistry {
	m := &memRegistry{schemas: make(map[int]sr.Schema), next: 100}
	for k, id := range testIDs {
		m.schemas[id] = sr.Schema{Schema: Schema(k)}
	}
	m.schemas[clientRequestID] = sr.Schema{Schema: clientRequestSchema}
	for _, cs := range clientSchemas {
		m.schemas[cs.id] = sr.Schema{Schema: cs.schema}
	}
	return m
}

func (m *memRegistry) CreateSchema(_ context.Context, subject string, s sr.Schema) (sr.SubjectSchema, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, have := range m.schemas {
		if have.Schema == s.Schema {
			return sr.SubjectSchema{Subject: subject, Version: 1, ID: id, Schema: s}, nil
		}
	}
	m.next++
	m.schemas[m.next] = s
	return sr.SubjectSchema{Subject: subject, Version: 1, ID: m.next, Schema: s}, nil
}

func (m *memRegistry) SchemaByID(_ context.Context, id int) (sr.Schema, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.schemas[id]
	if !ok {
		return sr.Schema{}, &sr.ResponseError{StatusCode: 404, ErrorCode: sr.ErrSchemaNotFound.Code, Message: "Schema not found"}
	}
	return s, nil
}

// Fixtures: every field set, and only what is required.

func fullRequest() *Request {
	return &Request{
		RequestID:      "req-0001",
		IdempotencyKey: "order-42",
		Tenant:         "team-a",
		Model:          "resnet50",
		ModelVersion:   "3",
		Inputs: []Tensor{
			{Name: "image", Datatype: "FP32", Shape: []int64{1, 3}, FP32: []float32{0.5, -1.25, 3e9}},
			{Name: "scale", Datatype: "FP64", Shape: []int64{2}, FP64: []float64{math.Pi, math.Copysign(0, -1)}},
			{Name: "ids", Datatype: "INT32", Shape: []int64{3}, Int32: []int32{-1, 0, math.MaxInt32}},
			{Name: "offsets", Datatype: "INT64", Shape: []int64{2}, Int64: []int64{math.MinInt64, 1 << 40}},
			{Name: "mask", Datatype: "BOOL", Shape: []int64{2}, Bool: []bool{true, false}},
			{Name: "text", Datatype: "BYTES", Shape: []int64{2}, Bytes: [][]byte{[]byte("héllo"), {0, 0xff}}},
			{Name: "raw", Datatype: "FP32", Shape: []int64{2, 1}, Raw: []byte{0, 0, 128, 63, 0, 0, 0, 64}},
			{Name: "empty", Datatype: "INT64", Shape: []int64{0}, Raw: []byte{}},
		},
		Parameters: map[string]any{
			"temperature": 0.7,
			"top_k":       int64(40),
			"stream":      true,
			"prompt":      "a cat",
		},
		Priority:    2,
		DeadlineMs:  1_700_000_060_000,
		ReplyTopic:  "team-a.results",
		CreatedAtMs: 1_700_000_000_000,
	}
}

func minimalRequest() *Request {
	return &Request{RequestID: "r", Model: "m"}
}

func fullResult() *Result {
	return &Result{
		RequestID:         "req-0001",
		IdempotencyKey:    "order-42",
		Tenant:            "team-a",
		Status:            StatusDuplicate,
		Reason:            "duplicate",
		ErrorCode:         "E42",
		ErrorMessage:      "boom",
		RetryAfterMs:      250,
		OriginalRequestID: "req-0000",
		OriginalStatus:    StatusSucceeded,
		Attempt:           2,
		Outputs: []Tensor{
			{Name: "probs", Datatype: "FP32", Shape: []int64{1, 2}, FP32: []float32{0.25, 0.75}},
			{Name: "labels", Datatype: "BYTES", Shape: []int64{1}, Bytes: [][]byte{[]byte("cat")}},
		},
		Model:         "resnet50",
		ModelVersion:  "3",
		BatchSize:     16,
		Timings:       Timings{QueuedMs: 1.5, BatchWaitMs: 2.25, InferenceMs: 10, EndToEndMs: 14.75},
		ReplyTopic:    "team-a.results",
		CreatedAtMs:   1_700_000_000_000,
		CompletedAtMs: 1_700_000_000_015,
	}
}

func minimalResult() *Result {
	return &Result{RequestID: "r", Status: StatusFailed}
}

func fullDeadLetter() *DeadLetter {
	return &DeadLetter{
		Reason:          "undecodable",
		Error:           "schemas: decode request: magic byte 0x7b",
		Stage:           "dedup",
		SourceTopic:     "asyncinfer.requests",
		SourcePartition: 7,
		SourceOffset:    123456789,
		RequestID:       "req-0001",
		Answered:        true,
		Payload:         []byte(`{"not":"avro"}`),
		PayloadSize:     1 << 20,
		PayloadSHA256:   []byte("0123456789abcdef0123456789abcdef"),
		Truncated:       true,
		AtMs:            1_700_000_000_100,
	}
}

func minimalDeadLetter() *DeadLetter {
	return &DeadLetter{Reason: "undecodable"}
}

func fullStateEntry() *StateEntry {
	return &StateEntry{Key: "order-42", RequestID: "req-0001", Status: StatusExpired, ExpiresAtMs: 1_700_000_600_000,
		More: []StateEntry{
			{Key: "order-43", RequestID: "req-0002", Status: StatusSucceeded, ExpiresAtMs: 1_700_000_600_001},
			{Key: "req-0003", RequestID: "req-0003"},
		}}
}

func minimalStateEntry() *StateEntry {
	return &StateEntry{Key: "k", RequestID: "r"}
}

func fullPressure() *Pressure {
	return &Pressure{Source: PressureAdmission, Model: "resnet", Lane: "low", MinPriority: -2147483648,
		Instance: "dedup-0", Status: "SHEDDING", AtMs: 1_700_000_000_123, IntervalMs: 1000, PredictedWaitMs: 87,
		RetryAfterMs: 45, ShedFraction: 0.375, CapacityPerSecond: 3124.5, Backlog: 1234, Running: 96, FixedMs: 5.25,
		PerItemMs: 0.25, Batch: 180, BatchLimit: 256, BatchMeasured: 192}
}

func minimalPressure() *Pressure {
	return &Pressure{Source: PressureServing, Model: "m"}
}

// message is a fixture of any kind, with the codec calls for its kind.
type message struct {
	name   string
	kind   Kind
	value  any
	encode func(*Codec) ([]byte, error)
	decode func(*Codec, []byte) (any, error)
}

func requestMsg(name string, r *Request) message {
	return message{name, KindRequest, r,
		func(c *Codec) ([]byte, error) { return c.EncodeRequest(topicRequests, r) },
		func(c *Codec, b []byte) (any, error) { return c.DecodeRequest(context.Background(), b) }}
}

func resultMsg(name string, r *Result) message {
	return message{name, KindResult, r,
		func(c *Codec) ([]byte, error) { return c.EncodeResult(topicResults, r) },
		func(c *Codec, b []byte) (any, error) { return c.DecodeResult(context.Background(), b) }}
}

func deadLetterMsg(name string, d *DeadLetter) message {
	return message{name, KindDeadLetter, d,
		func(c *Codec) ([]byte, error) { return c.EncodeDeadLetter(topicDLQ, d) },
		func(c *Codec, b []byte) (any, error) { return c.DecodeDeadLetter(context.Background(), b) }}
}

func stateEntryMsg(name string, e *StateEntry) message {
	return message{name, KindStateEntry, e,
		func(c *Codec) ([]byte, error) { return c.EncodeStateEntry(topicState, e) },
		func(c *Codec, b []byte) (any, error) { return c.DecodeStateEntry(context.Background(), b) }}
}

func pressureMsg(name string, p *Pressure) message {
	return message{name, KindPressure, p,
		func(c *Codec) ([]byte, error) { return c.EncodePressure(topicPressure, p) },
		func(c *Codec, b []byte) (any, error) { return c.DecodePressure(context.Background(), b) }}
}

func fixtures() []message {
	return []message{
		requestMsg("request_full", fullRequest()),
		requestMsg("request_minimal", minimalRequest()),
		resultMsg("result_full", fullResult()),
		resultMsg("result_minimal", minimalResult()),
		deadLetterMsg("deadletter_full", fullDeadLetter()),
		deadLetterMsg("deadletter_minimal", minimalDeadLetter()),
		stateEntryMsg("stateentry_full", fullStateEntry()),
		stateEntryMsg("stateentry_minimal", minimalStateEntry()),
		pressureMsg("pressure_full", fullPressure()),
		pressureMsg("pressure_minimal", minimalPressure()),
	}
}

// same is reflect.DeepEqual, except that a NaN equals a NaN with the same
// bits: fuzzed floats are often NaN, and decoding must keep them bit for bit.
func same(a, b any) bool {
	return sameValue(reflect.ValueOf(a), reflect.ValueOf(b))
}

func sameValue(a, b reflect.Value) bool {
	if a.IsValid() != b.IsValid() {
		return false
	}
	if !a.IsValid() {
		return true
	}
	if a.Type() != b.Type() {
		return false
	}
	switch a.Kind() {
	case reflect.Float32:
		return math.Float32bits(float32(a.Float())) == math.Float32bits(float32(b.Float()))
	case reflect.Float64:
		return math.Float64bits(a.Float()) == math.Float64bits(b.Float())
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return sameValue(a.Elem(), b.Elem())
	case reflect.Struct:
		for i := range a.NumField() {
			if !sameValue(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Slice:
		if a.IsNil() != b.IsNil() || a.Len() != b.Len() {
			return false
		}
		for i := range a.Len() {
			if !sameValue(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Map:
		if a.IsNil() != b.IsNil() || a.Len() != b.Len() {
			return false
		}
		for _, k := range a.MapKeys() {
			bv := b.MapIndex(k)
			if !bv.IsValid() || !sameValue(a.MapIndex(k), bv) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}
