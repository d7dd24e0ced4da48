package schemas

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzDecoder checks a decoder on arbitrary bytes: it returns a value or an
// error matching ErrMalformed (the registry here always answers), never
// panics (decode recovers, so a recovered panic is a failure too), and what
// it returns encodes and decodes back to itself, to the same bytes. Every
// decoder and the reference (goavro's native form and the mapping of
// native_test.go) agree on the bytes, word for word, and so do the head
// decoders with the full ones.
//
// Seeds are every golden message (of every kind: one kind's bytes are
// garbage to another's decoder) and messages written with clients' own
// schemas (clientRequestSchema, clientSchemas), which the fuzzer mutates.
func fuzzDecoder[T any](f *testing.F, topic string, decode func(*Codec, context.Context, []byte) (*T, error), encode func(*Codec, string, *T) ([]byte, error)) {
	golden, err := filepath.Glob(filepath.Join("testdata", "*.golden"))
	if err != nil || len(golden) == 0 {
		f.Fatalf("no golden files: %v", err)
	}
	for _, path := range golden {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, b := range clientMessages(f) {
		f.Add(b)
	}
	f.Add([]byte{0, 0, 0, 0, 1})

	ctx := context.Background()
	c, err := NewCodec(ctx, newMemRegistry(), testTopics)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		agreeAll(t, c, b)
		v, err := decode(c, ctx, b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not match ErrMalformed: %v", err)
			}
			if strings.Contains(err.Error(), "panic") {
				t.Fatalf("decoder panicked: %v", err)
			}
			return
		}
		b2, err := encode(c, topic, v)
		if err != nil {
			t.Fatalf("decoded %+v, which does not encode: %v", v, err)
		}
		v2, err := decode(c, ctx, b2)
		if err != nil {
			t.Fatalf("re-encoded %+v does not decode: %v", v, err)
		}
		if !same(v, v2) {
			t.Fatalf("decoded\n%+v\nre-encoded and decoded\n%+v", v, v2)
		}
		b3, err := encode(c, topic, v2)
		if err != nil || !bytes.Equal(b2, b3) {
			t.Fatalf("encoding not stable: %x then %x (%v)", b2, b3, err)
		}
	})
}

// clientRequestMessage is a request written with clientRequestSchema.
func clientRequestMessage(tb testing.TB) []byte {
	tb.Helper()
	b := header(clientRequestID)
	b = appendString(b, "req-9")  // request_id
	b = appendString(b, "trace")  // trace_id
	b = appendString(b, "bert")   // model
	b = appendString(b, "k-9")    // idempotency_key
	b = appendLong(b, 1)          // inputs: one tensor
	b = appendString(b, "tokens") // name
	b = appendString(b, "INT64")  // datatype
	b = appendLong(appendLong(b, 2), 1)
	b = append(appendLong(b, 3), 0) // shape [1 3]
	b = append(b, 0)                // layout null
	b = append(b, 0)                // raw_contents null
	b = appendLong(b, 3)            // int64_contents
	b = appendLong(appendLong(appendLong(b, 101), -2), 7)
	b = append(b, 0)
	b = append(b, 0)     // end of inputs
	b = appendLong(b, 1) // parameters: one entry
	b = appendString(b, "k")
	b = appendLong(appendLong(b, 2), 5) // branch int: 5
	b = append(b, 0)
	b = appendLong(b, 3) // priority
	b = appendLong(b, 1_700_000_000_123)
	return appendLong(b, 1_700_000_009_000)
}

func FuzzDecodeRequest(f *testing.F) {
	fuzzDecoder(f, topicRequests, (*Codec).DecodeRequest, (*Codec).EncodeRequest)
}

func FuzzDecodeResult(f *testing.F) {
	fuzzDecoder(f, topicResults, (*Codec).DecodeResult, (*Codec).EncodeResult)
}

func FuzzDecodeDeadLetter(f *testing.F) {
	fuzzDecoder(f, topicDLQ, (*Codec).DecodeDeadLetter, (*Codec).EncodeDeadLetter)
}

func FuzzDecodeStateEntry(f *testing.F) {
	fuzzDecoder(f, topicState, (*Codec).DecodeStateEntry, (*Codec).EncodeStateEntry)
}

func FuzzDecodePressure(f *testing.F) {
	fuzzDecoder(f, topicPressure, (*Codec).DecodePressure, (*Codec).EncodePressure)
}

// The hand-assembled client message must be what the test says it is.
func TestClientRequestMessage(t *testing.T) {
	c, err := NewCodec(context.Background(), newMemRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.DecodeRequest(context.Background(), clientRequestMessage(t))
	if err != nil {
		t.Fatal(err)
	}
	want := &Request{
		RequestID: "req-9", IdempotencyKey: "k-9", Model: "bert",
		Inputs:      []Tensor{{Name: "tokens", Datatype: "INT64", Shape: []int64{1, 3}, Int64: []int64{101, -2, 7}}},
		Parameters:  map[string]any{"k": int64(5)},
		Priority:    3,
		CreatedAtMs: 1_700_000_000_123, DeadlineMs: 1_700_000_009_000,
	}
	if !same(got, want) {
		t.Errorf("decoded\n%+v\nwant\n%+v", got, want)
	}
}

// FuzzWriterSchema fuzzes the writer schema along with the body, for what
// clients may register: parsing must not panic, and the scan that guards
// goavro must agree with it: a body the scan accepts, goavro decodes, to the
// last byte. (The scan may refuse more than goavro: overlong varints, ints
// out of range, hostile counts, a body over the budget.) On such a body, the
// direct decoder reads every byte and agrees with the reference, and the
// head decoders with the full ones, as each kind of message.
func FuzzWriterSchema(f *testing.F) {
	for _, k := range []Kind{KindRequest, KindResult, KindDeadLetter, KindStateEntry, KindPressure} {
		golden, _ := filepath.Glob(filepath.Join("testdata", strings.ToLower(k.recordName())+"_*.golden"))
		for _, path := range golden {
			b, err := os.ReadFile(path)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(Schema(k), b[HeaderSize:])
		}
	}
	f.Add(clientRequestSchema, clientRequestMessage(f)[HeaderSize:])
	for _, cs := range clientSchemas {
		f.Add(cs.schema, goavroMessage(f, cs.id, cs.schema, cs.native)[HeaderSize:])
	}
	f.Add(`{"type": "record", "name": "L", "fields": [{"name": "v", "type": "int"}, {"name": "next", "type": ["null", "L"]}]}`, []byte{2, 2, 4, 0})
	f.Add(`["null", {"type": "array", "items": {"type": "map", "values": "string"}}, {"type": "fixed", "name": "F", "size": 2}]`, []byte{2, 2, 2, 2, 'k', 2, 'v', 0, 0})
	f.Add(`{"type": "map", "values": "null"}`, []byte{4, 2, 'k', 2, 'k', 0}) // a key repeated`
	// A map the readers skip (no Go field of its name), a key repeated: the
	// one pass must leave it to scan.
	f.Add(`{"type": "record", "name": "Request", "fields": [{"name": "request_id", "type": "string"}, {"name": "model", "type": "string"}, {"name": "extra", "type": {"type": "map", "values": "int"}}]}`,
		[]byte{2, 'r', 2, 'm', 4, 2, 'k', 2, 2, 'k', 4, 0})
	f.Fuzz(func(t *testing.T, schema string, body []byte) {
		w, err := parseWriter(schema)
		if err != nil {
			if strings.Contains(err.Error(), "panicked") {
				t.Logf("goavro panic, recovered: %v", err) // goavro's, not ours: recovered is fine
			}
			return
		}
		agreeOnePass(t, w, body)
		if err := w.scan(body, DecodeBudgetFactor*DefaultMaxMessageBytes); err != nil {
			return
		}
		native, rest, err := w.codec.NativeFromBinary(body)
		if err != nil || len(rest) != 0 {
			t.Fatalf("scan accepted %x, goavro: %v, %d bytes left", body, err, len(rest))
		}
		if _, ok := native.(map[string]any); ok && w.root.kind == tRecord {
			agreeBody(t, w, body)
		}
	})
}

// agreeOnePass checks the one-pass read of body against scan and the
// reader after it, for every kind: whatever the strict reader accepts, scan
// accepts, within the bound onePassBound gives, and the reader after scan
// reads the same value. (What it refuses goes to scan, which decides.)
func agreeOnePass(t *testing.T, w *writerSchema, body []byte) {
	t.Helper()
	if !w.onePass {
		return
	}
	s := scanner{buf: body, budget: math.MaxInt64}
	scanErr := s.value(w.root)
	if scanErr == nil && s.off != len(body) {
		scanErr = errors.New("trailing bytes")
	}
	if scanErr == nil && s.cost > w.perByte*int64(len(body))+w.fixed {
		t.Errorf("scan charged %d for %d bytes, over the one-pass bound %d·n + %d", s.cost, len(body), w.perByte, w.fixed)
	}
	check := func(what string, ok bool, same func() bool) {
		t.Helper()
		switch {
		case !ok:
		case scanErr != nil:
			t.Errorf("%s: one pass accepted %x, which scan refuses: %v", what, body, scanErr)
		case !same():
			t.Errorf("%s: one pass and the reader after scan disagree on %x", what, body)
		}
	}
	plain := reader{buf: body}
	{
		v, ok := onePass(body, w.root, readRequest)
		check("request", ok, func() bool { u, _, err := readRequest(plain, w.root); return err == nil && same(u, v) })
	}
	{
		v, ok := onePass(body, w.root, readRequestHead)
		check("request head", ok, func() bool {
			u, _, err := readRequestHead(plain, w.root)
			return err == nil && sameError(u.Invalid, v.Invalid) && sameHead(*u, *v)
		})
	}
	{
		v, ok := onePass(body, w.root, readResult)
		check("result", ok, func() bool { u, _, err := readResult(plain, w.root); return err == nil && same(u, v) })
	}
	{
		v, ok := onePass(body, w.root, readResultHead)
		check("result head", ok, func() bool { u, _, err := readResultHead(plain, w.root); return err == nil && same(u, v) })
	}
	{
		v, ok := onePass(body, w.root, readDeadLetter)
		check("dead letter", ok, func() bool { u, _, err := readDeadLetter(plain, w.root); return err == nil && same(u, v) })
	}
	{
		v, ok := onePass(body, w.root, readStateEntry)
		check("state entry", ok, func() bool { u, _, err := readStateEntry(plain, w.root); return err == nil && same(u, v) })
	}
	{
		v, ok := onePass(body, w.root, readPressure)
		check("pressure", ok, func() bool { u, _, err := readPressure(plain, w.root); return err == nil && same(u, v) })
	}
}

// sameHead compares request heads but for Invalid, which is an error.
func sameHead(a, b RequestHead) bool {
	a.Invalid, b.Invalid = nil, nil
	return same(a, b)
}
