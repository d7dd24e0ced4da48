package oip

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/asyncinfer/asyncinfer/connectors/backend"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

func request(id string, in ...schemas.Tensor) *schemas.Request {
	return &schemas.Request{RequestID: id, Model: "echo", Inputs: in}
}

func fp64(name string, shape []int64, v ...float64) schemas.Tensor {
	return schemas.Tensor{Name: name, Datatype: "FP64", Shape: shape, FP64: v}
}

func newModel(t *testing.T, url string, opts ...Option) *Model {
	t.Helper()
	m, err := New(url, "echo", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// A batch of requests with one input each, of agreeing datatype and
// trailing shape, is one call whose input is their concatenation along the
// first dimension; each request gets its own rows of the outputs back.
func TestBatchIsOneCallSplitBack(t *testing.T) {
	f := newFake(t)
	m := newModel(t, f.URL)
	batch := []*schemas.Request{
		request("a", fp64("x", []int64{1, 2}, 1, 2)),
		request("b", fp64("x", []int64{2, 2}, 3, 4, 5, 6)),
		request("c", fp64("x", []int64{1, 2}, 7.5, -8)),
	}
	outs, err := m.Infer(ctx(t), batch)
	if err != nil {
		t.Fatal(err)
	}
	calls := f.Calls()
	if len(calls) != 1 {
		t.Fatalf("%d calls, want 1", len(calls))
	}
	in := calls[0].Request.Inputs[0]
	if got := fmt.Sprint(in.Shape); got != "[4 2]" {
		t.Errorf("concatenated shape %s, want [4 2]", got)
	}
	if got := string(in.Data); got != "[1,2,3,4,5,6,7.5,-8]" {
		t.Errorf("concatenated data %s", got)
	}
	if calls[0].Path != "/v2/models/echo/infer" {
		t.Errorf("path %s", calls[0].Path)
	}
	for i, r := range batch {
		want := []schemas.Tensor{r.Inputs[0]}
		if !reflect.DeepEqual(outs[i], want) {
			t.Errorf("request %s: outputs %+v, want %+v", r.RequestID, outs[i], want)
		}
	}
}

// Requests that cannot share a call (another input name, trailing shape,
// datatype, parameters, version, or no batch dimension) each go in calls of
// their own, and each gets its own answer.
func TestMixedShapesSeparateCalls(t *testing.T) {
	f := newFake(t)
	m := newModel(t, f.URL)
	v2 := request("v2", fp64("x", []int64{1, 2}, 5, 5))
	v2.ModelVersion = "2"
	p := request("p", fp64("x", []int64{1, 2}, 6, 6))
	p.Parameters = map[string]any{"threshold": 0.5, "mode": "fast"}
	batch := []*schemas.Request{
		request("a", fp64("x", []int64{1, 2}, 1, 2)),
		request("b", fp64("x", []int64{1, 3}, 1, 2, 3)),                                                        // trailing shape
		request("c", fp64("y", []int64{1, 2}, 1, 2)),                                                           // name
		request("d", schemas.Tensor{Name: "x", Datatype: "INT64", Shape: []int64{1, 2}, Int64: []int64{1, 2}}), // datatype
		request("e", fp64("x", []int64{2, 2}, 9, 9, 9, 9)),                                                     // joins a
		request("f", fp64("x", []int64{2}, 1, 2)),                                                              // rank 1: joins nobody of rank 2
		request("g", fp64("x", nil, 4)),                                                                        // scalar: alone
		v2, p,
		request("h", fp64("x", []int64{1, 2}, 1, 2), fp64("z", []int64{2, 1}, 1, 2)), // first dims differ: alone
	}
	outs, err := m.Infer(ctx(t), batch)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(f.Calls()); n != 9 {
		t.Errorf("%d calls, want 9 (a and e share one)", n)
	}
	for i, r := range batch {
		if !reflect.DeepEqual(outs[i], r.Inputs) {
			t.Errorf("request %s: outputs %+v, want %+v", r.RequestID, outs[i], r.Inputs)
		}
	}
	for _, c := range f.Calls() {
		switch {
		case c.Request.Parameters != nil:
			if fmt.Sprint(c.Request.Parameters) != "map[mode:fast threshold:0.5]" {
				t.Errorf("parameters %v", c.Request.Parameters)
			}
		case strings.Contains(c.Path, "/versions/"):
			if c.Path != "/v2/models/echo/versions/2/infer" {
				t.Errorf("versioned path %s", c.Path)
			}
		}
	}
}

func le(size int, vs ...uint64) []byte {
	b := make([]byte, 0, size*len(vs))
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint64(b, v)[:len(b)+size]
	}
	return b
}

// Every datatype of the protocol travels both ways: typed where schemas has
// a field, raw little-endian otherwise (and raw in for every fixed-size
// one), and comes back split per request.
func TestEveryDatatype(t *testing.T) {
	t.Run("json", func(t *testing.T) { testEveryDatatype(t, false) })
	t.Run("binary", func(t *testing.T) { testEveryDatatype(t, true) })
}

func testEveryDatatype(t *testing.T, binary bool) {
	f := newFake(t)
	m := newModel(t, f.URL, BinaryData(binary))
	neg := func(v int64, size int) uint64 { return uint64(v) & (1<<(8*size) - 1) }
	half := func(f float64) uint64 { return uint64(floatToHalf(f)) }
	cases := []struct {
		in   schemas.Tensor
		want schemas.Tensor // the answer of the echo: the typed form where schemas has one
	}{
		{in: schemas.Tensor{Datatype: "FP32", FP32: []float32{1.5, -2.25, 3.4028235e38, 1e-45}}},
		{in: schemas.Tensor{Datatype: "FP64", FP64: []float64{0.1, -1e300, 5e-324, 42}}},
		{in: schemas.Tensor{Datatype: "INT32", Int32: []int32{math.MinInt32, -1, 0, math.MaxInt32}}},
		{in: schemas.Tensor{Datatype: "INT64", Int64: []int64{math.MinInt64, -1, 0, math.MaxInt64}}},
		{in: schemas.Tensor{Datatype: "BOOL", Bool: []bool{true, false, false, true}}},
		{in: schemas.Tensor{Datatype: "BYTES", Bytes: [][]byte{[]byte("a\"b\\c"), []byte("\n\t\x01é"), {}, []byte("日本")}}},
		{in: schemas.Tensor{Datatype: "INT8", Raw: le(1, neg(-128, 1), neg(-1, 1), 0, 127)}},
		{in: schemas.Tensor{Datatype: "INT16", Raw: le(2, neg(-32768, 2), neg(-1, 2), 0, 32767)}},
		{in: schemas.Tensor{Datatype: "UINT8", Raw: le(1, 0, 1, 128, 255)}},
		{in: schemas.Tensor{Datatype: "UINT16", Raw: le(2, 0, 1, 40000, 65535)}},
		{in: schemas.Tensor{Datatype: "UINT32", Raw: le(4, 0, 1, 3e9, math.MaxUint32)}},
		{in: schemas.Tensor{Datatype: "UINT64", Raw: le(8, 0, 1, 1<<63, math.MaxUint64)}},
		{in: schemas.Tensor{Datatype: "FP16", Raw: le(2, half(1), half(-0.5), half(65504), half(6e-8))}},
		{in: schemas.Tensor{Datatype: "FP32", Raw: le(4, uint64(math.Float32bits(1.25)), uint64(math.Float32bits(-3)), 0, uint64(math.Float32bits(7)))},
			want: schemas.Tensor{Datatype: "FP32", FP32: []float32{1.25, -3, 0, 7}}},
		{in: schemas.Tensor{Datatype: "INT64", Raw: le(8, neg(-5, 8), 6, 7, 8)},
			want: schemas.Tensor{Datatype: "INT64", Int64: []int64{-5, 6, 7, 8}}},
		{in: schemas.Tensor{Datatype: "BOOL", Raw: []byte{1, 0, 0, 1}},
			want: schemas.Tensor{Datatype: "BOOL", Bool: []bool{true, false, false, true}}},
	}
	for _, c := range cases {
		name := c.in.Datatype
		if c.in.Raw != nil {
			name += "/raw"
		}
		t.Run(name, func(t *testing.T) {
			want := c.want
			if want.Datatype == "" {
				want = c.in
			}
			// Two requests of two rows each: one call of four rows, split back.
			in := c.in
			in.Name, in.Shape = "x", []int64{4}
			if err := (&schemas.Request{RequestID: "r", Model: "m", Inputs: []schemas.Tensor{in}}).Validate(); err != nil {
				t.Fatalf("the test's input is not valid for schemas: %v", err)
			}
			a, b := halves(in)
			outs, err := m.Infer(ctx(t), []*schemas.Request{request("a", a), request("b", b)})
			if err != nil {
				t.Fatal(err)
			}
			calls := f.Calls()
			if got := calls[len(calls)-1].Header.Get("Inference-Header-Content-Length") != ""; got != binary {
				t.Errorf("sent in the binary form: %v, want %v", got, binary)
			}
			want.Name, want.Shape = "x", []int64{4}
			wa, wb := halves(want)
			if !reflect.DeepEqual(outs[0], []schemas.Tensor{wa}) || !reflect.DeepEqual(outs[1], []schemas.Tensor{wb}) {
				t.Errorf("got %+v and %+v,\nwant %+v and %+v", outs[0], outs[1], wa, wb)
			}
		})
	}
}

// halves splits a 4-element tensor of shape [4] into two of shape [2].
func halves(t schemas.Tensor) (schemas.Tensor, schemas.Tensor) {
	a, b := t, t
	a.Shape, b.Shape = []int64{2}, []int64{2}
	switch {
	case t.Raw != nil:
		n := len(t.Raw) / 2
		a.Raw, b.Raw = t.Raw[:n:n], t.Raw[n:]
	case t.FP32 != nil:
		a.FP32, b.FP32 = t.FP32[:2:2], t.FP32[2:]
	case t.FP64 != nil:
		a.FP64, b.FP64 = t.FP64[:2:2], t.FP64[2:]
	case t.Int32 != nil:
		a.Int32, b.Int32 = t.Int32[:2:2], t.Int32[2:]
	case t.Int64 != nil:
		a.Int64, b.Int64 = t.Int64[:2:2], t.Int64[2:]
	case t.Bool != nil:
		a.Bool, b.Bool = t.Bool[:2:2], t.Bool[2:]
	case t.Bytes != nil:
		a.Bytes, b.Bytes = t.Bytes[:2:2], t.Bytes[2:]
	}
	return a, b
}

// What each answer of the server means for the batch.
func TestErrorMapping(t *testing.T) {
	long := strings.Repeat("é", 2000)
	cases := []struct {
		code      int
		body      string
		transient bool
		tooLarge  bool
		msg       string // in the error
	}{
		{code: 400, body: `{"error":"X has 3 features, but LogisticRegression is expecting 4"}`, msg: "HTTP 400 Bad Request: X has 3 features, but LogisticRegression is expecting 4"},
		{code: 422, body: `{"detail":[{"msg":"field required"}]}`, msg: `HTTP 422 Unprocessable Entity: [{"msg":"field required"}]`},
		{code: 500, body: `Internal Server Error`, msg: "HTTP 500 Internal Server Error: Internal Server Error"},
		{code: 501, body: `{"error":"no"}`, msg: "no"},
		{code: 418, body: `teapot`, msg: "teapot"},
		{code: 400, body: `{"error":"Model echo is not ready yet."}`, transient: true, msg: "not ready yet"},
		{code: 404, body: `{"error":"Model echo not found"}`, transient: true, msg: "not found"},
		{code: 401, body: `{"error":"unauthorized"}`, transient: true},
		{code: 403, body: ``, transient: true},
		{code: 408, body: ``, transient: true},
		{code: 429, body: `{"error":"slow down"}`, transient: true, msg: "slow down"},
		{code: 502, body: `bad gateway`, transient: true},
		{code: 503, body: `{"error":"overloaded"}`, transient: true, msg: "overloaded"},
		{code: 504, body: ``, transient: true},
		{code: 507, body: ``, transient: true},
		{code: 413, body: `request entity too large`, tooLarge: true},
		{code: 400, body: `{"error":"batch size 512 is too large for this model"}`, tooLarge: true},
		{code: 500, body: `{"error":"CUDA out of memory. Tried to allocate 2 GiB"}`, tooLarge: true},
		{code: 400, body: `{"error":"` + long + `"}`, msg: " …(cut)"},
	}
	for _, c := range cases {
		t.Run(fmt.Sprint(c.code, " ", cut(c.body, 30)), func(t *testing.T) {
			f := newFake(t)
			f.answer = func(w http.ResponseWriter, _ *http.Request, _ *fakeRequest) bool {
				w.WriteHeader(c.code)
				fmt.Fprint(w, c.body)
				return true
			}
			m := newModel(t, f.URL)
			_, err := m.Infer(ctx(t), []*schemas.Request{request("a", fp64("x", []int64{1}, 1)), request("b", fp64("x", []int64{1}, 2))})
			if err == nil {
				t.Fatal("no error")
			}
			if got := pipeline.Retryable(err); got != c.transient {
				t.Errorf("transient = %v, want %v: %v", got, c.transient, err)
			}
			if got := errors.Is(err, backend.ErrTooLarge); got != c.tooLarge {
				t.Errorf("too large = %v, want %v: %v", got, c.tooLarge, err)
			}
			if _, ok := backend.AsItemErrors(err); ok {
				t.Errorf("one call's error is the batch's, not per item: %v", err)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q does not say %q", err, c.msg)
			}
			var se *StatusError
			if !errors.As(err, &se) || se.Code != c.code || len(se.Message) > MaxMessage {
				t.Errorf("want a *StatusError with code %d and a message of at most %d bytes: %v", c.code, MaxMessage, err)
			}
		})
	}
}

// No server, a server that hangs past the call's deadline, a connection cut
// mid-answer: transient, never the input's fault.
func TestConnectionErrorsAreTransient(t *testing.T) {
	f := newFake(t)
	url := f.URL
	f.Close() // nothing listens there now
	m := newModel(t, url)
	_, err := m.Infer(ctx(t), []*schemas.Request{request("a", fp64("x", []int64{1}, 1))})
	if err == nil || !pipeline.Retryable(err) {
		t.Errorf("refused: %v, want a transient error", err)
	}

	slow := newFake(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	slow.answer = func(http.ResponseWriter, *http.Request, *fakeRequest) bool { <-release; return true }
	m = newModel(t, slow.URL)
	c, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = m.Infer(c, []*schemas.Request{request("a", fp64("x", []int64{1}, 1))})
	if err == nil || !pipeline.Retryable(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("timeout: %v, want a transient deadline error", err)
	}

	cutf := newFake(t)
	cutf.answer = func(w http.ResponseWriter, _ *http.Request, _ *fakeRequest) bool {
		w.Header().Set("Content-Length", "1000")
		fmt.Fprint(w, `{"outputs":[`)
		return true // the handler returns short of its Content-Length: the connection is cut
	}
	m = newModel(t, cutf.URL)
	_, err = m.Infer(ctx(t), []*schemas.Request{request("a", fp64("x", []int64{1}, 1))})
	if err == nil || !pipeline.Retryable(err) {
		t.Errorf("cut answer: %v, want a transient error", err)
	}
}

// Calls of one batch never fail each other: a lone request the server
// refuses fails alone (an ItemErrors entry), its neighbours in other calls
// succeed; a refused call of several requests is the batch's error (the
// stage splits it); a transient failure of one call is retried for its
// items alone.
func TestCallsDoNotFailEachOther(t *testing.T) {
	f := newFake(t)
	f.answer = func(w http.ResponseWriter, _ *http.Request, req *fakeRequest) bool {
		switch req.Inputs[0].Name {
		case "bad":
			w.WriteHeader(400)
			fmt.Fprint(w, `{"error":"wrong shape"}`)
			return true
		case "busy":
			w.WriteHeader(503)
			return true
		}
		return false
	}
	m := newModel(t, f.URL)
	good := request("good", fp64("x", []int64{1, 2}, 1, 2))
	good2 := request("good2", fp64("x", []int64{1, 2}, 3, 4))
	bad := request("bad", fp64("bad", []int64{1, 3}, 1, 2, 3))
	busy := request("busy", fp64("busy", []int64{1}, 1))

	outs, err := m.Infer(ctx(t), []*schemas.Request{good, bad, good2, busy})
	ie, ok := backend.AsItemErrors(err)
	if !ok {
		t.Fatalf("want ItemErrors, got %v", err)
	}
	if ie[0] != nil || ie[2] != nil || outs[0] == nil || outs[2] == nil {
		t.Errorf("the good requests failed: %v", ie)
	}
	if ie[1] == nil || pipeline.Retryable(ie[1]) || !strings.Contains(ie[1].Error(), "wrong shape") {
		t.Errorf("bad: %v, want the server's message, not transient", ie[1])
	}
	if ie[3] == nil || !pipeline.Retryable(ie[3]) {
		t.Errorf("busy: %v, want transient", ie[3])
	}

	// Two refused requests in one call: not attributable.
	bad2 := request("bad2", fp64("bad", []int64{1, 3}, 4, 5, 6))
	_, err = m.Infer(ctx(t), []*schemas.Request{good, bad, bad2})
	if _, ok := backend.AsItemErrors(err); ok || err == nil || pipeline.Retryable(err) {
		t.Errorf("a refused call of two: %v, want a plain error for the whole batch", err)
	}

	// Every call transient: the batch's error is transient (the breaker counts it).
	busy2 := request("busy2", fp64("busy", []int64{1, 1}, 1))
	_, err = m.Infer(ctx(t), []*schemas.Request{busy, busy2})
	if _, ok := backend.AsItemErrors(err); ok || !pipeline.Retryable(err) {
		t.Errorf("all busy: %v, want a transient error", err)
	}
}

// Data the JSON form cannot carry fails its request alone, before any call.
func TestUnsendableInputFailsAlone(t *testing.T) {
	f := newFake(t)
	m := newModel(t, f.URL)
	batch := []*schemas.Request{
		request("a", fp64("x", []int64{1}, 1)),
		request("nan", fp64("x", []int64{1}, math.NaN())),
		request("c", fp64("x", []int64{1}, 3)),
		request("bytes", schemas.Tensor{Name: "s", Datatype: "BYTES", Shape: []int64{1}, Bytes: [][]byte{{0xff, 0xfe}}}),
	}
	outs, err := m.Infer(ctx(t), batch)
	ie, ok := backend.AsItemErrors(err)
	if !ok {
		t.Fatalf("want ItemErrors, got %v", err)
	}
	if ie.Count() != 2 || ie[1] == nil || ie[3] == nil {
		t.Fatalf("item errors %v, want nan and bytes only", ie)
	}
	if !errors.Is(ie[1], errNotJSON) || !strings.Contains(ie[3].Error(), "not UTF-8") {
		t.Errorf("errors %v / %v", ie[1], ie[3])
	}
	if !reflect.DeepEqual(outs[0], batch[0].Inputs) || !reflect.DeepEqual(outs[2], batch[2].Inputs) {
		t.Errorf("a and c: %+v %+v", outs[0], outs[2])
	}
	if calls := f.Calls(); len(calls) != 1 || string(calls[0].Request.Inputs[0].Data) != "[1,3]" {
		t.Errorf("calls %+v, want one with a and c", calls)
	}
}

// Outputs that cannot be split by the batch's rows fail the batch (the
// stage splits it; a lone request gets the output as it is).
func TestOutputThatCannotBeSplit(t *testing.T) {
	f := newFake(t)
	f.answer = func(w http.ResponseWriter, _ *http.Request, _ *fakeRequest) bool {
		fmt.Fprint(w, `{"outputs":[{"name":"sum","datatype":"FP64","shape":[1],"data":[3]}]}`)
		return true
	}
	m := newModel(t, f.URL)
	_, err := m.Infer(ctx(t), []*schemas.Request{request("a", fp64("x", []int64{1}, 1)), request("b", fp64("x", []int64{1}, 2))})
	if err == nil || pipeline.Retryable(err) || !strings.Contains(err.Error(), "cannot split") {
		t.Errorf("got %v", err)
	}
	outs, err := m.Infer(ctx(t), []*schemas.Request{request("a", fp64("x", []int64{1}, 1))})
	if err != nil || len(outs[0]) != 1 || outs[0][0].FP64[0] != 3 {
		t.Errorf("lone: %v %+v", err, outs)
	}
}

// Malformed answers are errors, never panics, never transient.
func TestMalformedAnswers(t *testing.T) {
	for _, body := range []string{
		``, `{`, `[]`, `{"outputs":[{"name":"y","datatype":"FP64","shape":[2],"data":[1]}]}`,
		`{"outputs":[{"name":"y","datatype":"FP99","shape":[1],"data":[1]}]}`,
		`{"outputs":[{"name":"y","datatype":"INT32","shape":[1],"data":[1.5]}]}`,
		`{"outputs":[{"name":"y","datatype":"UINT8","shape":[1],"data":[256]}]}`,
		`{"outputs":[{"name":"y","datatype":"BOOL","shape":[1],"data":[1]}]}`,
		`{"outputs":[{"name":"y","datatype":"FP64","shape":[-1],"data":[]}]}`,
		`{"outputs":[{"name":"y","datatype":"FP64","shape":[1],"data":[1]}]} x`,
	} {
		_, err := decodeResponse([]byte(body))
		if err == nil {
			t.Errorf("%s: no error", body)
		}
	}
	// KServe 0.21's Python server: null parameters and model_version.
	outs, err := decodeResponse([]byte(`{"model_name":"iris","model_version":null,"id":"0b8d","parameters":null,"outputs":[{"name":"predict","shape":[1,1],"datatype":"INT64","parameters":null,"data":[0]}]}`))
	if err != nil || len(outs) != 1 || outs[0].t.Int64[0] != 0 {
		t.Errorf("KServe's answer: %+v, %v", outs, err)
	}
	// What servers do send: nested data, keys in any order, extra members.
	outs, err = decodeResponse([]byte(` {"id":"1","parameters":{"a":[1,{"b":null}]},"outputs":[{"data":[[1,2],[3,4]],"shape":[2,2],"parameters":{"content_type":"np"},"datatype":"INT64","name":"p\u0031"}],"model_name":"m"} `))
	if err != nil || len(outs) != 1 || outs[0].t.Name != "p1" || fmt.Sprint(outs[0].t.Int64) != "[1 2 3 4]" {
		t.Errorf("got %+v, %v", outs, err)
	}
}

func FuzzDecodeResponse(f *testing.F) {
	f.Add([]byte(`{"outputs":[{"name":"predict","shape":[2,1],"datatype":"INT64","parameters":{"content_type":"np"},"data":[0,2]}]}`))
	f.Add([]byte(`{"outputs":[{"name":"s","shape":[2],"datatype":"BYTES","data":["a","\u00e9"]}]}`))
	f.Add([]byte(`{"outputs":[{"name":"h","shape":[1],"datatype":"FP16","data":[[0.5]]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		outs, err := decodeResponse(b)
		if err != nil {
			return
		}
		for _, o := range outs {
			n, err := elements(o.t.Shape)
			if err != nil {
				t.Fatalf("accepted shape %v: %v", o.t.Shape, err)
			}
			r := schemas.Request{RequestID: "r", Model: "m", Inputs: []schemas.Tensor{o.t}}
			if o.t.Name != "" && n > 0 {
				if err := r.Validate(); err != nil {
					t.Fatalf("decoded a tensor schemas refuses: %v (%s)", err, b)
				}
			}
		}
	})
}

// In the binary form, what JSON cannot carry travels: NaN, infinities,
// BYTES that are not UTF-8.
func TestBinaryCarriesWhatJSONCannot(t *testing.T) {
	f := newFake(t)
	m := newModel(t, f.URL, BinaryData(true))
	batch := []*schemas.Request{
		request("nan", fp64("x", []int64{2}, math.NaN(), math.Inf(-1))),
		request("one", fp64("x", []int64{1}, 1)),
		request("bytes", schemas.Tensor{Name: "s", Datatype: "BYTES", Shape: []int64{2}, Bytes: [][]byte{{0xff, 0xfe}, {}}}),
	}
	outs, err := m.Infer(ctx(t), batch)
	if err != nil {
		t.Fatal(err)
	}
	if v := outs[0][0].FP64; len(v) != 2 || !math.IsNaN(v[0]) || !math.IsInf(v[1], -1) || outs[1][0].FP64[0] != 1 {
		t.Errorf("floats: %+v %+v", outs[0], outs[1])
	}
	if !reflect.DeepEqual(outs[2], batch[2].Inputs) {
		t.Errorf("bytes: %+v", outs[2])
	}
	if n := len(f.Calls()); n != 2 {
		t.Errorf("%d calls, want 2 (nan and one share one)", n)
	}
}

// Binary answers that do not add up are errors.
func TestMalformedBinaryAnswers(t *testing.T) {
	js := func(dt string, shape string, size int) string {
		return fmt.Sprintf(`{"outputs":[{"name":"y","datatype":%q,"shape":%s,"parameters":{"binary_data_size":%d}}]}`, dt, shape, size)
	}
	for _, c := range []struct {
		json, bin string
		want      string
	}{
		{js("FP32", "[2]", 8), "\x00\x00\x80\x3f", "binary_data_size 8, but the body has 4"},
		{js("FP32", "[2]", 4), "\x00\x00\x80\x3f", "needs 8 bytes of FP32"},
		{js("FP32", "[1]", 4), "\x00\x00\x80\x3f\x00", "1 bytes of binary data belong to no output"},
		{js("BOOL", "[1]", 1), "\x02", "want 0 or 1"},
		{js("BYTES", "[1]", 5), "\x09\x00\x00\x00a", "cut short"},
		{js("BYTES", "[2]", 5), "\x01\x00\x00\x00a", "needs 2 elements, binary data has 1"},
		{`{"outputs":[{"name":"y","datatype":"FP32","shape":[1],"data":[1],"parameters":{"binary_data_size":4}}]}`, "\x00\x00\x80\x3f", "both data and binary_data_size"},
	} {
		body := []byte(c.json + c.bin)
		_, err := decodeBody(body, len(c.json))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s + %q: %v, want %q", c.json, c.bin, err, c.want)
		}
	}
	if _, err := decodeBody([]byte(js("FP32", "[1]", 4)), -1); err == nil {
		t.Error("binary_data_size in an answer without the header: no error")
	}
	outs, err := decodeBody([]byte(js("FP32", "[1]", 4)+"\x00\x00\x80\x3f"), len(js("FP32", "[1]", 4)))
	if err != nil || outs[0].t.FP32[0] != 1 {
		t.Errorf("good one: %+v %v", outs, err)
	}
}
