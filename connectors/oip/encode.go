package oip

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/asyncinfer/asyncinfer/schemas"
)

// The request body is written by hand into a reused buffer: encoding/json
// would reflect over every []float32 and allocate per call, and this is the
// hot path. A batch's inputs are concatenated along the first dimension by
// writing each request's elements one after the other into one data array,
// so no tensor is copied.

// errNotJSON marks data that the JSON form cannot carry (a NaN, an
// infinity, a BYTES element that is not UTF-8): the request's fault alone.
var errNotJSON = errors.New("cannot travel in the protocol's JSON form")

// itemError is an encoding failure that belongs to one request of a group.
type itemError struct {
	item int // index in the group
	err  error
}

func (e *itemError) Error() string { return e.err.Error() }

// appendRequest writes the inference request of g (requests reqs[i] for i in
// g.items) into b.
func appendRequest(b []byte, reqs []*schemas.Request, g *group) ([]byte, error) {
	b, _, err := appendRequestForm(b, reqs, g, false)
	return b, err
}

// appendRequestForm writes g's request in the JSON form, or with binary set
// in the binary tensor data extension's: a JSON part whose inputs give their
// binary_data_size instead of data and that asks for binary outputs, then
// every input's data, little-endian, in order. jsonLen is the JSON part's
// length (the Inference-Header-Content-Length).
func appendRequestForm(b []byte, reqs []*schemas.Request, g *group, binary bool) (_ []byte, jsonLen int, _ error) {
	start := len(b)
	first := reqs[g.items[0]]
	b = append(b, `{"inputs":[`...)
	for j := range first.Inputs {
		t := &first.Inputs[j]
		if j > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = appendString(b, t.Name)
		b = append(b, `,"datatype":"`...)
		b = append(b, t.Datatype...)
		b = append(b, `","shape":[`...)
		if len(g.items) == 1 {
			for k, d := range t.Shape {
				if k > 0 {
					b = append(b, ',')
				}
				b = strconv.AppendInt(b, d, 10)
			}
		} else {
			b = strconv.AppendInt(b, g.rows, 10)
			for _, d := range t.Shape[1:] {
				b = append(b, ',')
				b = strconv.AppendInt(b, d, 10)
			}
		}
		if binary {
			size := 0
			for k, i := range g.items {
				n, err := binarySize(&reqs[i].Inputs[j])
				if err != nil {
					return b, 0, &itemError{item: k, err: fmt.Errorf("input %q: %w", t.Name, err)}
				}
				size += n
			}
			b = append(b, `],"parameters":{"binary_data_size":`...)
			b = strconv.AppendInt(b, int64(size), 10)
			b = append(b, "}}"...)
			continue
		}
		b = append(b, `],"data":[`...)
		comma := false
		for k, i := range g.items {
			var err error
			if b, comma, err = appendData(b, &reqs[i].Inputs[j], comma); err != nil {
				return b, 0, &itemError{item: k, err: fmt.Errorf("input %q: %w", t.Name, err)}
			}
		}
		b = append(b, "]}"...)
	}
	b = append(b, ']')
	if len(first.Parameters) > 0 || binary {
		b = append(b, `,"parameters":{`...)
		comma := false
		if binary {
			b = append(b, `"binary_data_output":true`...)
			comma = true
		}
		var err error
		if b, err = appendParams(b, first.Parameters, comma, binary); err != nil {
			return b, 0, &itemError{item: 0, err: err} // shared by the group: the first fails alone, then the next
		}
		b = append(b, '}')
	}
	b = append(b, '}')
	jsonLen = len(b) - start
	if binary {
		for j := range first.Inputs {
			for _, i := range g.items {
				b = appendBinary(b, &reqs[i].Inputs[j])
			}
		}
	}
	return b, jsonLen, nil
}

// appendData writes t's elements, each preceded by a comma when comma is set
// (after elements of an earlier request), and reports whether any was written.
func appendData(b []byte, t *schemas.Tensor, comma bool) ([]byte, bool, error) {
	sep := func() {
		if comma {
			b = append(b, ',')
		}
		comma = true
	}
	if t.Raw != nil {
		size := elemSize[t.Datatype]
		if size == 0 || len(t.Raw)%size != 0 {
			return b, comma, fmt.Errorf("datatype %s: %d raw bytes", t.Datatype, len(t.Raw))
		}
		for r := t.Raw; len(r) > 0; r = r[size:] {
			sep()
			switch t.Datatype {
			case "BOOL":
				b = strconv.AppendBool(b, r[0] != 0)
			case "INT8":
				b = strconv.AppendInt(b, int64(int8(r[0])), 10)
			case "UINT8":
				b = strconv.AppendUint(b, uint64(r[0]), 10)
			case "INT16":
				b = strconv.AppendInt(b, int64(int16(le16(r))), 10)
			case "UINT16":
				b = strconv.AppendUint(b, uint64(le16(r)), 10)
			case "INT32":
				b = strconv.AppendInt(b, int64(int32(le32(r))), 10)
			case "UINT32":
				b = strconv.AppendUint(b, uint64(le32(r)), 10)
			case "INT64":
				b = strconv.AppendInt(b, int64(le64(r)), 10)
			case "UINT64":
				b = strconv.AppendUint(b, le64(r), 10)
			case "FP16":
				var err error
				if b, err = appendFloat(b, float64(halfToFloat(le16(r))), 32); err != nil {
					return b, comma, err
				}
			case "FP32":
				var err error
				if b, err = appendFloat(b, float64(math.Float32frombits(le32(r))), 32); err != nil {
					return b, comma, err
				}
			case "FP64":
				var err error
				if b, err = appendFloat(b, math.Float64frombits(le64(r)), 64); err != nil {
					return b, comma, err
				}
			}
		}
		return b, comma, nil
	}
	var err error
	switch t.Datatype {
	case "FP32":
		for _, v := range t.FP32 {
			sep()
			if b, err = appendFloat(b, float64(v), 32); err != nil {
				return b, comma, err
			}
		}
	case "FP64":
		for _, v := range t.FP64 {
			sep()
			if b, err = appendFloat(b, v, 64); err != nil {
				return b, comma, err
			}
		}
	case "INT32":
		for _, v := range t.Int32 {
			sep()
			b = strconv.AppendInt(b, int64(v), 10)
		}
	case "INT64":
		for _, v := range t.Int64 {
			sep()
			b = strconv.AppendInt(b, v, 10)
		}
	case "BOOL":
		for _, v := range t.Bool {
			sep()
			b = strconv.AppendBool(b, v)
		}
	case "BYTES":
		for _, v := range t.Bytes {
			if !utf8.Valid(v) {
				return b, comma, fmt.Errorf("a BYTES element that is not UTF-8 %w", errNotJSON)
			}
			sep()
			b = appendString(b, v)
		}
	}
	return b, comma, nil
}

func appendFloat(b []byte, f float64, bits int) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return b, fmt.Errorf("%v %w", f, errNotJSON)
	}
	return strconv.AppendFloat(b, f, 'g', -1, bits), nil
}

// appendParams writes the request's parameters as the members of a JSON
// object, keys sorted (the same order as the grouping key), after a comma
// when comma is set; with binary, the request's own binary_data_output is
// left out (ours is written).
func appendParams(b []byte, ps map[string]any, comma, binary bool) ([]byte, error) {
	keys := make([]string, 0, len(ps))
	for k := range ps {
		if !binary || k != "binary_data_output" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if comma {
			b = append(b, ',')
		}
		comma = true
		b = appendString(b, k)
		b = append(b, ':')
		switch v := ps[k].(type) {
		case string:
			b = appendString(b, v)
		case int64:
			b = strconv.AppendInt(b, v, 10)
		case float64:
			var err error
			if b, err = appendFloat(b, v, 64); err != nil {
				return b, fmt.Errorf("parameters[%q]: %w", k, err)
			}
		case bool:
			b = strconv.AppendBool(b, v)
		default:
			return b, fmt.Errorf("parameters[%q] has type %T", k, v)
		}
	}
	return b, nil
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string; s must be UTF-8.
func appendString[S string | []byte](b []byte, s S) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
