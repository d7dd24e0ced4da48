package oip

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
	"unsafe"

	"github.com/asyncinfer/asyncinfer/schemas"
)

// The response is read by a small hand-written JSON reader: it walks the
// body once, parses the data arrays straight into typed slices (no
// []interface{}, no RawMessage copies), and keeps nothing that points into
// the body, so the body's buffer is reused for the next call.

// errSyntax is a response that is not the JSON the protocol describes.
var errSyntax = errors.New("malformed JSON")

// maxDepth bounds the nesting of data arrays (row-major nested lists are
// allowed by the protocol) and of skipped values.
const maxDepth = 64

type reader struct {
	b []byte
	i int
}

func (r *reader) fail(what string) error {
	return fmt.Errorf("%w: %s at byte %d", errSyntax, what, r.i)
}

func (r *reader) ws() {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

func (r *reader) peek() byte {
	r.ws()
	if r.i < len(r.b) {
		return r.b[r.i]
	}
	return 0
}

func (r *reader) eat(c byte) bool {
	if r.peek() == c {
		r.i++
		return true
	}
	return false
}

// rawString reads a string and returns its bytes between the quotes (still
// escaped when esc) as a sub-slice of the body.
func (r *reader) rawString() (s []byte, esc bool, err error) {
	if !r.eat('"') {
		return nil, false, r.fail("want a string")
	}
	start := r.i
	for r.i < len(r.b) {
		switch c := r.b[r.i]; {
		case c == '"':
			s = r.b[start:r.i]
			r.i++
			return s, esc, nil
		case c == '\\':
			esc = true
			r.i += 2
		case c < 0x20:
			return nil, false, r.fail("control character in a string")
		default:
			r.i++
		}
	}
	return nil, false, r.fail("unterminated string")
}

// string reads a string into a new Go string, which must be UTF-8 (names
// travel on as Avro strings).
func (r *reader) string() (string, error) {
	start := r.i
	s, esc, err := r.rawString()
	if err == nil && !utf8.Valid(s) {
		return "", r.fail("a string that is not UTF-8")
	}
	if err != nil || !esc {
		return string(s), err
	}
	r.ws()
	var out string
	if err := json.Unmarshal(r.b[start:r.i], &out); err != nil { // escapes are rare: the slow path
		return "", r.fail("bad escape")
	}
	return out, nil
}

// bytes reads a string into a new []byte (a BYTES element).
func (r *reader) bytes() ([]byte, error) {
	s, esc, err := r.rawString()
	if err != nil || !esc {
		return append(make([]byte, 0, len(s)), s...), err
	}
	out, err := r.unescape(s)
	return []byte(out), err
}

func (r *reader) unescape(s []byte) (string, error) {
	q := make([]byte, 0, len(s)+2)
	q = append(append(append(q, '"'), s...), '"')
	var out string
	if err := json.Unmarshal(q, &out); err != nil {
		return "", r.fail("bad escape")
	}
	return out, nil
}

// number reads a number token.
func (r *reader) number() ([]byte, error) {
	r.ws()
	start := r.i
	for r.i < len(r.b) {
		switch c := r.b[r.i]; {
		case c >= '0' && c <= '9', c == '-', c == '+', c == '.', c == 'e', c == 'E':
			r.i++
			continue
		}
		break
	}
	if r.i == start {
		return nil, r.fail("want a number")
	}
	return r.b[start:r.i], nil
}

func (r *reader) literal(word string) bool {
	r.ws()
	if len(r.b)-r.i >= len(word) && string(r.b[r.i:r.i+len(word)]) == word {
		r.i += len(word)
		return true
	}
	return false
}

// object calls each for every key, positioned at its value, which each must
// consume.
func (r *reader) object(each func(key []byte) error) error {
	if !r.eat('{') {
		return r.fail("want an object")
	}
	if r.eat('}') {
		return nil
	}
	for {
		k, esc, err := r.rawString()
		if err != nil {
			return err
		}
		if esc {
			u, err := r.unescape(k)
			if err != nil {
				return err
			}
			k = []byte(u)
		}
		if !r.eat(':') {
			return r.fail("want ':'")
		}
		if err := each(k); err != nil {
			return err
		}
		if r.eat(',') {
			continue
		}
		if r.eat('}') {
			return nil
		}
		return r.fail("want ',' or '}'")
	}
}

// array calls each for every element, positioned at it.
func (r *reader) array(each func() error) error {
	if !r.eat('[') {
		return r.fail("want an array")
	}
	if r.eat(']') {
		return nil
	}
	for {
		if err := each(); err != nil {
			return err
		}
		if r.eat(',') {
			continue
		}
		if r.eat(']') {
			return nil
		}
		return r.fail("want ',' or ']'")
	}
}

// flat calls each for every leaf of a possibly nested array.
func (r *reader) flat(depth int, each func() error) error {
	if depth > maxDepth {
		return r.fail("arrays nested too deep")
	}
	return r.array(func() error {
		if r.peek() == '[' {
			return r.flat(depth+1, each)
		}
		return each()
	})
}

// skip consumes any value.
func (r *reader) skip(depth int) error {
	if depth > maxDepth {
		return r.fail("values nested too deep")
	}
	switch r.peek() {
	case '{':
		return r.object(func([]byte) error { return r.skip(depth + 1) })
	case '[':
		return r.array(func() error { return r.skip(depth + 1) })
	case '"':
		_, _, err := r.rawString()
		return err
	case 't':
		if r.literal("true") {
			return nil
		}
	case 'f':
		if r.literal("false") {
			return nil
		}
	case 'n':
		if r.literal("null") {
			return nil
		}
	default:
		_, err := r.number()
		return err
	}
	return r.fail("want a value")
}

func (r *reader) int64() (int64, error) {
	tok, err := r.number()
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(str(tok), 10, 64)
	if err != nil {
		return 0, r.fail("want an integer")
	}
	return v, nil
}

// str views b as a string without copying, for strconv, which keeps nothing.
func str(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// output is one decoded output tensor of a call, before it is split.
type output struct {
	t          schemas.Tensor
	binarySize int64 // binary tensor extension: bytes of its data after the JSON header; -1: in "data"
}

// decodeResponse reads an inference response: its outputs, each with its
// data parsed by datatype into the form schemas.Tensor carries (typed fields
// where schemas has one, little-endian Raw otherwise).
func decodeResponse(body []byte) ([]output, error) { return decodeBody(body, -1) }

// decodeBody reads an answer whose first jsonLen bytes are JSON and the rest
// the binary data of the outputs that give a binary_data_size, in order
// (the binary tensor data extension); jsonLen < 0: all JSON.
func decodeBody(body []byte, jsonLen int) ([]output, error) {
	var bin []byte
	if jsonLen >= 0 {
		if jsonLen > len(body) {
			return nil, fmt.Errorf("%w: %s %d is beyond the body's %d bytes", errSyntax, binaryHeader, jsonLen, len(body))
		}
		body, bin = body[:jsonLen], body[jsonLen:]
	}
	outs, err := decodeJSON(body)
	if err != nil {
		return nil, err
	}
	for k := range outs {
		o := &outs[k]
		if o.binarySize < 0 {
			continue
		}
		if jsonLen < 0 || o.binarySize > int64(len(bin)) {
			return nil, fmt.Errorf("output %q: binary_data_size %d, but the body has %d bytes of binary data left", o.t.Name, o.binarySize, len(bin))
		}
		count, _ := elements(o.t.Shape) // checked by output
		if err := fromBinary(&o.t, bin[:o.binarySize], count); err != nil {
			return nil, fmt.Errorf("output %q: %w", o.t.Name, err)
		}
		bin = bin[o.binarySize:]
	}
	if len(bin) > 0 {
		return nil, fmt.Errorf("%w: %d bytes of binary data belong to no output", errSyntax, len(bin))
	}
	return outs, nil
}

func decodeJSON(body []byte) ([]output, error) {
	r := &reader{b: body}
	var outs []output
	err := r.object(func(k []byte) error {
		if string(k) != "outputs" {
			return r.skip(0)
		}
		return r.array(func() error {
			o, err := r.output()
			outs = append(outs, o)
			return err
		})
	})
	if err == nil && r.peek() != 0 {
		err = r.fail("data after the response")
	}
	if err != nil {
		return nil, err
	}
	return outs, nil
}

func (r *reader) output() (output, error) {
	o := output{binarySize: -1}
	dataAt := -1
	err := r.object(func(k []byte) error {
		var err error
		switch string(k) {
		case "name":
			o.t.Name, err = r.string()
		case "datatype":
			o.t.Datatype, err = r.string()
		case "shape":
			err = r.array(func() error {
				d, err := r.int64()
				o.t.Shape = append(o.t.Shape, d)
				return err
			})
		case "parameters":
			if r.literal("null") { // KServe's Python server writes null
				return nil
			}
			err = r.object(func(k []byte) error {
				if string(k) != "binary_data_size" {
					return r.skip(0)
				}
				var err error
				o.binarySize, err = r.int64()
				return err
			})
		case "data":
			dataAt = r.i // the datatype may come later: parse once the object is read
			err = r.skip(0)
		default:
			err = r.skip(0)
		}
		return err
	})
	if err != nil {
		return o, err
	}
	if _, ok := elemSize[o.t.Datatype]; !ok {
		return o, fmt.Errorf("output %q: unknown datatype %q", o.t.Name, o.t.Datatype)
	}
	count, err := elements(o.t.Shape)
	if err != nil {
		return o, fmt.Errorf("output %q: %w", o.t.Name, err)
	}
	if dataAt >= 0 && o.binarySize >= 0 {
		return o, fmt.Errorf("output %q: both data and binary_data_size", o.t.Name)
	}
	if dataAt < 0 {
		if o.binarySize < 0 && count > 0 {
			return o, fmt.Errorf("output %q: no data", o.t.Name)
		}
		return o, nil
	}
	end := r.i
	r.i = dataAt
	n, err := r.data(&o.t, count)
	r.i = end
	if err != nil {
		return o, fmt.Errorf("output %q: %w", o.t.Name, err)
	}
	if int64(n) != count {
		return o, fmt.Errorf("output %q: shape %v needs %d elements, data has %d", o.t.Name, o.t.Shape, count, n)
	}
	return o, nil
}

// elements is the element count of a shape.
func elements(shape []int64) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 || d != 0 && n > math.MaxInt64/d {
			return 0, fmt.Errorf("shape %v is not a tensor's", shape)
		}
		n *= d
	}
	return n, nil
}

// data parses a data array into t by its datatype and returns the element
// count.
func (r *reader) data(t *schemas.Tensor, count int64) (int, error) {
	// Sized by the shape, but never beyond what the body could hold (a
	// hostile shape must not allocate gigabytes).
	c := int(min(count, int64(len(r.b)-r.i)/2+1))
	size := elemSize[t.Datatype]
	n := 0
	var each func() error
	switch t.Datatype {
	case "FP32":
		t.FP32 = make([]float32, 0, c)
		each = func() error {
			v, err := r.float(32)
			t.FP32 = append(t.FP32, float32(v))
			return err
		}
	case "FP64":
		t.FP64 = make([]float64, 0, c)
		each = func() error {
			v, err := r.float(64)
			t.FP64 = append(t.FP64, v)
			return err
		}
	case "INT32":
		t.Int32 = make([]int32, 0, c)
		each = func() error {
			v, err := r.integer(32)
			t.Int32 = append(t.Int32, int32(v))
			return err
		}
	case "INT64":
		t.Int64 = make([]int64, 0, c)
		each = func() error {
			v, err := r.integer(64)
			t.Int64 = append(t.Int64, v)
			return err
		}
	case "BOOL":
		t.Bool = make([]bool, 0, c)
		each = func() error {
			switch {
			case r.literal("true"):
				t.Bool = append(t.Bool, true)
			case r.literal("false"):
				t.Bool = append(t.Bool, false)
			default:
				return r.fail("want true or false")
			}
			return nil
		}
	case "BYTES":
		t.Bytes = make([][]byte, 0, c)
		each = func() error {
			v, err := r.bytes()
			t.Bytes = append(t.Bytes, v)
			return err
		}
	default: // raw little-endian
		t.Raw = make([]byte, 0, c*size)
		each = func() error {
			var err error
			t.Raw, err = r.appendRaw(t.Raw, t.Datatype)
			return err
		}
	}
	err := r.flat(0, func() error {
		n++
		return each()
	})
	if t.Raw != nil {
		n = len(t.Raw) / size
	}
	return n, err
}

func (r *reader) float(bits int) (float64, error) {
	tok, err := r.number()
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseFloat(str(tok), bits)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, r.fail("want a number")
	}
	return v, nil
}

func (r *reader) integer(bits int) (int64, error) {
	tok, err := r.number()
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(str(tok), 10, bits)
	if err != nil {
		return 0, r.fail(fmt.Sprintf("want an INT%d", bits))
	}
	return v, nil
}

func (r *reader) unsigned(bits int) (uint64, error) {
	tok, err := r.number()
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(str(tok), 10, bits)
	if err != nil {
		return 0, r.fail(fmt.Sprintf("want a UINT%d", bits))
	}
	return v, nil
}

// appendRaw parses one element of a datatype schemas carries only raw.
func (r *reader) appendRaw(b []byte, dt string) ([]byte, error) {
	switch dt {
	case "INT8", "INT16":
		bits := 8 * elemSize[dt]
		v, err := r.integer(bits)
		if err != nil {
			return b, err
		}
		if bits == 8 {
			return append(b, byte(v)), nil
		}
		return append(b, byte(v), byte(v>>8)), nil
	case "UINT8", "UINT16", "UINT32", "UINT64":
		size := elemSize[dt]
		v, err := r.unsigned(8 * size)
		if err != nil {
			return b, err
		}
		for k := 0; k < size; k++ {
			b = append(b, byte(v>>(8*k)))
		}
		return b, nil
	case "FP16":
		v, err := r.float(32)
		if err != nil {
			return b, err
		}
		h := floatToHalf(v)
		return append(b, byte(h), byte(h>>8)), nil
	}
	return b, fmt.Errorf("datatype %s has no raw form", dt)
}
