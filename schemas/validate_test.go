package schemas

import (
	"strings"
	"testing"
)

// validateCase is a request and what Validate says of it: "" for valid.
type validateCase struct {
	name string
	r    *Request
	want string
}

// validateCases are every reason Validate knows, TestHeadInvalid holds the
// head decoder to them too.
func validateCases() []validateCase {
	// with returns a valid request changed by f.
	with := func(f func(r *Request)) *Request {
		r := fullRequest()
		f(r)
		return r
	}
	input := func(tt Tensor) *Request {
		return &Request{RequestID: "r", Model: "m", Inputs: []Tensor{{Name: "a", Datatype: "BOOL", Shape: []int64{1}, Bool: []bool{true}}, tt}}
	}
	many := func(names ...string) *Request { // more inputs than nameSet keeps inline
		r := &Request{RequestID: "r", Model: "m"}
		for _, n := range names {
			r.Inputs = append(r.Inputs, Tensor{Name: n, Datatype: "INT32", Shape: []int64{1}, Int32: []int32{7}})
		}
		return r
	}
	return []validateCase{
		{"full", fullRequest(), ""},
		{"minimal", minimalRequest(), ""},
		{"scalar", input(Tensor{Name: "x", Datatype: "FP64", FP64: []float64{1}}), ""},
		{"zero elements, no data", input(Tensor{Name: "x", Datatype: "FP32", Shape: []int64{0, 3}}), ""},
		{"zero elements, empty raw", input(Tensor{Name: "x", Datatype: "INT32", Shape: []int64{4, 0}, Raw: []byte{}}), ""},
		{"raw INT64", input(Tensor{Name: "x", Datatype: "INT64", Shape: []int64{2}, Raw: make([]byte, 16)}), ""},
		{"raw BOOL", input(Tensor{Name: "x", Datatype: "BOOL", Shape: []int64{3}, Raw: []byte{0, 1, 1}}), ""},
		{"raw FP16", input(Tensor{Name: "x", Datatype: "FP16", Shape: []int64{2}, Raw: []byte{0, 0x3c, 0xff, 0x7f}}), ""},
		{"raw INT8", input(Tensor{Name: "x", Datatype: "INT8", Shape: []int64{3}, Raw: []byte{0x80, 0, 0x7f}}), ""},
		{"raw INT16", input(Tensor{Name: "x", Datatype: "INT16", Shape: []int64{1}, Raw: []byte{1, 2}}), ""},
		{"raw UINT8", input(Tensor{Name: "x", Datatype: "UINT8", Shape: []int64{2}, Raw: []byte{0, 255}}), ""},
		{"raw UINT16", input(Tensor{Name: "x", Datatype: "UINT16", Shape: []int64{1}, Raw: []byte{1, 2}}), ""},
		{"raw UINT32", input(Tensor{Name: "x", Datatype: "UINT32", Shape: []int64{1}, Raw: make([]byte, 4)}), ""},
		{"raw UINT64", input(Tensor{Name: "x", Datatype: "UINT64", Shape: []int64{2, 1}, Raw: make([]byte, 16)}), ""},
		{"BYTES", input(Tensor{Name: "x", Datatype: "BYTES", Shape: []int64{2}, Bytes: [][]byte{{0xff}, nil}}), ""},

		{"nil", nil, "nil request"},
		{"no request id", with(func(r *Request) { r.RequestID = "" }), "request_id is empty"},
		{"no model", with(func(r *Request) { r.Model = "" }), "model is empty"},
		{"request id not UTF-8", with(func(r *Request) { r.RequestID = "a\xff" }), "request_id is not valid UTF-8"},
		{"reply topic not UTF-8", with(func(r *Request) { r.ReplyTopic = "\xc3" }), "reply_topic is not valid UTF-8"},
		{"negative deadline", with(func(r *Request) { r.DeadlineMs = -1 }), "deadline_ms -1 is negative"},
		{"negative creation", with(func(r *Request) { r.CreatedAtMs = -5 }), "created_at_ms -5 is negative"},
		{"parameter of type int", with(func(r *Request) { r.Parameters["n"] = 3 }), `parameters["n"] has type int, want string, int64, float64 or bool`},
		{"parameter nil", with(func(r *Request) { r.Parameters["n"] = nil }), `parameters["n"] has type <nil>`},
		{"parameter not UTF-8", with(func(r *Request) { r.Parameters["s"] = "\xff" }), `parameters["s"] is not valid UTF-8`},
		{"parameter key not UTF-8", with(func(r *Request) { r.Parameters["\xff"] = true }), `parameters: key "\xff" is not valid UTF-8`},
		{"unnamed input", input(Tensor{Datatype: "FP32", Shape: []int64{1}, FP32: []float32{1}}), "inputs[1]: name is empty"},
		{"input name not UTF-8", input(Tensor{Name: "\xff", Datatype: "FP32"}), `inputs[1] "\xff": name is not valid UTF-8`},
		{"repeated name", input(Tensor{Name: "a", Datatype: "FP32", Shape: []int64{1}, FP32: []float32{1}}), `inputs[1] "a": name already used by inputs[0]`},
		{"unknown datatype", input(Tensor{Name: "x", Datatype: "FP8", Shape: []int64{1}, Raw: []byte{0}}), `inputs[1] "x": unknown datatype "FP8", want BOOL, INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, FP16, FP32, FP64 or BYTES`},
		{"raw-only datatype in a typed form", input(Tensor{Name: "x", Datatype: "INT8", Shape: []int64{1}, Int32: []int32{1}}), `inputs[1] "x": datatype INT8 carries its data in raw_contents only, not int_contents`},
		{"short raw FP16", input(Tensor{Name: "x", Datatype: "FP16", Shape: []int64{2}, Raw: make([]byte, 3)}), `inputs[1] "x": shape [2] needs 2 elements of 2 bytes in raw_contents, has 3 bytes`},
		{"short raw UINT64", input(Tensor{Name: "x", Datatype: "UINT64", Shape: []int64{1}, Raw: make([]byte, 4)}), `shape [1] needs 1 elements of 8 bytes in raw_contents, has 4 bytes`},
		{"lowercase datatype", input(Tensor{Name: "x", Datatype: "fp32"}), `unknown datatype "fp32"`},
		{"negative dimension", input(Tensor{Name: "x", Datatype: "FP32", Shape: []int64{2, -3}}), `inputs[1] "x": shape [2 -3] has a negative dimension`},
		{"overflowing shape", input(Tensor{Name: "x", Datatype: "FP32", Shape: []int64{1 << 40, 1 << 40}}), `inputs[1] "x": shape [1099511627776 1099511627776] has too many elements`},
		{"too few elements", input(Tensor{Name: "x", Datatype: "FP32", Shape: []int64{2, 3}, FP32: make([]float32, 5)}), `inputs[1] "x": shape [2 3] needs 6 elements, has 5`},
		{"too many elements", input(Tensor{Name: "x", Datatype: "INT32", Shape: []int64{2}, Int32: make([]int32, 3)}), `shape [2] needs 2 elements, has 3`},
		{"no data", input(Tensor{Name: "x", Datatype: "INT64", Shape: []int64{2, 2}}), `inputs[1] "x": shape [2 2] needs 4 elements, has 0`},
		{"two forms", input(Tensor{Name: "x", Datatype: "FP32", Shape: []int64{1}, FP32: []float32{1}, Raw: make([]byte, 4)}), `inputs[1] "x": more than one data form set: fp32_contents, raw_contents`},
		{"two typed forms", input(Tensor{Name: "x", Datatype: "FP32", Shape: []int64{1}, FP32: []float32{1}, FP64: []float64{1}}), `more than one data form set: fp32_contents, fp64_contents`},
		{"form of another type", input(Tensor{Name: "x", Datatype: "FP32", Shape: []int64{1}, FP64: []float64{1}}), `inputs[1] "x": datatype FP32 carries its data in fp32_contents or raw_contents, not fp64_contents`},
		{"BYTES in another form", input(Tensor{Name: "x", Datatype: "BYTES", Shape: []int64{1}, Int32: []int32{1}}), `datatype BYTES carries its data in bytes_contents, not int_contents`},
		{"BYTES as raw", input(Tensor{Name: "x", Datatype: "BYTES", Shape: []int64{1}, Raw: []byte{1}}), `inputs[1] "x": datatype BYTES cannot use raw_contents; use bytes_contents`},
		{"short raw", input(Tensor{Name: "x", Datatype: "FP64", Shape: []int64{2}, Raw: make([]byte, 15)}), `inputs[1] "x": shape [2] needs 2 elements of 8 bytes in raw_contents, has 15 bytes`},
		{"raw for zero elements", input(Tensor{Name: "x", Datatype: "FP32", Shape: []int64{0}, Raw: []byte{1}}), `shape [0] needs 0 elements of 4 bytes in raw_contents, has 1 bytes`},
		{"raw BOOL not 0 or 1", input(Tensor{Name: "x", Datatype: "BOOL", Shape: []int64{2}, Raw: []byte{1, 2}}), `inputs[1] "x": raw_contents[1] is 2, want 0 or 1 for BOOL`},
		{"two invalid parameter keys", with(func(r *Request) { r.Parameters["\xffb"] = "x"; r.Parameters["\xffa"] = "y" }),
			`parameters: key "\xffa" is not valid UTF-8`}, // the smallest key, whatever the map's order
		{"two invalid parameter values", with(func(r *Request) { r.Parameters["y"] = "\xfe"; r.Parameters["x"] = "\xff" }),
			`parameters["x"] is not valid UTF-8`},
		{"many inputs", many("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"), ""},
		{"many inputs, one repeated", many("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "c"), `inputs[10] "c": name already used by inputs[2]`},
		{"many dimensions", input(Tensor{Name: "x", Datatype: "INT64", Shape: []int64{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2}, Int64: []int64{1, 2}}), ""},
		{"many dimensions, too few elements", input(Tensor{Name: "x", Datatype: "INT64", Shape: []int64{1, 1, 1, 1, 1, 1, 1, 1, 1, 3}, Int64: []int64{1, 2}}),
			`inputs[1] "x": shape [1 1 1 1 1 1 1 1 1 3] needs 3 elements, has 2`},
		{"raw and two typed forms", input(Tensor{Name: "x", Datatype: "INT64", Shape: []int64{1}, Int64: []int64{1}, Bool: []bool{true}, Raw: make([]byte, 8)}),
			`more than one data form set: int64_contents, bool_contents, raw_contents`},
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range validateCases() {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.r.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("want valid, got %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("want an error containing %q, got none", tc.want)
			case tc.want != "" && (!strings.HasPrefix(err.Error(), "schemas: invalid request: ") || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %q, want one containing %q", err, tc.want)
			}
		})
	}
}
