package oip

import (
	"bytes"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"

	"github.com/asyncinfer/asyncinfer/schemas"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// Every binary16 value survives widening to float32 and narrowing back
// (NaNs stay NaNs); FP16 travels as JSON numbers, so both directions must be
// exact for the values a half can hold.
func TestHalfRoundTrip(t *testing.T) {
	for h := range 1 << 16 {
		f := halfToFloat(uint16(h))
		back := floatToHalf(float64(f))
		if math.IsNaN(float64(f)) {
			if back&0x7c00 != 0x7c00 || back&0x3ff == 0 {
				t.Errorf("%#04x: NaN came back as %#04x", h, back)
			}
			continue
		}
		if back != uint16(h) {
			t.Errorf("%#04x -> %v -> %#04x", h, f, back)
		}
	}
	for _, c := range []struct {
		f    float64
		want uint16
	}{
		{1, 0x3c00}, {-2, 0xc000}, {65504, 0x7bff}, {65520, 0x7c00}, {1e10, 0x7c00},
		{math.Inf(-1), 0xfc00}, {5.960464477539063e-08, 0x0001}, {2.9e-08, 0x0000}, {3.0e-08, 0x0001},
		{1.0009765625, 0x3c01}, {1.00048828125, 0x3c00}, // halfway: to even
	} {
		if got := floatToHalf(c.f); got != c.want {
			t.Errorf("floatToHalf(%v) = %#04x, want %#04x", c.f, got, c.want)
		}
	}
}

// The request a mixed batch becomes, byte for byte (testdata/*.golden.json):
// a change of the wire form is a decision, not an accident.
func TestGoldenRequest(t *testing.T) {
	p := request("p", schemas.Tensor{Name: "ids", Datatype: "INT64", Shape: []int64{2, 2}, Int64: []int64{1, -2, 3, math.MaxInt64}},
		schemas.Tensor{Name: "text", Datatype: "BYTES", Shape: []int64{2}, Bytes: [][]byte{[]byte("a \"quoted\"\n"), []byte("é")}})
	p.Parameters = map[string]any{"top_k": int64(5), "mode": "fast", "temperature": 0.7, "explain": true}
	q := request("q", schemas.Tensor{Name: "ids", Datatype: "INT64", Shape: []int64{1, 2}, Raw: le(8, 7, 8)},
		schemas.Tensor{Name: "text", Datatype: "BYTES", Shape: []int64{1}, Bytes: [][]byte{{}}})
	q.Parameters = p.Parameters
	h := request("h", schemas.Tensor{Name: "x", Datatype: "FP16", Shape: []int64{1, 3}, Raw: le(2, 0x3c00, 0xb800, 0x7bff)})
	batch := []*schemas.Request{p, h, q}
	gs := groups(batch, "")
	if len(gs) != 2 {
		t.Fatalf("%d groups, want 2 (p and q share one)", len(gs))
	}
	var got, gotBinary []byte
	for _, g := range gs {
		b, err := appendRequest(nil, batch, g)
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(b) {
			t.Fatalf("not JSON: %s", b)
		}
		got = append(append(got, b...), '\n')
		b, n, err := appendRequestForm(nil, batch, g, true)
		if err != nil || !json.Valid(b[:n]) {
			t.Fatalf("binary form: %v, JSON part %q", err, b[:n])
		}
		gotBinary = append(append(gotBinary, b...), '\n')
	}
	golden(t, "request.golden.json", got)
	golden(t, "request-binary.golden", gotBinary)
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -run Golden -update writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s changed:\ngot  %s\nwant %s", path, got, want)
	}
}

// appendString writes what encoding/json reads back as the same string.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\" backslash\\ ", "\x00\x1f\x7f", "日本\u2028", "</script>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return // names and parameters are validated UTF-8; BYTES that are not are refused before
		}
		b := appendString(nil, s)
		var back string
		if err := json.Unmarshal(b, &back); err != nil || back != s {
			t.Fatalf("%q -> %s -> %q, %v", s, b, back, err)
		}
	})
}
