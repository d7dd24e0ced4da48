package schemas

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
)

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

// datatypes lists the known datatypes for error messages.
const datatypes = "BOOL, INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, FP16, FP32, FP64 or BYTES"

// typedField is the *_contents field that carries each datatype's data.
var typedField = map[string]string{
	"FP32":  "fp32_contents",
	"FP64":  "fp64_contents",
	"INT32": "int_contents",
	"INT64": "int64_contents",
	"BOOL":  "bool_contents",
	"BYTES": "bytes_contents",
}

// Validate reports the first reason r cannot be given to a model: a missing
// request id or model, strings that are not UTF-8, negative times, a
// parameter of an unsupported type, or an input tensor whose name is empty or
// repeated, whose datatype is unknown, whose shape has a negative dimension,
// or whose data is not exactly one form that matches its datatype and holds
// the element count the shape asks for. Errors name the field, e.g.
// `inputs[1] "x": shape [2 3] needs 6 elements, has 5`, and are meant for a
// FAILED result's error message.
//
// The codec does not call Validate: a request that decodes but is invalid is
// answered FAILED, not dead-lettered.
func (r *Request) Validate() error {
	if err := r.validate(); err != nil {
		return fmt.Errorf("schemas: invalid request: %w", err)
	}
	return nil
}

func (r *Request) validate() error {
	if r == nil {
		return errors.New("nil request")
	}
	if r.RequestID == "" {
		return errors.New("request_id is empty")
	}
	if r.Model == "" {
		return errors.New("model is empty")
	}
	for _, s := range []struct{ name, v string }{
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
	for k, v := range r.Parameters {
		if !utf8.ValidString(k) {
			return fmt.Errorf("parameters: key %q is not valid UTF-8", k)
		}
		switch v := v.(type) {
		case string:
			if !utf8.ValidString(v) {
				return fmt.Errorf("parameters[%q] is not valid UTF-8", k)
			}
		case int64, float64, bool:
		default:
			return fmt.Errorf("parameters[%q] has type %T, want string, int64, float64 or bool", k, v)
		}
	}
	seen := make(map[string]int, len(r.Inputs))
	for i := range r.Inputs {
		t := &r.Inputs[i]
		if t.Name == "" {
			return fmt.Errorf("inputs[%d]: name is empty", i)
		}
		if !utf8.ValidString(t.Name) {
			return fmt.Errorf("inputs[%d] %q: name is not valid UTF-8", i, t.Name)
		}
		if j, ok := seen[t.Name]; ok {
			return fmt.Errorf("inputs[%d] %q: name already used by inputs[%d]", i, t.Name, j)
		}
		seen[t.Name] = i
		if err := t.validate(); err != nil {
			return fmt.Errorf("inputs[%d] %q: %w", i, t.Name, err)
		}
	}
	return nil
}

// validate checks t's datatype, shape and data; the caller checks its name.
func (t *Tensor) validate() error {
	size, ok := elementSize[t.Datatype]
	if !ok {
		return fmt.Errorf("unknown datatype %q, want %s", t.Datatype, datatypes)
	}
	count := int64(1)
	for _, d := range t.Shape {
		if d < 0 {
			return fmt.Errorf("shape %v has a negative dimension", t.Shape)
		}
		if d != 0 && count > math.MaxInt64/d {
			return fmt.Errorf("shape %v has too many elements", t.Shape)
		}
		count *= d
	}

	// The forms set: typed fields count when they have elements (empty and
	// absent are the same on the wire), raw_contents when present at all.
	lens := []struct {
		field string
		n     int
	}{
		{"fp32_contents", len(t.FP32)},
		{"fp64_contents", len(t.FP64)},
		{"int_contents", len(t.Int32)},
		{"int64_contents", len(t.Int64)},
		{"bool_contents", len(t.Bool)},
		{"bytes_contents", len(t.Bytes)},
	}
	var set []string
	has := 0
	for _, l := range lens {
		if l.n > 0 {
			set = append(set, l.field)
			has = l.n
		}
	}
	if t.Raw != nil {
		set = append(set, "raw_contents")
	}
	switch {
	case len(set) > 1:
		return fmt.Errorf("more than one data form set: %s", strings.Join(set, ", "))
	case len(set) == 0:
		if count != 0 {
			return fmt.Errorf("shape %v needs %d elements, has 0", t.Shape, count)
		}
		return nil
	}

	if set[0] == "raw_contents" {
		if size == 0 {
			return fmt.Errorf("datatype %s cannot use raw_contents; use bytes_contents", t.Datatype)
		}
		if count > math.MaxInt64/int64(size) || int64(len(t.Raw)) != count*int64(size) {
			return fmt.Errorf("shape %v needs %d elements of %d bytes in raw_contents, has %d bytes", t.Shape, count, size, len(t.Raw))
		}
		if t.Datatype == "BOOL" {
			for i, b := range t.Raw {
				if b > 1 {
					return fmt.Errorf("raw_contents[%d] is %d, want 0 or 1 for BOOL", i, b)
				}
			}
		}
		return nil
	}
	want, typed := typedField[t.Datatype]
	if !typed {
		return fmt.Errorf("datatype %s carries its data in raw_contents only, not %s", t.Datatype, set[0])
	}
	if set[0] != want {
		if size > 0 {
			want += " or raw_contents"
		}
		return fmt.Errorf("datatype %s carries its data in %s, not %s", t.Datatype, want, set[0])
	}
	if int64(has) != count {
		return fmt.Errorf("shape %v needs %d elements, has %d", t.Shape, count, has)
	}
	return nil
}
