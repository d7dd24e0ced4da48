package schemas

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"unicode/utf8"
)

// Validation lives here only. Request.Validate feeds it a decoded request;
// DecodeRequestHead feeds it the same facts read from the wire without
// decoding the tensors (a tensorSummary of views into the message, each
// parameter as read): one set of rules and words, so that a head's Invalid
// is what Validate says of the full request.

// elementSize is the bytes per element of each datatype's raw form; 0 for
// BYTES, which has none. The Open Inference Protocol's other datatypes
// (INT8, INT16, UINT8-UINT64, FP16) have no typed field in the frozen Avro
// schema: they travel in raw_contents only.
var elementSize = map[string]int{
	"FP32":   4,
	"FP64":   8,
	"INT32":  4,
	"INT64":  8,
	"BOOL":   1,
	"BYTES":  0,
	"INT8":   1,
	"INT16":  2,
	"UINT8":  1,
	"UINT16": 2,
	"UINT32": 4,
	"UINT64": 8,
	"FP16":   2,
}

// forms are the tensor's typed data fields, in the order of tensorSummary's
// counts (and of the schema).
var forms = [...]string{"fp32_contents", "fp64_contents", "int_contents", "int64_contents", "bool_contents", "bytes_contents"}

// typedForm is the index in forms of the field that carries each datatype's
// data; the protocol's other datatypes (INT8, UINT16, FP16, …) travel in
// raw_contents only.
var typedForm = map[string]int{"FP32": 0, "FP64": 1, "INT32": 2, "INT64": 3, "BOOL": 4, "BYTES": 5}

// datatypes lists the known datatypes for error messages.
const datatypes = "BOOL, INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, FP16, FP32, FP64 or BYTES"

// Validate reports the first reason r cannot be given to a model: a missing
// request id or model, strings that are not UTF-8, negative times, a
// parameter of an unsupported type, or an input tensor whose name is empty or
// repeated, whose datatype is unknown, whose shape has a negative dimension,
// or whose data is not exactly one form that matches its datatype and holds
// the element count the shape asks for. Errors name the field, e.g.
// `inputs[1] "x": shape [2 3] needs 6 elements, has 5`, and are meant for a
// FAILED result's error message. Of several invalid parameters, the one with
// the smallest key is reported.
//
// The codec does not call Validate: a request that decodes but is invalid is
// answered FAILED, not dead-lettered. DecodeRequestHead reports what
// Validate would, without decoding the tensors.
func (r *Request) Validate() error {
	if r == nil {
		return invalid(errors.New("nil request"))
	}
	if err := checkHead(r); err != nil {
		return invalid(err)
	}
	var first paramError
	for k, v := range r.Parameters {
		p := param{key: []byte(k), value: v}
		if s, ok := v.(string); ok {
			p.text, p.isText = []byte(s), true
		}
		first.add(p)
	}
	if first.err != nil {
		return invalid(first.err)
	}
	var names nameSet
	for i := range r.Inputs {
		t := &r.Inputs[i]
		s := tensorSummary{
			datatype: []byte(t.Datatype), dims: t.Shape,
			counts: [len(forms)]int{len(t.FP32), len(t.FP64), len(t.Int32), len(t.Int64), len(t.Bool), len(t.Bytes)},
			raw:    t.Raw, hasRaw: t.Raw != nil,
		}
		if err := names.check(i, []byte(t.Name), &s); err != nil {
			return invalid(err)
		}
	}
	return nil
}

func invalid(err error) error { return fmt.Errorf("schemas: invalid request: %w", err) }

// checkHead checks the request's fields other than its inputs and
// parameters.
func checkHead(r *Request) error {
	if r.RequestID == "" {
		return errors.New("request_id is empty")
	}
	if r.Model == "" {
		return errors.New("model is empty")
	}
	for _, s := range [...]struct{ name, v string }{
		{"request_id", r.RequestID},
		{"idempotency_key", r.IdempotencyKey},
		{"tenant", r.Tenant},
		{"model", r.Model},
		{"model_version", r.ModelVersion},
		{"reply_topic", r.ReplyTopic},
	} {
		if !utf8.ValidString(s.v) {
			return fmt.Errorf("%s is not valid UTF-8", s.name)
		}
	}
	if r.DeadlineMs < 0 {
		return fmt.Errorf("deadline_ms %d is negative", r.DeadlineMs)
	}
	if r.CreatedAtMs < 0 {
		return fmt.Errorf("created_at_ms %d is negative", r.CreatedAtMs)
	}
	return nil
}

// paramError keeps the error of the invalid parameter with the smallest
// key, whatever order the parameters come in (a Go map's, the wire's).
type paramError struct {
	err error
	key []byte
}

func (e *paramError) add(p param) {
	if e.err != nil && bytes.Compare(p.key, e.key) >= 0 {
		return
	}
	if err := p.check(); err != nil {
		e.err, e.key = err, p.key
	}
}

// check validates a parameter. One read from the wire has one of the four
// types (the decoder converts the rest or refuses them), so only its key and
// a string value can be wrong.
func (p *param) check() error {
	if !utf8.Valid(p.key) {
		return fmt.Errorf("parameters: key %q is not valid UTF-8", string(p.key))
	}
	switch {
	case p.isText:
		if !utf8.Valid(p.text) {
			return fmt.Errorf("parameters[%q] is not valid UTF-8", string(p.key))
		}
	case p.read:
	default:
		switch p.value.(type) {
		case int64, float64, bool:
		default:
			return fmt.Errorf("parameters[%q] has type %T, want string, int64, float64 or bool", string(p.key), p.value)
		}
	}
	return nil
}

// tensorSummary is what validation needs to know of a tensor, but its name.
// (The name is kept apart: a name set keeps it, and escape analysis would
// move the whole summary, and the stack buffer of its shape, to the heap
// with it.)
type tensorSummary struct {
	datatype []byte
	dims     []int64
	counts   [len(forms)]int
	raw      []byte
	hasRaw   bool
}

// nameSet checks the inputs in order, and remembers their names to find a
// repeated one.
type nameSet struct {
	few  [8][]byte
	n    int
	many map[string]int
}

// check checks input i, named name.
func (ns *nameSet) check(i int, name []byte, s *tensorSummary) error {
	if len(name) == 0 {
		return fmt.Errorf("inputs[%d]: name is empty", i)
	}
	if !utf8.Valid(name) {
		return fmt.Errorf("inputs[%d] %q: name is not valid UTF-8", i, string(name))
	}
	if j, ok := ns.seen(name); ok {
		return fmt.Errorf("inputs[%d] %q: name already used by inputs[%d]", i, string(name), j)
	}
	if err := s.check(); err != nil {
		return fmt.Errorf("inputs[%d] %q: %w", i, string(name), err)
	}
	return nil
}

// seen returns the index of the input named name, or adds it as the next.
func (ns *nameSet) seen(name []byte) (int, bool) {
	if ns.many == nil {
		for j, o := range ns.few[:ns.n] {
			if bytes.Equal(o, name) {
				return j, true
			}
		}
		if ns.n < len(ns.few) {
			ns.few[ns.n] = name
			ns.n++
			return 0, false
		}
		ns.many = make(map[string]int, 2*len(ns.few))
		for j, o := range ns.few {
			ns.many[string(o)] = j
		}
	}
	if j, ok := ns.many[string(name)]; ok {
		return j, true
	}
	ns.many[string(name)] = ns.n
	ns.n++
	return 0, false
}

// check checks the tensor's datatype, shape and data; nameSet checks its
// name.
func (s *tensorSummary) check() error {
	size, ok := elementSize[string(s.datatype)]
	if !ok {
		return fmt.Errorf("unknown datatype %q, want %s", string(s.datatype), datatypes)
	}
	count := int64(1)
	for _, d := range s.dims {
		if d < 0 {
			return fmt.Errorf("shape %v has a negative dimension", slices.Clone(s.dims))
		}
		if d != 0 && count > math.MaxInt64/d {
			return fmt.Errorf("shape %v has too many elements", slices.Clone(s.dims))
		}
		count *= d
	}

	// The forms set: typed fields count when they have elements (empty and
	// absent are the same on the wire), raw_contents when present at all.
	set, form, has := 0, 0, 0
	for i, n := range s.counts {
		if n > 0 {
			set++
			form, has = i, n
		}
	}
	if s.hasRaw {
		set++
	}
	switch {
	case set > 1:
		var names []string
		for i, n := range s.counts {
			if n > 0 {
				names = append(names, forms[i])
			}
		}
		if s.hasRaw {
			names = append(names, "raw_contents")
		}
		return fmt.Errorf("more than one data form set: %s", strings.Join(names, ", "))
	case set == 0:
		if count != 0 {
			return fmt.Errorf("shape %v needs %d elements, has 0", slices.Clone(s.dims), count)
		}
		return nil
	}

	if s.hasRaw {
		if size == 0 {
			return fmt.Errorf("datatype %s cannot use raw_contents; use bytes_contents", string(s.datatype))
		}
		if count > math.MaxInt64/int64(size) || int64(len(s.raw)) != count*int64(size) {
			return fmt.Errorf("shape %v needs %d elements of %d bytes in raw_contents, has %d bytes", slices.Clone(s.dims), count, size, len(s.raw))
		}
		if string(s.datatype) == "BOOL" {
			for i, b := range s.raw {
				if b > 1 {
					return fmt.Errorf("raw_contents[%d] is %d, want 0 or 1 for BOOL", i, b)
				}
			}
		}
		return nil
	}
	want, typed := typedForm[string(s.datatype)]
	if !typed {
		return fmt.Errorf("datatype %s carries its data in raw_contents only, not %s", string(s.datatype), forms[form])
	}
	if form != want {
		wanted := forms[want]
		if size > 0 {
			wanted += " or raw_contents"
		}
		return fmt.Errorf("datatype %s carries its data in %s, not %s", string(s.datatype), wanted, forms[form])
	}
	if int64(has) != count {
		return fmt.Errorf("shape %v needs %d elements, has %d", slices.Clone(s.dims), count, has)
	}
	return nil
}

// requestCheck validates a request as the head decoder reads it: the
// parameters and inputs as they come, keeping the first error of each.
type requestCheck struct {
	params paramError
	names  nameSet
	input  error
}

// inputs reads the inputs array, a tensorSummary at a time.
func (h *requestCheck) inputs(r *reader, n *node) {
	arr := r.array(n)
	if arr == nil {
		return
	}
	var dims [8]int64 // a shape's, when it has few dimensions
	for it := r.each(arr); r.next(&it); {
		name, s := r.tensor(arr.items, nil, dims[:0])
		if h.input == nil {
			h.input = h.names.check(it.index-1, name, &s)
		}
	}
}

// invalid is what Validate says of the request whose head is q.
func (h *requestCheck) invalid(q *Request) error {
	for _, err := range [...]error{checkHead(q), h.params.err, h.input} {
		if err != nil {
			return invalid(err)
		}
	}
	return nil
}
