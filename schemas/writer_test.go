package schemas

import (
	"context"
	"math"
	"runtime"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/sr"
)

// A few bytes must not make the decoder allocate gigabytes. goavro alone
// would: it preallocates arrays and maps from the block count on the wire
// (up to goavro.MaxBlockCount, 2^31-1 items of 16 bytes), and running out of
// memory kills the process. The scan before goavro refuses such counts.
func TestHostileSizes(t *testing.T) {
	c, _ := newTestCodec(t)
	ctx := context.Background()

	// A request up to its inputs field.
	prefix := func() []byte {
		b := header(1)
		b = appendString(b, "r") // request_id
		b = append(b, 0)         // idempotency_key null
		b = appendString(b, "")  // tenant
		b = appendString(b, "m") // model
		return append(b, 0)      // model_version null
	}
	// A request with one tensor, up to its fp32_contents field.
	tensorPrefix := func() []byte {
		b := appendLong(prefix(), 1)
		b = appendString(b, "x")
		b = appendString(b, "FP32")
		return append(b, 0) // shape []
	}
	rest := func(b []byte) []byte { // the fields after inputs, for a complete request
		return append(b, 0, 0, 0, 0, 0)
	}
	// params writes parameters of string values in one block, after
	// inputs; rest ends the map.
	params := func(b []byte, keys ...string) []byte {
		b = appendLong(b, int64(len(keys)))
		for _, k := range keys {
			b = appendString(append(appendString(b, k), 0), "v")
		}
		return b
	}

	register := func(subject, schema string) int {
		ss, err := c.reg.CreateSchema(ctx, subject, sr.Schema{Schema: schema})
		if err != nil {
			t.Fatal(err)
		}
		return ss.ID
	}
	nulls := register("nulls-value", `{"type": "record", "name": "Request", "fields": [
		{"name": "request_id", "type": "string"}, {"name": "model", "type": "string"},
		{"name": "pad", "type": {"type": "array", "items": "null"}}]}`)
	recursive := register("recursive-value", `{"type": "record", "name": "Request", "fields": [
		{"name": "request_id", "type": "string"}, {"name": "model", "type": "string"},
		{"name": "next", "type": ["null", "Request"]}]}`)
	nested := func(depth int) []byte {
		b := header(recursive)
		for range depth {
			b = appendString(appendString(b, "r"), "m")
			b = append(b, 2) // next: branch Request
		}
		return append(appendString(appendString(b, "r"), "m"), 0)
	}

	for _, tc := range []struct {
		name string
		b    []byte
		want string // "" for a message that decodes
	}{
		{"inputs count", appendLong(prefix(), math.MaxInt32), "array block of 2147483647 items, only 0 bytes left"},
		{"inputs count past goavro's limit", appendLong(prefix(), 1<<40), "array block of 1099511627776 items"},
		{"negative inputs count", appendLong(appendLong(prefix(), -math.MaxInt32), 1<<20), "array block of 2147483647 items"},
		{"most negative count", appendLong(prefix(), math.MinInt64), "array block count out of range"},
		{"fp32 count", appendLong(tensorPrefix(), 1<<28), "array block of 268435456 items, only 0 bytes left"},
		{"fp32 count one short", append(appendLong(tensorPrefix(), 3), make([]byte, 11)...), "array block of 3 items, only 11 bytes left"},
		{"parameters count", appendLong(append(prefix(), 0), math.MaxInt32), "map block of 2147483647 items"},
		{"string length", appendLong(header(1), 1<<40), "string of 1099511627776 bytes, 0 left"},
		{"raw length", appendLong(append(tensorPrefix(), 0, 0, 0, 0, 0, 0, 2), math.MaxInt64), "bytes of 9223372036854775807 bytes, 0 left"},
		{"varint too long", append(header(1), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), "varint overflows 64 bits"},
		{"int out of range", appendLong(append(prefix(), 0, 0), 1<<40), "int 1099511627776 out of range"},
		{"union index", append(appendString(header(1), "r"), 4), "union index 2 out of range"},
		{"zero-size items", appendLong(appendString(appendString(header(nulls), "r"), "m"), math.MaxInt32), "more than 65536 items that take no bytes"},
		{"zero-size items allowed", append(appendLong(appendString(appendString(header(nulls), "r"), "m"), 1000), 0), ""},
		{"deep recursion", nested(100), "nested deeper than 64"},
		{"shallow recursion", nested(10), ""},
		{"complete request", rest(append(prefix(), 0)), ""},
		// goavro refuses a map with a repeated key: so must the scan, or a
		// body it accepts would not decode.
		{"repeated parameter", rest(params(append(prefix(), 0), "a", "k", "b", "k")), `map key "k" repeated`},
		{"repeated among many parameters", rest(params(append(prefix(), 0), "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "5")), `map key "5" repeated`},
		{"many parameters", rest(params(append(prefix(), 0), "0", "1", "2", "3", "4", "5", "6", "7", "8", "9")), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := c.DecodeRequest(ctx, tc.b)
			runtime.ReadMemStats(&after)
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
				t.Errorf("decoding %d bytes allocated %d bytes", len(tc.b), alloc)
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("want success, got %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}

	// Booleans and enums are checked too.
	dl := appendString(header(3), "x")
	dl = append(dl, 0, 0, 0, 0, 0, 0) // error, stage, source_topic, partition, offset, request_id null
	if _, err := c.DecodeDeadLetter(ctx, append(dl, 2)); err == nil || !strings.Contains(err.Error(), "boolean byte 0x2") {
		t.Errorf("boolean 2: %v", err)
	}
	se := appendString(appendString(header(4), "k"), "r")
	if _, err := c.DecodeStateEntry(ctx, appendLong(append(se, 2), 5)); err == nil || !strings.Contains(err.Error(), "enum asyncinfer.Status index 5 out of range") {
		t.Errorf("enum 5: %v", err)
	}
}

func TestParseWriter(t *testing.T) {
	for _, tc := range []struct {
		name, schema, want string
	}{
		{"not JSON", `{`, "schema is not JSON"},
		{"unknown type", `{"type": "record", "name": "R", "fields": [{"name": "a", "type": "Nope"}]}`, `field a: unknown type "Nope"`},
		{"no fields", `{"type": "record", "name": "R"}`, "record R: fields is not an array"},
		{"unnamed record", `{"type": "record", "fields": []}`, "record without a name"},
		{"unnamed field", `{"type": "record", "name": "R", "fields": [{"type": "int"}]}`, "record R: field 0 has no name"},
		{"repeated field", `{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}, {"name": "a", "type": "int"}]}`, "two fields named a"},
		{"type defined twice", `["null", {"type": "fixed", "name": "F", "size": 1}, {"type": "enum", "name": "F", "symbols": ["A"]}]`, "type F defined twice"},
		{"type named like a keyword", `{"type": "record", "name": "a.array", "fields": [
			{"name": "x", "type": {"type": "array", "items": "int"}}]}`, "type name a.array is reserved"},
		{"type named like a primitive", `{"type": "fixed", "name": "int", "size": 1}`, "type name int is reserved"},
		{"union in union", `["null", ["int"]]`, "union directly inside a union"},
		{"repeated branch", `["int", "int"]`, "union has two branches of type int"},
		{"empty union", `[]`, "empty union"},
		{"enum without symbols", `{"type": "enum", "name": "E", "symbols": []}`, "enum E: no symbols"},
		{"fixed size", `{"type": "fixed", "name": "F", "size": -1}`, "fixed F: bad size"},
		{"array without items", `{"type": "array"}`, "array without items"},
		{"map without values", `{"type": "map"}`, "map without values"},
		{"no type", `{"name": "x"}`, "object without a type"},
		{"number", `3`, "schema of JSON type float64"},
		{"goavro refuses", `{"type": "record", "name": "R", "fields": [{"name": "a-b", "type": "int"}]}`, "ought to"},
		{"used before defined", `{"type": "record", "name": "R", "fields": [
			{"name": "g", "type": ["null", "E"]},
			{"name": "h", "type": {"type": "enum", "name": "E", "symbols": ["Y"]}}]}`, `unknown type "E"`},
		{"recursive", `{"type": "record", "name": "L", "fields": [{"name": "next", "type": ["null", "L"]}]}`, ""},
		{"logical types", `{"type": "record", "name": "R", "fields": [
			{"name": "t", "type": "long", "logicalType": "timestamp-millis"},
			{"name": "d", "type": {"type": "bytes", "logicalType": "decimal"}}]}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := parseWriter(tc.schema)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("want success, got %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, %v; want an error containing %q", w, err, tc.want)
			}
		})
	}
}

// Union branches are found by the names goavro gives them, so both must
// agree on names however namespaces are written.
func TestUnionBranchNames(t *testing.T) {
	w, err := parseWriter(`{"type": "record", "name": "R", "namespace": "a.b", "fields": [
		{"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["X"]}},
		{"name": "f", "type": {"type": "fixed", "name": "c.F", "size": 1}},
		{"name": "r", "type": {"type": "record", "name": "In", "namespace": "d", "fields": [
			{"name": "s", "type": {"type": "enum", "name": "S", "symbols": ["Z"]}}]}},
		{"name": "g", "type": ["null", "E", "c.F", "d.In", "d.S", {"type": "array", "items": "int"}, {"type": "map", "values": "int"}, "string"]}]}`)
	if err != nil {
		t.Fatal(err)
	}
	g := w.root.byName["g"]
	values := map[string]any{
		"a.b.E": "X", "c.F": []byte{1}, "d.In": map[string]any{"s": "Z"}, "d.S": "Z",
		"array": []any{int32(1)}, "map": map[string]any{"k": int32(1)}, "string": "s",
	}
	if len(g.branches) != len(values)+1 {
		t.Fatalf("%d branches", len(g.branches))
	}
	for _, b := range g.branches[1:] {
		v, ok := values[b.typeName()]
		if !ok {
			t.Errorf("branch named %q, not a name goavro uses", b.typeName())
			continue
		}
		native := map[string]any{"e": "X", "f": []byte{1}, "r": map[string]any{"s": "Z"}, "g": map[string]any{b.typeName(): v}}
		bin, err := w.codec.BinaryFromNative(nil, native)
		if err != nil {
			t.Errorf("goavro does not know branch %q: %v", b.typeName(), err)
			continue
		}
		back, _, err := w.codec.NativeFromBinary(bin)
		if err != nil {
			t.Fatal(err)
		}
		var cv conv
		x := cv.unwrap(rec{m: back.(map[string]any), n: w.root}.field("g"))
		if cv.err != nil || x.n != b {
			t.Errorf("branch %q: unwrapped to %v, %v", b.typeName(), x.n, cv.err)
		}
	}
}
