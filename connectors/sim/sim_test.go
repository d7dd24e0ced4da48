package sim_test

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/asyncinfer/asyncinfer/connectors/sim"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

func newModel(t *testing.T, cfg sim.Config) *sim.Model {
	t.Helper()
	m, err := sim.New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	return m
}

func rawFP32(vs ...float32) []byte {
	b := make([]byte, 0, 4*len(vs))
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

func rawFP64(vs ...float64) []byte {
	b := make([]byte, 0, 8*len(vs))
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
	}
	return b
}

func rawInt32(vs ...int32) []byte {
	b := make([]byte, 0, 4*len(vs))
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, uint32(v))
	}
	return b
}

func rawInt64(vs ...int64) []byte {
	b := make([]byte, 0, 8*len(vs))
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint64(b, uint64(v))
	}
	return b
}

func request(id string, inputs ...schemas.Tensor) *schemas.Request {
	return &schemas.Request{RequestID: id, Model: "sim", Inputs: inputs}
}

func requests(n int) []*schemas.Request {
	out := make([]*schemas.Request, n)
	for i := range out {
		out[i] = request("r")
	}
	return out
}

func TestInferSum(t *testing.T) {
	tests := []struct {
		name   string
		inputs []schemas.Tensor
		want   float64
	}{
		{"no inputs", nil, 0},
		{"typed FP32", []schemas.Tensor{{Datatype: "FP32", Shape: []int64{3}, FP32: []float32{1.5, 2.25, -0.75}}}, 3},
		{"typed FP64", []schemas.Tensor{{Datatype: "FP64", Shape: []int64{2}, FP64: []float64{1e10, 0.5}}}, 1e10 + 0.5},
		{"typed INT32", []schemas.Tensor{{Datatype: "INT32", Shape: []int64{3}, Int32: []int32{7, -9, 100}}}, 98},
		{"typed INT64", []schemas.Tensor{{Datatype: "INT64", Shape: []int64{2}, Int64: []int64{1 << 40, -3}}}, 1<<40 - 3},
		{"raw FP32", []schemas.Tensor{{Datatype: "FP32", Shape: []int64{4}, Raw: rawFP32(1, 2.5, -4, 0.25)}}, -0.25},
		{"raw FP64", []schemas.Tensor{{Datatype: "FP64", Shape: []int64{2}, Raw: rawFP64(3.125, -1)}}, 2.125},
		{"raw INT32 (negative)", []schemas.Tensor{{Datatype: "INT32", Shape: []int64{2}, Raw: rawInt32(-5, 2)}}, -3},
		{"raw INT64 (negative)", []schemas.Tensor{{Datatype: "INT64", Shape: []int64{2}, Raw: rawInt64(-1<<35, 1)}}, -(1 << 35) + 1},
		{"raw bytes of other datatypes are not summed", []schemas.Tensor{{Datatype: "BYTES", Raw: []byte{1, 2, 3, 4}}}, 0},
		{"trailing partial element ignored", []schemas.Tensor{{Datatype: "FP32", Raw: append(rawFP32(2), 0xff, 0xff)}}, 2},
		{"several tensors, typed and raw", []schemas.Tensor{
			{Name: "a", Datatype: "FP32", Shape: []int64{2}, FP32: []float32{1, 2}},
			{Name: "b", Datatype: "FP32", Shape: []int64{2}, Raw: rawFP32(10, 20)},
			{Name: "c", Datatype: "INT64", Shape: []int64{1}, Int64: []int64{100}},
		}, 133},
	}
	m := newModel(t, sim.Config{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := m.Infer(t.Context(), []*schemas.Request{request("r", tc.inputs...)})
			if err != nil {
				t.Fatalf("Infer: %v", err)
			}
			want := [][]schemas.Tensor{{{Name: "sum", Datatype: "FP64", Shape: []int64{1}, FP64: []float64{tc.want}}}}
			if !reflect.DeepEqual(out, want) {
				t.Fatalf("Infer = %+v, want %+v", out, want)
			}
		})
	}
}

func TestInferDeterministicAndInOrder(t *testing.T) {
	batch := []*schemas.Request{
		request("a", schemas.Tensor{Datatype: "FP32", FP32: []float32{1, 2}}),
		request("b", schemas.Tensor{Datatype: "FP32", Raw: rawFP32(3, 4)}),
		request("c", schemas.Tensor{Datatype: "INT32", Int32: []int32{-10}}),
	}
	m := newModel(t, sim.Config{})
	first, err := m.Infer(t.Context(), batch)
	if err != nil {
		t.Fatalf("Infer: %v", err)
	}
	if len(first) != len(batch) {
		t.Fatalf("Infer returned %d outputs for %d requests", len(first), len(batch))
	}
	for i, want := range []float64{3, 7, -10} {
		if got := first[i][0].FP64[0]; got != want {
			t.Fatalf("output %d = %v, want %v (outputs out of order?)", i, got, want)
		}
	}
	// Same requests, another call, another model, another batch position.
	second, err := newModel(t, sim.Config{Seed: 99}).Infer(t.Context(), batch)
	if err != nil {
		t.Fatalf("Infer: %v", err)
	}
	if !reflect.DeepEqual(first, second) {
		t.Fatalf("same batch, different outputs: %+v and %+v", first, second)
	}
	alone, err := m.Infer(t.Context(), batch[1:2])
	if err != nil {
		t.Fatalf("Infer: %v", err)
	}
	if !reflect.DeepEqual(alone[0], first[1]) {
		t.Fatalf("request alone = %+v, in a batch = %+v", alone[0], first[1])
	}
}

func TestInferPoison(t *testing.T) {
	poison := func(v any) *schemas.Request {
		r := request("p", schemas.Tensor{Datatype: "FP32", FP32: []float32{1}})
		r.Parameters = map[string]any{sim.PoisonParam: v}
		return r
	}
	ok := request("ok", schemas.Tensor{Datatype: "FP32", FP32: []float32{1}})
	tests := []struct {
		name       string
		batch      []*schemas.Request
		wantPoison bool
	}{
		{"poison alone", []*schemas.Request{poison(true)}, true},
		{"poison last in a batch", []*schemas.Request{ok, ok, poison(true)}, true},
		{"poison first in a batch", []*schemas.Request{poison(true), ok}, true},
		{"poison false", []*schemas.Request{poison(false), ok}, false},
		{"poison as a string is not poison", []*schemas.Request{poison("true")}, false},
		{"other parameters", []*schemas.Request{{RequestID: "x", Parameters: map[string]any{"temperature": 0.5}}}, false},
	}
	m := newModel(t, sim.Config{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := m.Infer(t.Context(), tc.batch)
			if !tc.wantPoison {
				if err != nil || len(out) != len(tc.batch) {
					t.Fatalf("Infer = %d outputs, %v; want %d outputs", len(out), err, len(tc.batch))
				}
				return
			}
			if err == nil {
				t.Fatal("batch with a poison input succeeded")
			}
			if !errors.Is(err, sim.ErrPoison) {
				t.Fatalf("error %v is not ErrPoison", err)
			}
			if pipeline.Retryable(err) {
				t.Fatalf("poison error %v is retryable: it would be retried forever instead of split", err)
			}
			if out != nil {
				t.Fatalf("failed batch returned outputs %+v", out)
			}
		})
	}
}

func TestInferErrorRate(t *testing.T) {
	const calls = 2000
	tests := []struct {
		name string
		rate float64
		// Bounds on failures out of calls: loose enough for any seed,
		// tight enough to catch a rate that is ignored or inverted.
		min, max int
	}{
		{"no errors", 0, 0, 0},
		{"10%", 0.1, 100, 320},
		{"50%", 0.5, 800, 1200},
		{"90%", 0.9, 1680, 1900},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pattern := func(seed uint64) []bool {
				m := newModel(t, sim.Config{ErrorRate: tc.rate, Seed: seed})
				var fails []bool
				for range calls {
					out, err := m.Infer(t.Context(), []*schemas.Request{request("r")})
					if err != nil {
						if !pipeline.Retryable(err) {
							t.Fatalf("injected error %v is not retryable", err)
						}
						if !errors.Is(err, sim.ErrUnavailable) {
							t.Fatalf("injected error %v is not ErrUnavailable", err)
						}
						if out != nil {
							t.Fatalf("failed call returned outputs %+v", out)
						}
					}
					fails = append(fails, err != nil)
				}
				return fails
			}
			a := pattern(7)
			n := 0
			for _, f := range a {
				if f {
					n++
				}
			}
			if n < tc.min || n > tc.max {
				t.Fatalf("%d of %d calls failed at rate %v, want %d..%d", n, calls, tc.rate, tc.min, tc.max)
			}
			if b := pattern(7); !reflect.DeepEqual(a, b) {
				t.Fatal("same seed, different failure pattern")
			}
		})
	}
}

func TestInferOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newModel(t, sim.Config{Outages: []sim.Outage{
			{Start: time.Second, Duration: 2 * time.Second},
			{Start: 10 * time.Second, Duration: time.Second},
		}})
		start := time.Now()
		steps := []struct {
			at   time.Duration
			down bool
		}{
			{0, false},
			{time.Second - time.Nanosecond, false},
			{time.Second, true},
			{2 * time.Second, true},
			{3*time.Second - time.Nanosecond, true},
			{3 * time.Second, false},
			{9 * time.Second, false},
			{10 * time.Second, true},
			{11 * time.Second, false},
			{time.Hour, false},
		}
		for _, s := range steps {
			time.Sleep(time.Until(start.Add(s.at)))
			out, err := m.Infer(t.Context(), []*schemas.Request{request("r")})
			if !s.down {
				if err != nil || len(out) != 1 {
					t.Fatalf("at %v: Infer = %d outputs, %v; want success", s.at, len(out), err)
				}
				continue
			}
			if err == nil {
				t.Fatalf("at %v: Infer succeeded inside an outage", s.at)
			}
			if !pipeline.Retryable(err) || !errors.Is(err, sim.ErrUnavailable) {
				t.Fatalf("at %v: outage error %v, want a retryable ErrUnavailable", s.at, err)
			}
		}
	})
}

func TestInferCost(t *testing.T) {
	tests := []struct {
		name string
		cfg  sim.Config
		n    int
		want time.Duration
	}{
		{"free", sim.Config{}, 5, 0},
		{"fixed only", sim.Config{Fixed: 10 * time.Millisecond}, 5, 10 * time.Millisecond},
		{"per item only", sim.Config{PerItem: 2 * time.Millisecond}, 5, 10 * time.Millisecond},
		{"a + c·b", sim.Config{Fixed: 10 * time.Millisecond, PerItem: 2 * time.Millisecond}, 3, 16 * time.Millisecond},
		{"empty batch pays the fixed cost", sim.Config{Fixed: 10 * time.Millisecond, PerItem: time.Second}, 0, 10 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := newModel(t, tc.cfg)
				if got := m.Cost(tc.n); got != tc.want {
					t.Fatalf("Cost(%d) = %v, want %v", tc.n, got, tc.want)
				}
				start := time.Now()
				if _, err := m.Infer(t.Context(), requests(tc.n)); err != nil {
					t.Fatalf("Infer: %v", err)
				}
				if got := time.Since(start); got != tc.want {
					t.Fatalf("Infer took %v of fake time, want %v", got, tc.want)
				}
			})
		})
	}
}

func TestInferCancelled(t *testing.T) {
	tests := []struct {
		name string
		cfg  sim.Config
	}{
		{"sleeping", sim.Config{Fixed: time.Hour}},
		{"spinning", sim.Config{Fixed: time.Hour, Spin: true}},
		{"free", sim.Config{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newModel(t, tc.cfg)
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			_, err := m.Infer(ctx, []*schemas.Request{request("r")})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Infer on a cancelled context = %v, want context.Canceled", err)
			}
			if pipeline.Retryable(err) {
				t.Fatalf("cancellation %v is retryable", err)
			}
		})
	}
}

func TestCounters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newModel(t, sim.Config{Outages: []sim.Outage{{Start: time.Second, Duration: time.Second}}})
		for _, n := range []int{2, 0, 5} {
			if _, err := m.Infer(t.Context(), requests(n)); err != nil {
				t.Fatalf("Infer: %v", err)
			}
		}
		if m.Calls() != 3 || m.Items() != 7 {
			t.Fatalf("Calls, Items = %d, %d; want 3, 7", m.Calls(), m.Items())
		}
		// Failed calls were made too.
		time.Sleep(time.Second)
		if _, err := m.Infer(t.Context(), requests(4)); err == nil {
			t.Fatal("Infer succeeded inside an outage")
		}
		if m.Calls() != 4 || m.Items() != 11 {
			t.Fatalf("Calls, Items = %d, %d after a failed call; want 4, 11", m.Calls(), m.Items())
		}
	})
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     sim.Config
		wantErr []string // substrings of the error; nil: valid
	}{
		{"zero", sim.Config{}, nil},
		{"full", sim.Config{Fixed: time.Millisecond, PerItem: time.Microsecond, Spin: true, ErrorRate: 0.999,
			Outages: []sim.Outage{{Start: 0, Duration: time.Second}}, Seed: 3}, nil},
		{"negative fixed cost", sim.Config{Fixed: -1}, []string{"must not be negative"}},
		{"negative per-item cost", sim.Config{PerItem: -time.Millisecond}, []string{"must not be negative"}},
		{"negative error rate", sim.Config{ErrorRate: -0.1}, []string{"error rate"}},
		{"error rate 1", sim.Config{ErrorRate: 1}, []string{"error rate"}},
		{"negative outage start", sim.Config{Outages: []sim.Outage{{Start: -time.Second, Duration: time.Second}}}, []string{"outage 0"}},
		{"empty outage", sim.Config{Outages: []sim.Outage{{Start: time.Second}}}, []string{"outage 0"}},
		{"second outage bad", sim.Config{Outages: []sim.Outage{{Duration: 1}, {Duration: -1}}}, []string{"outage 1"}},
		{"every error reported", sim.Config{Fixed: -1, ErrorRate: 2, Outages: []sim.Outage{{}}},
			[]string{"must not be negative", "error rate", "outage 0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			_, nerr := sim.New(tc.cfg)
			if tc.wantErr == nil {
				if err != nil || nerr != nil {
					t.Fatalf("Validate = %v, New = %v; want valid", err, nerr)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate = nil, want an error")
			}
			if nerr == nil {
				t.Fatal("New accepted an invalid config")
			}
			if !strings.HasPrefix(err.Error(), "sim: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			for _, s := range tc.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}
