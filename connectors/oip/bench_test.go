package oip

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/asyncinfer/asyncinfer/schemas"
)

// The hot path's CPU and allocations per batch, on random data (zeros
// would flatter the number formatting): the request written, the answer
// read, and both against encoding/json doing the same, so that the
// hand-written codec has to keep earning its place.

type benchCase struct {
	name  string
	batch []*schemas.Request
	resp  []byte // an answer of the right shape
}

func benchCases() []benchCase {
	rng := rand.New(rand.NewPCG(1, 2))
	var cs []benchCase
	// iris-like: 64 requests of one row of 4 FP64 features; the answer is a
	// class per row.
	iris := make([]*schemas.Request, 64)
	for i := range iris {
		v := make([]float64, 4)
		for k := range v {
			v[k] = float64(int(rng.Float64()*80)) / 10 // one decimal, as iris
		}
		iris[i] = request(strconv.Itoa(i), fp64("input-0", []int64{1, 4}, v...))
	}
	classes := make([]int64, 64)
	for i := range classes {
		classes[i] = rng.Int64N(3)
	}
	cs = append(cs, benchCase{"iris-64x4-fp64", iris, mustJSON(map[string]any{"model_name": "iris", "outputs": []any{
		map[string]any{"name": "predict", "datatype": "INT64", "shape": []int{64, 1}, "data": classes}}})})
	// embedding-like: 16 requests of 512 FP32 in, 512 FP32 out.
	emb := make([]*schemas.Request, 16)
	out := make([]float32, 16*512)
	for i := range emb {
		v := make([]float32, 512)
		for k := range v {
			v[k] = rng.Float32()*2 - 1
		}
		emb[i] = request(strconv.Itoa(i), schemas.Tensor{Name: "x", Datatype: "FP32", Shape: []int64{1, 512}, FP32: v})
	}
	for k := range out {
		out[k] = rng.Float32()*2 - 1
	}
	cs = append(cs, benchCase{"embed-16x512-fp32", emb, mustJSON(map[string]any{"model_name": "e", "outputs": []any{
		map[string]any{"name": "y", "datatype": "FP32", "shape": []int{16, 512}, "data": out}}})})
	return cs
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func BenchmarkEncode(b *testing.B) {
	for _, c := range benchCases() {
		b.Run(c.name, func(b *testing.B) {
			g := groups(c.batch, "")[0]
			var buf []byte
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, err = appendRequest(buf[:0], c.batch, g); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(buf)))
		})
		b.Run(c.name+"/encoding-json", func(b *testing.B) {
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				out, err := json.Marshal(stdlibRequest(c.batch))
				if err != nil {
					b.Fatal(err)
				}
				n = len(out)
			}
			b.SetBytes(int64(n))
		})
	}
}

// stdlibRequest is what a client built on encoding/json would marshal: the
// batch's data gathered into one slice per input.
func stdlibRequest(batch []*schemas.Request) any {
	type in struct {
		Name     string  `json:"name"`
		Datatype string  `json:"datatype"`
		Shape    []int64 `json:"shape"`
		Data     any     `json:"data"`
	}
	t := batch[0].Inputs[0]
	var data any
	if t.FP64 != nil {
		var d []float64
		for _, r := range batch {
			d = append(d, r.Inputs[0].FP64...)
		}
		data = d
	} else {
		var d []float32
		for _, r := range batch {
			d = append(d, r.Inputs[0].FP32...)
		}
		data = d
	}
	return map[string]any{"inputs": []in{{Name: t.Name, Datatype: t.Datatype, Shape: []int64{int64(len(batch)), t.Shape[1]}, Data: data}}}
}

func BenchmarkDecode(b *testing.B) {
	for _, c := range benchCases() {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.resp)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := decodeResponse(c.resp); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.name+"/encoding-json", func(b *testing.B) {
			type out struct {
				Name     string          `json:"name"`
				Datatype string          `json:"datatype"`
				Shape    []int64         `json:"shape"`
				Data     json.RawMessage `json:"data"`
			}
			b.SetBytes(int64(len(c.resp)))
			b.ReportAllocs()
			for b.Loop() {
				var r struct {
					Outputs []out `json:"outputs"`
				}
				if err := json.Unmarshal(c.resp, &r); err != nil {
					b.Fatal(err)
				}
				var err error
				if r.Outputs[0].Datatype == "INT64" {
					var d []int64
					err = json.Unmarshal(r.Outputs[0].Data, &d)
				} else {
					var d []float32
					err = json.Unmarshal(r.Outputs[0].Data, &d)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkInfer is a whole call over loopback HTTP/1.1 against a fake
// that answers a canned body (its own cost is small but included).
func BenchmarkInfer(b *testing.B) {
	for _, c := range benchCases() {
		b.Run(c.name, func(b *testing.B) {
			srv := newBenchServer(b, c.resp)
			m, err := New(srv, "bench")
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Infer(b.Context(), c.batch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// newBenchServer answers every call with resp after draining the request,
// without parsing it (the fake's encoding/json would dominate).
func newBenchServer(b *testing.B, resp []byte) string {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", fmt.Sprint(len(resp)))
		w.Write(resp)
	}))
	b.Cleanup(ts.Close)
	return ts.URL
}
