package oip

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/asyncinfer/asyncinfer/schemas"
)

// The binary tensor data extension (Triton's; KServe's Python server reads it
// too): a body is a JSON part, whose length the header gives, followed by
// each tensor's data that has a binary_data_size parameter, in order,
// little-endian and row-major, a BYTES element as a 4-byte length and its
// bytes. It spares both sides formatting and parsing numbers, which for large
// tensors is most of a call's cost (docs/benchmarks.md).

// binaryHeader carries the length of the JSON part of a binary body.
const binaryHeader = "Inference-Header-Content-Length"

// binarySize is the length of t's data in the binary form.
func binarySize(t *schemas.Tensor) (int, error) {
	if t.Raw != nil {
		if elemSize[t.Datatype] == 0 {
			return 0, fmt.Errorf("datatype %s has no raw form", t.Datatype)
		}
		return len(t.Raw), nil
	}
	switch t.Datatype {
	case "FP32":
		return 4 * len(t.FP32), nil
	case "FP64":
		return 8 * len(t.FP64), nil
	case "INT32":
		return 4 * len(t.Int32), nil
	case "INT64":
		return 8 * len(t.Int64), nil
	case "BOOL":
		return len(t.Bool), nil
	case "BYTES":
		n := 0
		for _, e := range t.Bytes {
			if uint64(len(e)) > math.MaxUint32 {
				return 0, fmt.Errorf("a BYTES element of %d bytes", len(e))
			}
			n += 4 + len(e)
		}
		return n, nil
	}
	return 0, nil // no data (zero elements)
}

// appendBinary writes t's data in the binary form.
func appendBinary(b []byte, t *schemas.Tensor) []byte {
	if t.Raw != nil {
		return append(b, t.Raw...)
	}
	le := binary.LittleEndian
	switch t.Datatype {
	case "FP32":
		for _, v := range t.FP32 {
			b = le.AppendUint32(b, math.Float32bits(v))
		}
	case "FP64":
		for _, v := range t.FP64 {
			b = le.AppendUint64(b, math.Float64bits(v))
		}
	case "INT32":
		for _, v := range t.Int32 {
			b = le.AppendUint32(b, uint32(v))
		}
	case "INT64":
		for _, v := range t.Int64 {
			b = le.AppendUint64(b, uint64(v))
		}
	case "BOOL":
		for _, v := range t.Bool {
			if v {
				b = append(b, 1)
			} else {
				b = append(b, 0)
			}
		}
	case "BYTES":
		for _, e := range t.Bytes {
			b = le.AppendUint32(b, uint32(len(e)))
			b = append(b, e...)
		}
	}
	return b
}

// fromBinary sets t's data from its binary form (which belongs to the
// caller's buffer: everything is copied out), in the form a JSON answer
// would have given: typed where schemas has a field, raw otherwise.
func fromBinary(t *schemas.Tensor, raw []byte, count int64) error {
	size := int64(elemSize[t.Datatype])
	if t.Datatype == "BYTES" {
		t.Bytes = make([][]byte, 0, min(count, int64(len(raw))/4))
		for r := raw; len(r) > 0; {
			if len(r) < 4 || int64(le32(r)) > int64(len(r)-4) {
				return fmt.Errorf("binary BYTES data cut short")
			}
			n := le32(r)
			t.Bytes = append(t.Bytes, append(make([]byte, 0, n), r[4:4+n]...))
			r = r[4+n:]
		}
		if int64(len(t.Bytes)) != count {
			return fmt.Errorf("shape %v needs %d elements, binary data has %d", t.Shape, count, len(t.Bytes))
		}
		return nil
	}
	if int64(len(raw)) != count*size {
		return fmt.Errorf("shape %v needs %d bytes of %s, binary data has %d", t.Shape, count*size, t.Datatype, len(raw))
	}
	switch t.Datatype {
	case "FP32":
		t.FP32 = make([]float32, count)
		for i := range t.FP32 {
			t.FP32[i] = math.Float32frombits(le32(raw[4*i:]))
		}
	case "FP64":
		t.FP64 = make([]float64, count)
		for i := range t.FP64 {
			t.FP64[i] = math.Float64frombits(le64(raw[8*i:]))
		}
	case "INT32":
		t.Int32 = make([]int32, count)
		for i := range t.Int32 {
			t.Int32[i] = int32(le32(raw[4*i:]))
		}
	case "INT64":
		t.Int64 = make([]int64, count)
		for i := range t.Int64 {
			t.Int64[i] = int64(le64(raw[8*i:]))
		}
	case "BOOL":
		t.Bool = make([]bool, count)
		for i, c := range raw {
			if c > 1 {
				return fmt.Errorf("binary BOOL element %d is %d, want 0 or 1", i, c)
			}
			t.Bool[i] = c == 1
		}
	default:
		t.Raw = append(make([]byte, 0, len(raw)), raw...)
	}
	return nil
}
