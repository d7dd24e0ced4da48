package schemas

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"
)

// Our own schemas are read in one pass, a typical message fits the budget
// with room, and the bound is what a test of scan's charges holds it to
// (FuzzWriterSchema); schemas that one pass cannot read safely are not.
func TestOnePassSchemas(t *testing.T) {
	budget := int64(DecodeBudgetFactor * DefaultMaxMessageBytes)
	for _, k := range []Kind{KindRequest, KindResult, KindDeadLetter, KindStateEntry, KindPressure} {
		w, err := parseWriter(Schema(k))
		if err != nil {
			t.Fatal(err)
		}
		if !w.onePass {
			t.Errorf("%s: not read in one pass", k)
			continue
		}
		largest := (budget - w.fixed) / w.perByte
		t.Logf("%s: scan charges at most %d·n + %d: bodies up to %d bytes are read in one pass", k, w.perByte, w.fixed, largest)
		if largest < 16<<10 {
			t.Errorf("%s: only bodies up to %d bytes are read in one pass", k, largest)
		}
	}
	for _, s := range []string{
		`{"type": "record", "name": "L", "fields": [{"name": "v", "type": "int"}, {"name": "next", "type": ["null", "L"]}]}`,
		`{"type": "record", "name": "N", "fields": [{"name": "v", "type": {"type": "array", "items": "null"}}]}`,
		`{"type": "record", "name": "E", "fields": [{"name": "v", "type": {"type": "array", "items": {"type": "record", "name": "Z", "fields": []}}}]}`,
	} {
		w, err := parseWriter(s)
		if err != nil {
			t.Fatal(err)
		}
		if w.onePass {
			t.Errorf("%s: read in one pass", s)
		}
	}
}

// The codec takes the one pass for the messages it writes, and scan for
// one that is over the one-pass size, with the same results.
func TestOnePassTaken(t *testing.T) {
	c, _ := newTestCodec(t)
	ctx := context.Background()
	b, err := c.EncodeRequest(topicRequests, typicalRequest())
	if err != nil {
		t.Fatal(err)
	}
	id, _ := SchemaID(b)
	w, err := c.writer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !w.fits(len(b)-HeaderSize, c.limits[KindRequest].budget) {
		t.Fatalf("a typical request of %d bytes is not read in one pass", len(b))
	}
	if _, ok := onePass(b[HeaderSize:], w.root, readRequest); !ok {
		t.Fatal("the strict reader refuses a typical request")
	}
	for _, r := range benchRequests() {
		b, err := c.EncodeRequest(topicRequests, r)
		if err != nil {
			t.Fatal(err)
		}
		q, err := c.DecodeRequest(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		if !same(q, r) {
			t.Errorf("%d bytes (one pass %v): decoded %+v", len(b), w.fits(len(b)-HeaderSize, c.limits[KindRequest].budget), q)
		}
	}
}

// Hostile messages in our own schema, each with one thing scan refuses that
// the reader after scan would not notice: the one pass refuses them too,
// with scan's words, as the reference does.
func TestOnePassRefusesWhatScanRefuses(t *testing.T) {
	c, _ := newTestCodec(t)
	ctx := context.Background()
	q := typicalRequest()
	q.Inputs = append(q.Inputs,
		Tensor{Name: "ints", Datatype: "INT32", Shape: []int64{1}, Int32: []int32{1234567}},
		Tensor{Name: "flags", Datatype: "BOOL", Shape: []int64{3}, Bool: []bool{true, true, false}})
	q.Parameters = map[string]any{"kx1": "v", "kx2": "w"}
	good, err := c.EncodeRequest(topicRequests, q)
	if err != nil {
		t.Fatal(err)
	}
	varint := func(v int64) []byte { return binary.AppendVarint(nil, v) }
	for _, tc := range []struct{ name, from, to []byte }{
		{[]byte("an int out of range"), varint(1234567), varint(1 << 33)},
		{[]byte("a boolean byte of 2"), []byte{6, 1, 1, 0, 0}, []byte{6, 1, 2, 0, 0}},
		{[]byte("a map key repeated"), []byte("kx2"), []byte("kx1")},
		// 2^24 int32s would be 64 MiB: refused before anything is allocated.
		{[]byte("a block count past the end"), append(varint(1), varint(1234567)...), append(varint(1<<24), varint(1234567)...)},
	} {
		if bytes.Count(good, tc.from) != 1 {
			t.Fatalf("%s: % x is not once in the message", tc.name, tc.from)
		}
		b := bytes.Replace(good, tc.from, tc.to, 1)
		var err error
		if total, _ := allocated(func() { _, err = c.DecodeRequest(ctx, b) }); total > 1<<20 {
			t.Errorf("%s: decoding %d bytes allocated %d", tc.name, len(b), total)
		}
		if err == nil || !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: DecodeRequest: %v, want malformed", tc.name, err)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
		agreeAll(t, c, b)
	}
}
