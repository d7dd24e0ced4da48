package main

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/asyncinfer/asyncinfer/schemas"
)

// NaN and infinite outputs keep their data (JSON numbers cannot hold them:
// they were dropped, leaving a tensor without data), and read back the same.
func TestTensorJSONNonFinite(t *testing.T) {
	in := schemas.Tensor{Name: "y", Datatype: "FP64", Shape: []int64{4}, FP64: []float64{1.5, math.NaN(), math.Inf(1), math.Inf(-1)}}
	b, err := json.Marshal(tensorToJSON(in))
	if err != nil {
		t.Fatal(err)
	}
	if want := `"data":[1.5,"NaN","Infinity","-Infinity"]`; !strings.Contains(string(b), want) {
		t.Fatalf("%s, want it to contain %s", b, want)
	}
	var tj tensorJSON
	if err := json.Unmarshal(b, &tj); err != nil {
		t.Fatal(err)
	}
	out, err := tj.tensor()
	if err != nil {
		t.Fatal(err)
	}
	if len(out.FP64) != 4 || out.FP64[0] != 1.5 || !math.IsNaN(out.FP64[1]) || !math.IsInf(out.FP64[2], 1) || !math.IsInf(out.FP64[3], -1) {
		t.Fatalf("read back %v", out.FP64)
	}
	b32, _ := json.Marshal(tensorToJSON(schemas.Tensor{Name: "z", Datatype: "FP32", Shape: []int64{1}, FP32: []float32{0.1}}))
	if !strings.Contains(string(b32), `"data":[0.1]`) {
		t.Errorf("FP32 written as %s, want 0.1", b32)
	}
}
