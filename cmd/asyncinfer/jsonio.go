package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/asyncinfer/asyncinfer/schemas"
)

// The JSON form of requests and results that produce reads and results
// prints: the Avro fields in snake_case, tensors as in the Open Inference
// Protocol v2 ({"name", "datatype", "shape", "data"}), or "raw" for
// little-endian bytes in base64. BYTES tensors carry strings.

type tensorJSON struct {
	Name     string          `json:"name"`
	Datatype string          `json:"datatype"`
	Shape    []int64         `json:"shape"`
	Data     json.RawMessage `json:"data,omitempty"`
	Raw      []byte          `json:"raw,omitempty"`
}

type requestJSON struct {
	RequestID      string          `json:"request_id,omitempty"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	Tenant         string          `json:"tenant,omitempty"`
	Model          string          `json:"model"`
	ModelVersion   string          `json:"model_version,omitempty"`
	Inputs         []tensorJSON    `json:"inputs"`
	Parameters     json.RawMessage `json:"parameters,omitempty"`
	Priority       int32           `json:"priority,omitempty"`
	DeadlineMs     int64           `json:"deadline_ms,omitempty"`
	ReplyTopic     string          `json:"reply_topic,omitempty"`
	CreatedAtMs    int64           `json:"created_at_ms,omitempty"`
}

type timingsJSON struct {
	QueuedMs    float64 `json:"queued_ms"`
	BatchWaitMs float64 `json:"batch_wait_ms"`
	InferenceMs float64 `json:"inference_ms"`
	EndToEndMs  float64 `json:"end_to_end_ms"`
}

type resultJSON struct {
	RequestID         string       `json:"request_id"`
	IdempotencyKey    string       `json:"idempotency_key,omitempty"`
	Tenant            string       `json:"tenant,omitempty"`
	Status            string       `json:"status"`
	Reason            string       `json:"reason,omitempty"`
	ErrorCode         string       `json:"error_code,omitempty"`
	ErrorMessage      string       `json:"error_message,omitempty"`
	RetryAfterMs      int64        `json:"retry_after_ms,omitempty"`
	OriginalRequestID string       `json:"original_request_id,omitempty"`
	OriginalStatus    string       `json:"original_status,omitempty"`
	Attempt           int32        `json:"attempt,omitempty"`
	Outputs           []tensorJSON `json:"outputs,omitempty"`
	Model             string       `json:"model,omitempty"`
	ModelVersion      string       `json:"model_version,omitempty"`
	BatchSize         int32        `json:"batch_size,omitempty"`
	Timings           timingsJSON  `json:"timings"`
	ReplyTopic        string       `json:"reply_topic,omitempty"`
	CreatedAtMs       int64        `json:"created_at_ms,omitempty"`
	CompletedAtMs     int64        `json:"completed_at_ms,omitempty"`
}

// parseRequestLine decodes one JSON line into a request, strictly: unknown
// fields and data that does not match the datatype are errors.
func parseRequestLine(line []byte) (*schemas.Request, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	var rj requestJSON
	if err := dec.Decode(&rj); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("more than one JSON value on the line")
	}
	req := &schemas.Request{
		RequestID: rj.RequestID, IdempotencyKey: rj.IdempotencyKey, Tenant: rj.Tenant, Model: rj.Model,
		ModelVersion: rj.ModelVersion, Priority: rj.Priority, DeadlineMs: rj.DeadlineMs, ReplyTopic: rj.ReplyTopic,
		CreatedAtMs: rj.CreatedAtMs,
	}
	for i, tj := range rj.Inputs {
		t, err := tj.tensor()
		if err != nil {
			return nil, fmt.Errorf("inputs[%d] (%s): %w", i, tj.Name, err)
		}
		req.Inputs = append(req.Inputs, t)
	}
	if len(rj.Parameters) > 0 {
		d := json.NewDecoder(bytes.NewReader(rj.Parameters))
		d.UseNumber()
		var raw map[string]any
		if err := d.Decode(&raw); err != nil {
			return nil, fmt.Errorf("parameters: want an object: %w", err)
		}
		req.Parameters = map[string]any{}
		for k, v := range raw {
			switch v := v.(type) {
			case string, bool:
				req.Parameters[k] = v
			case json.Number:
				if n, err := v.Int64(); err == nil {
					req.Parameters[k] = n
				} else if f, err := v.Float64(); err == nil {
					req.Parameters[k] = f
				} else {
					return nil, fmt.Errorf("parameters.%s: %w", k, err)
				}
			default:
				return nil, fmt.Errorf("parameters.%s: want a string, number or boolean", k)
			}
		}
	}
	return req, nil
}

func (tj tensorJSON) tensor() (schemas.Tensor, error) {
	t := schemas.Tensor{Name: tj.Name, Datatype: strings.ToUpper(tj.Datatype), Shape: tj.Shape, Raw: tj.Raw}
	if len(tj.Data) > 0 && len(tj.Raw) > 0 {
		return t, errors.New("give data or raw, not both")
	}
	if len(tj.Data) == 0 {
		return t, nil
	}
	var err error
	switch t.Datatype {
	case "FP32":
		var fs []jsonFloat
		if err = json.Unmarshal(tj.Data, &fs); err == nil {
			t.FP32 = make([]float32, len(fs))
			for i, f := range fs {
				t.FP32[i] = float32(f)
			}
		}
	case "FP64":
		var fs []jsonFloat
		if err = json.Unmarshal(tj.Data, &fs); err == nil {
			t.FP64 = make([]float64, len(fs))
			for i, f := range fs {
				t.FP64[i] = float64(f)
			}
		}
	case "INT32":
		err = json.Unmarshal(tj.Data, &t.Int32)
	case "INT64":
		err = json.Unmarshal(tj.Data, &t.Int64)
	case "BOOL":
		err = json.Unmarshal(tj.Data, &t.Bool)
	case "BYTES":
		var ss []string
		if err = json.Unmarshal(tj.Data, &ss); err == nil {
			for _, s := range ss {
				t.Bytes = append(t.Bytes, []byte(s))
			}
		}
	default:
		return t, fmt.Errorf("datatype %q: \"data\" is for FP32, FP64, INT32, INT64, BOOL and BYTES; INT8, INT16, UINT8-UINT64 and FP16 go in \"raw\" (little-endian, base64)", tj.Datatype)
	}
	if err != nil {
		return t, fmt.Errorf("data does not match datatype %s: %w", t.Datatype, err)
	}
	return t, nil
}

func tensorToJSON(t schemas.Tensor) tensorJSON {
	tj := tensorJSON{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape, Raw: t.Raw}
	var v any
	switch {
	case t.FP32 != nil:
		fs := make([]jsonFloat32, len(t.FP32))
		for i, f := range t.FP32 {
			fs[i] = jsonFloat32(f)
		}
		v = fs
	case t.FP64 != nil:
		fs := make([]jsonFloat, len(t.FP64))
		for i, f := range t.FP64 {
			fs[i] = jsonFloat(f)
		}
		v = fs
	case t.Int32 != nil:
		v = t.Int32
	case t.Int64 != nil:
		v = t.Int64
	case t.Bool != nil:
		v = t.Bool
	case t.Bytes != nil:
		ss := make([]string, len(t.Bytes))
		for i, b := range t.Bytes {
			ss[i] = string(b)
		}
		v = ss
	}
	if v != nil {
		tj.Data, _ = json.Marshal(v)
	}
	return tj
}

func resultToJSON(r *schemas.Result) resultJSON {
	rj := resultJSON{
		RequestID: r.RequestID, IdempotencyKey: r.IdempotencyKey, Tenant: r.Tenant, Status: string(r.Status),
		Reason: r.Reason, ErrorCode: r.ErrorCode, ErrorMessage: r.ErrorMessage, RetryAfterMs: r.RetryAfterMs,
		OriginalRequestID: r.OriginalRequestID, OriginalStatus: string(r.OriginalStatus), Attempt: r.Attempt,
		Model: r.Model, ModelVersion: r.ModelVersion, BatchSize: r.BatchSize, ReplyTopic: r.ReplyTopic,
		CreatedAtMs: r.CreatedAtMs, CompletedAtMs: r.CompletedAtMs,
		Timings: timingsJSON{QueuedMs: r.Timings.QueuedMs, BatchWaitMs: r.Timings.BatchWaitMs,
			InferenceMs: r.Timings.InferenceMs, EndToEndMs: r.Timings.EndToEndMs},
	}
	for _, o := range r.Outputs {
		rj.Outputs = append(rj.Outputs, tensorToJSON(o))
	}
	return rj
}

// jsonFloat is a float in JSON that may be NaN or infinite: JSON numbers
// cannot be, so those are the strings "NaN", "Infinity" and "-Infinity" (as
// JavaScript and Python's json module write them). Other values are
// numbers.
type jsonFloat float64

func (f jsonFloat) MarshalJSON() ([]byte, error) { return marshalFloat(float64(f), 64) }

// jsonFloat32 is jsonFloat for FP32 data: written with float32 precision
// (0.1, not 0.10000000149011612).
type jsonFloat32 float32

func (f jsonFloat32) MarshalJSON() ([]byte, error) { return marshalFloat(float64(f), 32) }

func marshalFloat(v float64, bits int) ([]byte, error) {
	switch {
	case math.IsNaN(v):
		return []byte(`"NaN"`), nil
	case math.IsInf(v, 1):
		return []byte(`"Infinity"`), nil
	case math.IsInf(v, -1):
		return []byte(`"-Infinity"`), nil
	}
	return strconv.AppendFloat(nil, v, 'g', -1, bits), nil
}

func (f *jsonFloat) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case `"NaN"`:
		*f = jsonFloat(math.NaN())
		return nil
	case `"Infinity"`, `"+Infinity"`:
		*f = jsonFloat(math.Inf(1))
		return nil
	case `"-Infinity"`:
		*f = jsonFloat(math.Inf(-1))
		return nil
	}
	var v float64
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*f = jsonFloat(v)
	return nil
}
