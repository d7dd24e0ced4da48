package schemas

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sr"
)

// Clients may register their own versions of the schemas; decoding maps
// their fields by name.
func TestResolveByFieldName(t *testing.T) {
	c, _ := newTestCodec(t)
	ctx := context.Background()

	// The client's request (clientRequestSchema, seeded at clientRequestID):
	// goavro needs time.Time for the timestamp-millis field.
	created := time.UnixMilli(1_700_000_000_123)
	client := goavroMessage(t, clientRequestID, clientRequestSchema, map[string]any{
		"request_id":      "req-9",
		"trace_id":        "00-abc-01",
		"model":           "bert",
		"idempotency_key": "k-9",
		"inputs": []any{map[string]any{
			"name": "tokens", "datatype": "INT64", "shape": []any{int32(1), int32(3)},
			"layout":         map[string]any{"string": "NCHW"},
			"raw_contents":   nil,
			"int64_contents": []any{int32(101), int32(-2), int32(7)},
		}},
		"parameters": map[string]any{
			"k":     map[string]any{"int": int32(5)},
			"temp":  map[string]any{"float": float32(0.5)},
			"style": map[string]any{"string": "terse"},
		},
		"priority":      int64(3),
		"created_at_ms": created,
		"deadline_ms":   int64(1_700_000_009_000),
	})
	got, err := c.DecodeRequest(ctx, client)
	if err != nil {
		t.Fatal(err)
	}
	want := &Request{
		RequestID:      "req-9",
		IdempotencyKey: "k-9",
		Model:          "bert",
		Inputs:         []Tensor{{Name: "tokens", Datatype: "INT64", Shape: []int64{1, 3}, Int64: []int64{101, -2, 7}}},
		Parameters:     map[string]any{"k": int64(5), "temp": 0.5, "style": "terse"},
		Priority:       3,
		DeadlineMs:     1_700_000_009_000,
		CreatedAtMs:    1_700_000_000_123,
	}
	if !same(got, want) {
		t.Errorf("decoded\n%+v\nwant\n%+v", got, want)
	}

	// Writer schemas that differ from ours in other ways, registered under
	// their own subjects.
	for _, tc := range []struct {
		name   string
		schema string
		native map[string]any
		body   []byte // instead of native, written by hand
		decode func([]byte) (any, error)
		want   any
		err    string
	}{
		{
			name: "result with status as a string and timings in a union",
			schema: `{"type": "record", "name": "Result", "fields": [
				{"name": "request_id", "type": "string"},
				{"name": "status", "type": "string"},
				{"name": "timings", "type": ["null", {"type": "record", "name": "T", "fields": [
					{"name": "inference_ms", "type": "float"}, {"name": "gpu", "type": "string"}]}]},
				{"name": "attempt", "type": ["null", "int"]}]}`,
			native: map[string]any{
				"request_id": "r", "status": "EXPIRED",
				"timings": map[string]any{"T": map[string]any{"inference_ms": float32(2.5), "gpu": "a100"}},
				"attempt": nil,
			},
			decode: func(b []byte) (any, error) { return c.DecodeResult(ctx, b) },
			want:   &Result{RequestID: "r", Status: StatusExpired, Timings: Timings{InferenceMs: 2.5}},
		},
		{
			name: "result with a status this version does not know",
			schema: `{"type": "record", "name": "Result", "fields": [
				{"name": "request_id", "type": "string"},
				{"name": "status", "type": {"type": "enum", "name": "S", "symbols": ["SUCCEEDED", "CANCELLED"]}}]}`,
			native: map[string]any{"request_id": "r", "status": "CANCELLED"},
			decode: func(b []byte) (any, error) { return c.DecodeResult(ctx, b) },
			err:    `field status: unknown status "CANCELLED"`,
		},
		{
			name: "state entry without status, with extra fields",
			schema: `{"type": "record", "name": "StateEntry", "namespace": "other", "fields": [
				{"name": "shard", "type": "int"},
				{"name": "key", "type": "string"},
				{"name": "request_id", "type": "bytes"},
				{"name": "expires_at_ms", "type": "int"}]}`,
			native: map[string]any{"shard": int32(4), "key": "k", "request_id": []byte("r"), "expires_at_ms": int32(99)},
			decode: func(b []byte) (any, error) { return c.DecodeStateEntry(ctx, b) },
			want:   &StateEntry{Key: "k", RequestID: "r", ExpiresAtMs: 99},
		},
		{
			// A process from before batch_limit: the field is 0, unknown.
			name: "pressure from a version without batch_limit",
			schema: `{"type": "record", "name": "Pressure", "namespace": "asyncinfer", "fields": [
				{"name": "source", "type": "string"}, {"name": "model", "type": "string"},
				{"name": "capacity_per_second", "type": "double", "default": 0},
				{"name": "batch", "type": "int", "default": 0}]}`,
			native: map[string]any{"source": "serving", "model": "m", "capacity_per_second": 2000.0, "batch": int32(48)},
			decode: func(b []byte) (any, error) { return c.DecodePressure(ctx, b) },
			want:   &Pressure{Source: "serving", Model: "m", CapacityPerSecond: 2000, Batch: 48},
		},
		{
			// A process from before batch_measured: the field is 0, unknown.
			name: "pressure from a version without batch_measured",
			schema: `{"type": "record", "name": "Pressure", "namespace": "asyncinfer", "fields": [
				{"name": "source", "type": "string"}, {"name": "model", "type": "string"},
				{"name": "batch", "type": "int", "default": 0},
				{"name": "batch_limit", "type": "int", "default": 0}]}`,
			native: map[string]any{"source": "serving", "model": "m", "batch": int32(48), "batch_limit": int32(64)},
			decode: func(b []byte) (any, error) { return c.DecodePressure(ctx, b) },
			want:   &Pressure{Source: "serving", Model: "m", Batch: 48, BatchLimit: 64},
		},
		{
			name: "dead letter with the payload as a fixed, partition as a long",
			schema: `{"type": "record", "name": "DeadLetter", "fields": [
				{"name": "reason", "type": "string"},
				{"name": "payload", "type": {"type": "fixed", "name": "F", "size": 3}},
				{"name": "source_partition", "type": "long"}]}`,
			native: map[string]any{"reason": "x", "payload": []byte{1, 2, 3}, "source_partition": int64(12)},
			decode: func(b []byte) (any, error) { return c.DecodeDeadLetter(ctx, b) },
			want:   &DeadLetter{Reason: "x", Payload: []byte{1, 2, 3}, SourcePartition: 12},
		},
		{
			name: "dead letter partition that does not fit an int",
			schema: `{"type": "record", "name": "DeadLetter", "fields": [
				{"name": "reason", "type": "string"}, {"name": "source_partition", "type": "long"}]}`,
			native: map[string]any{"reason": "x", "source_partition": int64(1) << 40},
			decode: func(b []byte) (any, error) { return c.DecodeDeadLetter(ctx, b) },
			err:    "field source_partition: 1099511627776 does not fit an int",
		},
		{
			name: "request whose parameters map is in a union",
			schema: `{"type": "record", "name": "Request", "fields": [
				{"name": "request_id", "type": "string"}, {"name": "model", "type": "string"},
				{"name": "parameters", "type": ["null", {"type": "map", "values": "string"}]}]}`,
			native: map[string]any{"request_id": "r", "model": "m",
				"parameters": map[string]any{"map": map[string]any{"map": "x"}}},
			decode: func(b []byte) (any, error) { return c.DecodeRequest(ctx, b) },
			want:   &Request{RequestID: "r", Model: "m", Parameters: map[string]any{"map": "x"}},
		},
		{
			name: "request with a tensor field of another type",
			schema: `{"type": "record", "name": "Request", "fields": [
				{"name": "request_id", "type": "string"}, {"name": "model", "type": "string"},
				{"name": "inputs", "type": {"type": "array", "items": {"type": "record", "name": "Tensor", "fields": [
					{"name": "name", "type": "string"},
					{"name": "fp32_contents", "type": {"type": "array", "items": "double"}}]}}}]}`,
			native: map[string]any{"request_id": "r", "model": "m",
				"inputs": []any{map[string]any{"name": "x", "fp32_contents": []any{1.0, 2.0}}}},
			decode: func(b []byte) (any, error) { return c.DecodeRequest(ctx, b) },
			err:    "field inputs[0].fp32_contents[0]: wrong type: writer has double, want float",
		},
		{
			// The first error is the first in the Go type's order, as the
			// reference mapping meets them, not in the writer's.
			name: "request with three fields of the wrong type",
			schema: `{"type": "record", "name": "Request", "fields": [
				{"name": "priority", "type": "string"}, {"name": "model", "type": "string"},
				{"name": "request_id", "type": "int"}, {"name": "tenant", "type": "int"}]}`,
			native: map[string]any{"priority": "high", "model": "m", "request_id": int32(1), "tenant": int32(2)},
			decode: func(b []byte) (any, error) { return c.DecodeRequest(ctx, b) },
			err:    "field request_id: wrong type: writer has int, want string",
		},
		{
			name: "request with three tensor fields of the wrong type",
			schema: `{"type": "record", "name": "Request", "fields": [
				{"name": "request_id", "type": "string"}, {"name": "model", "type": "string"},
				{"name": "inputs", "type": {"type": "array", "items": {"type": "record", "name": "Tensor", "fields": [
					{"name": "fp32_contents", "type": {"type": "array", "items": "string"}},
					{"name": "name", "type": "int"}, {"name": "datatype", "type": "int"}]}}}]}`,
			native: map[string]any{"request_id": "r", "model": "m",
				"inputs": []any{map[string]any{"fp32_contents": []any{"x"}, "name": int32(3), "datatype": int32(4)}}},
			decode: func(b []byte) (any, error) { return c.DecodeRequest(ctx, b) },
			err:    "field inputs[0].name: wrong type: writer has int, want string",
		},
		{
			// goavro writes a map in random order: this one is written by
			// hand, its smallest key between two others.
			name: "request with three null parameters",
			schema: `{"type": "record", "name": "Request", "fields": [
				{"name": "request_id", "type": "string"}, {"name": "model", "type": "string"},
				{"name": "parameters", "type": {"type": "map", "values": ["null", "string"]}}]}`,
			body: func() []byte {
				b := appendLong(appendString(appendString(nil, "r"), "m"), 3)
				for _, k := range []string{"b", "a", "c"} {
					b = append(appendString(b, k), 0) // branch null
				}
				return append(b, 0)
			}(),
			decode: func(b []byte) (any, error) { return c.DecodeRequest(ctx, b) },
			err:    `field parameters["a"]: null parameter`,
		},
		{
			name: "request with a tensor item of the wrong type in a union",
			schema: `{"type": "record", "name": "Request", "fields": [
				{"name": "request_id", "type": "string"}, {"name": "model", "type": "string"},
				{"name": "inputs", "type": {"type": "array", "items": {"type": "record", "name": "Tensor", "fields": [
					{"name": "fp32_contents", "type": {"type": "array", "items": ["float", "string"]}}]}}}]}`,
			native: map[string]any{"request_id": "r", "model": "m",
				"inputs": []any{map[string]any{"fp32_contents": []any{map[string]any{"float": float32(1)}, map[string]any{"string": "x"}}}}},
			decode: func(b []byte) (any, error) { return c.DecodeRequest(ctx, b) },
			err:    "field inputs[0].fp32_contents[1]: wrong type: writer has string, want float",
		},
		{
			name: "request with int_contents of longs that do not fit",
			schema: `{"type": "record", "name": "Request", "fields": [
				{"name": "request_id", "type": "string"}, {"name": "model", "type": "string"},
				{"name": "inputs", "type": {"type": "array", "items": {"type": "record", "name": "Tensor", "fields": [
					{"name": "int_contents", "type": {"type": "array", "items": "long"}}]}}}]}`,
			native: map[string]any{"request_id": "r", "model": "m",
				"inputs": []any{map[string]any{"int_contents": []any{int64(1), int64(1) << 40}}}},
			decode: func(b []byte) (any, error) { return c.DecodeRequest(ctx, b) },
			err:    "field inputs[0].int_contents[1]: 1099511627776 does not fit an int",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ss, err := c.reg.CreateSchema(ctx, "client."+strings.ReplaceAll(tc.name, " ", "_")+"-value", sr.Schema{Schema: tc.schema})
			if err != nil {
				t.Fatal(err)
			}
			msg := append(header(ss.ID), tc.body...)
			if tc.body == nil {
				msg = goavroMessage(t, ss.ID, tc.schema, tc.native)
			}
			agreeAll(t, c, msg) // the reference and the head decoders say the same
			got, err := tc.decode(msg)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %+v, %v; want error containing %q", got, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !same(got, tc.want) {
				t.Errorf("decoded\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}
