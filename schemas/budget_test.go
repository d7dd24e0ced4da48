package schemas

import (
	"context"
	"errors"
	"math"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/sr"
)

// allocated returns the bytes f allocates, garbage included (what a decoder
// under attack would ask of the runtime), and how much the live heap grew.
func allocated(f func()) (total, growth int64) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return int64(after.TotalAlloc - before.TotalAlloc), int64(after.HeapAlloc) - int64(before.HeapAlloc)
}

// arrayOf returns a body of one array of n items, in one block.
func arrayOf(n int, item func([]byte, int) []byte) []byte {
	b := appendLong(nil, int64(n))
	for i := range n {
		b = item(b, i)
	}
	return append(b, 0)
}

// The estimate of budget.go against what goavro really allocates, kind by
// kind: the estimate must cover it (or the budget would not bound the
// reference decoder), and stay within twice of it (or the budget would
// refuse legitimate messages). A Go release that changes the size of maps or
// interfaces fails here: recalibrate the costs of budget.go. (The estimate
// leaves out the rounding of allocations to size classes and pages: goavro's
// []any of 20,000 slots takes 320,000 bytes rounded up to 40 pages, 0.4
// bytes per item more. Hence the 2% and 8 KB of slack.)
func TestDecodeBudgetCalibration(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's runtime allocates other sizes than the one calibrated for")
	}
	const n = 20000
	big := func(b []byte, i int) []byte { return appendLong(b, int64(1000+i*7919)) } // boxed: 256 and up
	str := func(l int) func([]byte, int) []byte {
		return func(b []byte, i int) []byte { return append(appendLong(b, int64(l)), make([]byte, l)...) }
	}
	nulls := func(k int) string {
		var fs []string
		for i := range k {
			fs = append(fs, `{"name": "f`+strconv.Itoa(i)+`", "type": "null"}`)
		}
		return `{"type": "record", "name": "R", "fields": [` + strings.Join(fs, ",") + `]}`
	}
	for _, tc := range []struct {
		name, items string
		item        func([]byte, int) []byte
	}{
		{"null", `"null"`, func(b []byte, _ int) []byte { return b }},
		{"boolean", `"boolean"`, func(b []byte, i int) []byte { return append(b, byte(i&1)) }},
		{"int", `"int"`, big},
		{"long", `"long"`, big},
		{"float", `"float"`, func(b []byte, i int) []byte { return append(b, 1, 2, 3, byte(i)) }},
		{"double", `"double"`, func(b []byte, i int) []byte { return append(b, 1, 2, 3, 4, 5, 6, 7, byte(i)) }},
		{"enum", `{"type": "enum", "name": "E", "symbols": ["A", "B"]}`, func(b []byte, i int) []byte { return appendLong(b, int64(i&1)) }},
		{"empty bytes", `"bytes"`, str(0)},
		{"bytes of 10", `"bytes"`, str(10)},
		{"empty string", `"string"`, str(0)},
		{"string of 10", `"string"`, str(10)},
		{"fixed of 2", `{"type": "fixed", "name": "F", "size": 2}`, func(b []byte, _ int) []byte { return append(b, 1, 2) }},
		{"empty array", `{"type": "array", "items": "null"}`, func(b []byte, _ int) []byte { return append(b, 0) }},
		{"empty map", `{"type": "map", "values": "null"}`, func(b []byte, _ int) []byte { return append(b, 0) }},
		{"map of 1", `{"type": "map", "values": "null"}`, func(b []byte, _ int) []byte { return append(appendString(appendLong(b, 1), "k"), 0) }},
		{"record of 0", nulls(0), func(b []byte, _ int) []byte { return b }},
		{"record of 1 empty map", `{"type": "record", "name": "R", "fields": [{"name": "m", "type": {"type": "map", "values": "null"}}]}`,
			func(b []byte, _ int) []byte { return append(b, 0) }},
		{"record of 4", nulls(4), func(b []byte, _ int) []byte { return b }},
		{"record of 10", nulls(10), func(b []byte, _ int) []byte { return b }},
		{"union null", `["null", "float"]`, func(b []byte, _ int) []byte { return append(b, 0) }},
		{"union float", `["null", "float"]`, func(b []byte, _ int) []byte { return append(b, 2, 1, 2, 3, 4) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := parseWriter(`{"type": "array", "items": ` + tc.items + `}`)
			if err != nil {
				t.Fatal(err)
			}
			body := arrayOf(n, tc.item)
			s := scanner{buf: body, budget: math.MaxInt64}
			if err := s.value(w.root); err != nil || s.off != len(body) {
				t.Fatalf("scan: %v at %d of %d", err, s.off, len(body))
			}
			var real int64
			for range 3 {
				got, _ := allocated(func() {
					if _, _, err := w.codec.NativeFromBinary(body); err != nil {
						t.Fatal(err)
					}
				})
				real += got / 3
			}
			perItem := func(b int64) float64 { return float64(b) / n }
			t.Logf("goavro %.1f bytes per item, estimate %.1f", perItem(real), perItem(s.cost))
			if s.cost+s.cost/50+8192 < real || s.cost > 2*real {
				t.Errorf("estimate %.1f bytes per item, goavro allocates %.1f: recalibrate budget.go", perItem(s.cost), perItem(real))
			}
		})
	}
}

// registerPad registers a client's request schema with a pad field of the
// given type, and returns its id.
func registerPad(t *testing.T, c *Codec, name, pad string) int {
	t.Helper()
	schema := `{"type": "record", "name": "Request", "namespace": "bomb", "fields": [
		{"name": "request_id", "type": "string"}, {"name": "model", "type": "string"},
		{"name": "pad", "type": ` + pad + `}]}`
	ss, err := c.reg.CreateSchema(context.Background(), "bomb-"+strings.ReplaceAll(name, " ", "-")+"-value", sr.Schema{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	return ss.ID
}

// A message small on the wire and huge in memory is refused before the heap
// grows: the bombs of issue 10, uncompressed (950 KB: ~415 MiB of goavro's
// native form) and as a compressed batch expands them (12 MB: out of memory
// at 2.25 GiB).
func TestDecodeBombs(t *testing.T) {
	c, _ := newTestCodec(t)
	ctx := context.Background()
	key3 := func(b []byte, i int) []byte { // 3 bytes: distinct keys for 16M entries
		return append(appendLong(b, 3), byte(i>>16), byte(i>>8), byte(i))
	}
	bombs := []struct {
		name, pad string // pad "": our own schema, with inputs of empty tensors
		size      int    // bytes per item on the wire
		item      func([]byte, int) []byte
	}{
		{"empty tensors", "", 10, func(b []byte, _ int) []byte { return append(b, make([]byte, 10)...) }},
		{"records of empty maps", `{"type": "array", "items": {"type": "record", "name": "E", "fields": [
			{"name": "m", "type": {"type": "map", "values": "null"}}]}}`, 1, func(b []byte, _ int) []byte { return append(b, 0) }},
		{"nested arrays", `{"type": "array", "items": {"type": "array", "items": "null"}}`, 1, func(b []byte, _ int) []byte { return append(b, 0) }},
		{"maps of empty records", `{"type": "map", "values": {"type": "record", "name": "E", "fields": []}}`, 4, key3},
		{"unions", `{"type": "array", "items": ["null", "boolean"]}`, 2, func(b []byte, _ int) []byte { return append(b, 2, 1) }},
	}
	// The codecs: the default one (1 MiB messages, 32 MiB budget), and one
	// whose limit on size lets 12 MB through, to show that the budget holds
	// on its own.
	lifted, err := NewCodec(ctx, c.reg, nil, MaxMessageBytes(16<<20), DecodeBudget(32<<20))
	if err != nil {
		t.Fatal(err)
	}
	for _, bomb := range bombs {
		// A request with request id "r", model "m" and a huge pad, or a
		// huge inputs field.
		id := 1
		prefix := appendString(nil, "r")   // request_id
		prefix = append(prefix, 0, 0)      // idempotency_key null, tenant ""
		prefix = appendString(prefix, "m") // model
		prefix = append(prefix, 0)         // model_version null
		suffix := []byte{0, 0, 0, 0, 0}    // parameters, priority, deadline_ms, reply_topic, created_at_ms
		if bomb.pad != "" {
			id, prefix, suffix = registerPad(t, c, bomb.name, bomb.pad), appendString(appendString(nil, "r"), "m"), nil
		}
		for _, tc := range []struct {
			size  int
			codec *Codec
			want  string
		}{
			{950_000, c, "over the decode budget: decoding the message would take more than 33554432 bytes"},
			{12_000_000, c, "bytes is over the 1048576 bytes a request may take (max.message.bytes)"},
			{12_000_000, lifted, "over the decode budget"},
		} {
			msg := append(header(id), prefix...)
			msg = append(msg, arrayOf((tc.size-len(msg)-8)/bomb.size, bomb.item)...)
			msg = append(msg, suffix...)
			name := bomb.name + "/" + strconv.Itoa(tc.size/1000) + "KB"
			if tc.codec == lifted {
				name += "/size limit lifted"
			}
			t.Run(name, func(t *testing.T) {
				for _, decode := range []func() error{
					func() error { _, err := tc.codec.DecodeRequest(ctx, msg); return err },
					func() error { _, err := tc.codec.DecodeRequestHead(ctx, msg); return err },
				} {
					var err error
					total, growth := allocated(func() { err = decode() })
					if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
						t.Fatalf("got %v, want a malformed message: %q", err, tc.want)
					}
					t.Logf("%d bytes: allocated %d, heap grew %d", len(msg), total, growth)
					if total > 20<<20 || growth > 20<<20 {
						t.Errorf("refusing %d bytes allocated %d bytes, heap grew %d", len(msg), total, growth)
					}
				}
			})
		}
	}
}

// appendTensorOf writes a tensor with one data form: field is the index of
// the form in the schema's order (0 fp32 ... 5 bytes), written by data.
func appendTensorOf(b []byte, name, datatype string, n int, field int, data func([]byte) []byte) []byte {
	b = appendString(appendString(b, name), datatype)
	b = append(appendLong(appendLong(b, 1), int64(n)), 0) // shape [n]
	for i := range 6 {
		if i == field {
			b = data(b)
		} else {
			b = append(b, 0)
		}
	}
	return append(b, 0) // raw_contents null
}

// largeRequests are the largest legitimate requests: each kind of tensor
// data up to the topic's 1 MiB, in one block as our encoder, goavro, Java
// and Python write arrays, and in blocks of 100 as hamba/avro does. It
// returns the messages, and the requests they hold by name.
func largeRequests(t testing.TB, c *Codec) (map[string][]byte, map[string]*Request) {
	const n = 1_040_000 // elements of a byte: the most that fit in 1 MiB
	bools := make([]bool, n)
	masks := make([]int64, n)
	small := make([]int32, n)
	for i, f := range randomBytes(n, 7) {
		bools[i], masks[i], small[i] = f&1 == 1, int64(f&1), int32(f&63)
	}
	texts := make([][]byte, 100_000)
	for i := range texts {
		texts[i] = randomBytes(9, uint64(i))
	}
	tensor := func(tt Tensor) *Request {
		return &Request{RequestID: "r", Model: "m", Inputs: []Tensor{tt}}
	}
	requests := map[string]*Request{
		"FP32":          tensor(Tensor{Name: "x", Datatype: "FP32", Shape: []int64{1, 262_000}, FP32: randomFloats(262_000, 8)}),
		"BOOL":          tensor(Tensor{Name: "x", Datatype: "BOOL", Shape: []int64{n}, Bool: bools}),
		"INT64 of 0, 1": tensor(Tensor{Name: "x", Datatype: "INT64", Shape: []int64{n}, Int64: masks}),
		"INT32 < 64":    tensor(Tensor{Name: "x", Datatype: "INT32", Shape: []int64{n}, Int32: small}),
		"BYTES":         tensor(Tensor{Name: "x", Datatype: "BYTES", Shape: []int64{100_000}, Bytes: texts}),
		"raw FP32":      tensor(Tensor{Name: "x", Datatype: "FP32", Shape: []int64{1, 262_000}, Raw: randomBytes(4*262_000, 9)}),
	}
	messages := map[string][]byte{}
	for name, r := range requests {
		b, err := c.EncodeRequest(topicRequests, r)
		if err != nil {
			t.Fatal(err)
		}
		messages[name] = b
	}
	// hamba/avro writes arrays in blocks of 100 items: 2 bytes more each.
	const blocked = 1_020_000
	b := appendString(header(1), "r") // request_id
	b = append(b, 0)                  // idempotency_key null
	b = appendString(b, "")           // tenant
	b = appendString(b, "m")          // model
	b = append(b, 0)                  // model_version null
	b = appendLong(b, 1)              // inputs: one tensor
	b = appendTensorOf(b, "x", "BOOL", blocked, 4, func(b []byte) []byte {
		for i := 0; i < blocked; i += 100 {
			b = appendLong(b, 100)
			for _, v := range bools[i : i+100] {
				b = appendBool(b, v)
			}
		}
		return append(b, 0)
	})
	b = append(b, 0)             // end of inputs
	b = append(b, 0, 0, 0, 0, 0) // parameters, priority, deadline, reply topic, created
	messages["BOOL in blocks of 100"] = b
	requests["BOOL in blocks of 100"] = tensor(Tensor{Name: "x", Datatype: "BOOL", Shape: []int64{blocked}, Bool: bools[:blocked]})
	return messages, requests
}

func TestLargeRequestsDecode(t *testing.T) {
	c, _ := newTestCodec(t)
	ctx := context.Background()
	messages, requests := largeRequests(t, c)
	for name, msg := range messages {
		t.Run(name, func(t *testing.T) {
			if len(msg) > DefaultMaxMessageBytes || len(msg) < DefaultMaxMessageBytes*9/10 {
				t.Fatalf("message of %d bytes, want just under %d", len(msg), DefaultMaxMessageBytes)
			}
			got, err := c.DecodeRequest(ctx, msg)
			if err != nil {
				t.Fatal(err)
			}
			if !same(got, requests[name]) {
				t.Error("decoded request differs from the one encoded")
			}
			if err := got.Validate(); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestDecodeLimits(t *testing.T) {
	enc, _ := newTestCodec(t)
	ctx := context.Background()
	for _, tc := range []struct {
		opts []Option
		want string
	}{
		{[]Option{MaxMessageBytes(5)}, "schemas: MaxMessageBytes 5: want more than the 5-byte header"},
		{[]Option{MaxDeadLetterBytes(0)}, "schemas: MaxDeadLetterBytes 0: want more than the 5-byte header"},
		{[]Option{DecodeBudget(-1)}, "schemas: DecodeBudget -1: want a positive number of bytes"},
	} {
		if _, err := NewCodec(ctx, enc.reg, nil, tc.opts...); err == nil || err.Error() != tc.want {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}

	req, err := enc.EncodeRequest(topicRequests, fullRequest())
	if err != nil {
		t.Fatal(err)
	}
	dl := fullDeadLetter()
	dl.Payload = make([]byte, 2<<20) // a dead letter carries its source record
	dead, err := enc.EncodeDeadLetter(topicDLQ, dl)
	if err != nil {
		t.Fatal(err)
	}
	// (A budget of its own: 32 times a 378-byte request is not enough for
	// its eight tensors, at 1 KB each in goavro's form.)
	tight, err := NewCodec(ctx, enc.reg, nil, MaxMessageBytes(len(req)), MaxDeadLetterBytes(len(dead)), DecodeBudget(4<<20))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tight.DecodeRequest(ctx, req); err != nil {
		t.Errorf("a request of exactly MaxMessageBytes: %v", err)
	}
	if _, err := tight.DecodeDeadLetter(ctx, dead); err != nil {
		t.Errorf("a dead letter of exactly MaxDeadLetterBytes: %v", err)
	}
	if _, err := enc.DecodeDeadLetter(ctx, dead); err != nil {
		t.Errorf("a dead letter of 2 MiB by default: %v", err)
	}
	_, err = tight.DecodeRequest(ctx, append(req, 0))
	if want := "message of " + strconv.Itoa(len(req)+1) + " bytes is over the " + strconv.Itoa(len(req)) + " bytes a request may take"; err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want a malformed message: %q", err, want)
	}
	_, err = tight.DecodeDeadLetter(ctx, append(dead, 0))
	if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "a dead letter may take") {
		t.Errorf("got %v, want an oversize dead letter", err)
	}
	// The budget is the budget: a request just over it is refused, one
	// under it decodes.
	r := fullRequest()
	r.Inputs = []Tensor{{Name: "x", Datatype: "BOOL", Shape: []int64{10_000}, Bool: make([]bool, 10_000)}}
	b, err := enc.EncodeRequest(topicRequests, r)
	if err != nil {
		t.Fatal(err)
	}
	for budget, ok := range map[int64]bool{16 * 10_000: false, 32 * 10_000: true} {
		small, err := NewCodec(ctx, enc.reg, nil, DecodeBudget(budget))
		if err != nil {
			t.Fatal(err)
		}
		_, err = small.DecodeRequest(ctx, b)
		if ok != (err == nil) || (err != nil && !strings.Contains(err.Error(), "more than "+strconv.FormatInt(budget, 10)+" bytes of memory")) {
			t.Errorf("budget %d: %v", budget, err)
		}
	}
}
