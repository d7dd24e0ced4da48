package schemas

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
)

// The encoders write Avro binary by hand, in the field order of the .avsc
// files, rather than through goavro's BinaryFromNative:
//
//   - goavro writes a map in Go's random iteration order, so the same request
//     would encode to different bytes from run to run (golden tests, and any
//     comparison of encoded messages, need one answer); we sort the keys;
//   - goavro boxes every tensor element in an interface (a []float32 of a
//     million elements becomes a million allocations); we append directly.
//
// The tests hold the encoders to the schemas: everything encoded is decoded
// by goavro with the embedded schema, and goavro re-encoding what it decoded
// must give back the same bytes.

func appendLong(b []byte, v int64) []byte {
	return binary.AppendUvarint(b, uint64(v<<1)^uint64(v>>63))
}

func appendString(b []byte, s string) []byte {
	return append(appendLong(b, int64(len(s))), s...)
}

func appendBytes(b, v []byte) []byte {
	return append(appendLong(b, int64(len(v))), v...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func appendDouble(b []byte, v float64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
}

// appendOptString writes a ["null","string"] union: null for "".
func appendOptString(b []byte, s string) []byte {
	if s == "" {
		return append(b, 0)
	}
	return appendString(append(b, 2), s) // branch 1, zigzag-encoded
}

// appendOptLong writes a ["null","long"] union: null for 0.
func appendOptLong(b []byte, v int64) []byte {
	if v == 0 {
		return append(b, 0)
	}
	return appendLong(append(b, 2), v)
}

// appendArray writes an array as one block, and an empty one as the bare
// end marker, as goavro does.
func appendArray[T any](b []byte, items []T, item func([]byte, T) []byte) []byte {
	if len(items) == 0 {
		return append(b, 0)
	}
	b = appendLong(b, int64(len(items)))
	for _, v := range items {
		b = item(b, v)
	}
	return append(b, 0)
}

func appendFloatItem(b []byte, v float32) []byte {
	return binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
}
func appendIntItem(b []byte, v int32) []byte { return appendLong(b, int64(v)) }

// statusIndex is the position of s among the Status enum's symbols.
func statusIndex(s Status) (int64, bool) {
	switch s {
	case StatusSucceeded:
		return 0, true
	case StatusFailed:
		return 1, true
	case StatusExpired:
		return 2, true
	case StatusRejected:
		return 3, true
	case StatusDuplicate:
		return 4, true
	}
	return 0, false
}

// appendOptStatus writes a ["null","asyncinfer.Status"] union: null for "".
func appendOptStatus(b []byte, s Status, field string) ([]byte, error) {
	if s == "" {
		return append(b, 0), nil
	}
	i, ok := statusIndex(s)
	if !ok {
		return nil, fmt.Errorf("%s: unknown status %q", field, s)
	}
	return appendLong(append(b, 2), i), nil
}

func appendTensor(b []byte, t *Tensor) []byte {
	b = appendString(b, t.Name)
	b = appendString(b, t.Datatype)
	b = appendArray(b, t.Shape, appendLong)
	b = appendArray(b, t.FP32, appendFloatItem)
	b = appendArray(b, t.FP64, appendDouble)
	b = appendArray(b, t.Int32, appendIntItem)
	b = appendArray(b, t.Int64, appendLong)
	b = appendArray(b, t.Bool, appendBool)
	b = appendArray(b, t.Bytes, appendBytes)
	if t.Raw == nil {
		return append(b, 0)
	}
	return appendBytes(append(b, 2), t.Raw)
}

func appendTensors(b []byte, ts []Tensor) []byte {
	if len(ts) == 0 {
		return append(b, 0)
	}
	b = appendLong(b, int64(len(ts)))
	for i := range ts {
		b = appendTensor(b, &ts[i])
	}
	return append(b, 0)
}

// tensorsSize estimates the encoded size of ts.
func tensorsSize(ts []Tensor) int {
	n := 0
	for i := range ts {
		t := &ts[i]
		n += 32 + len(t.Name) + len(t.Datatype) + 10*len(t.Shape) +
			4*len(t.FP32) + 8*len(t.FP64) + 5*len(t.Int32) + 10*len(t.Int64) +
			len(t.Bool) + len(t.Raw)
		for _, e := range t.Bytes {
			n += 5 + len(e)
		}
	}
	return n
}

// appendParameters writes the map with its keys sorted, so that equal maps
// encode to equal bytes. Values are the union ["string","long","double",
// "boolean"].
func appendParameters(b []byte, p map[string]any) ([]byte, error) {
	if len(p) == 0 {
		return append(b, 0), nil
	}
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = appendLong(b, int64(len(keys)))
	for _, k := range keys {
		b = appendString(b, k)
		switch v := p[k].(type) {
		case string:
			b = appendString(append(b, 0), v)
		case int64:
			b = appendLong(append(b, 2), v)
		case float64:
			b = appendDouble(append(b, 4), v)
		case bool:
			b = appendBool(append(b, 6), v)
		default:
			return nil, fmt.Errorf("parameters[%q]: type %T, want string, int64, float64 or bool", k, v)
		}
	}
	return append(b, 0), nil
}

func appendRequest(b []byte, r *Request) ([]byte, error) {
	if r.RequestID == "" {
		return nil, errors.New("request_id is empty")
	}
	if r.Model == "" {
		return nil, errors.New("model is empty")
	}
	b = appendString(b, r.RequestID)
	b = appendOptString(b, r.IdempotencyKey)
	b = appendString(b, r.Tenant)
	b = appendString(b, r.Model)
	b = appendOptString(b, r.ModelVersion)
	b = appendTensors(b, r.Inputs)
	b, err := appendParameters(b, r.Parameters)
	if err != nil {
		return nil, err
	}
	b = appendLong(b, int64(r.Priority))
	b = appendOptLong(b, r.DeadlineMs)
	b = appendOptString(b, r.ReplyTopic)
	return appendLong(b, r.CreatedAtMs), nil
}

func appendResult(b []byte, r *Result) ([]byte, error) {
	if r.RequestID == "" {
		return nil, errors.New("request_id is empty")
	}
	status, ok := statusIndex(r.Status)
	if !ok {
		return nil, fmt.Errorf("status: unknown status %q", r.Status)
	}
	b = appendString(b, r.RequestID)
	b = appendOptString(b, r.IdempotencyKey)
	b = appendString(b, r.Tenant)
	b = appendLong(b, status)
	b = appendString(b, r.Reason)
	b = appendString(b, r.ErrorCode)
	b = appendString(b, r.ErrorMessage)
	b = appendLong(b, r.RetryAfterMs)
	b = appendOptString(b, r.OriginalRequestID)
	b, err := appendOptStatus(b, r.OriginalStatus, "original_status")
	if err != nil {
		return nil, err
	}
	b = appendLong(b, int64(r.Attempt))
	b = appendTensors(b, r.Outputs)
	b = appendString(b, r.Model)
	b = appendOptString(b, r.ModelVersion)
	b = appendLong(b, int64(r.BatchSize))
	b = appendDouble(b, r.Timings.QueuedMs)
	b = appendDouble(b, r.Timings.BatchWaitMs)
	b = appendDouble(b, r.Timings.InferenceMs)
	b = appendDouble(b, r.Timings.EndToEndMs)
	b = appendOptString(b, r.ReplyTopic)
	b = appendLong(b, r.CreatedAtMs)
	return appendLong(b, r.CompletedAtMs), nil
}

func appendDeadLetter(b []byte, d *DeadLetter) ([]byte, error) {
	if d.Reason == "" {
		return nil, errors.New("reason is empty")
	}
	b = appendString(b, d.Reason)
	b = appendString(b, d.Error)
	b = appendString(b, d.Stage)
	b = appendString(b, d.SourceTopic)
	b = appendLong(b, int64(d.SourcePartition))
	b = appendLong(b, d.SourceOffset)
	b = appendOptString(b, d.RequestID)
	b = appendBool(b, d.Answered)
	b = appendBytes(b, d.Payload)
	b = appendLong(b, d.PayloadSize)
	b = appendBytes(b, d.PayloadSHA256)
	b = appendBool(b, d.Truncated)
	return appendLong(b, d.AtMs), nil
}

func appendStateEntry(b []byte, e *StateEntry) ([]byte, error) {
	b, err := appendStateFields(b, e, "")
	if err != nil {
		return nil, err
	}
	if len(e.More) == 0 {
		return appendLong(b, 0), nil
	}
	b = appendLong(b, int64(len(e.More)))
	for i := range e.More {
		if b, err = appendStateFields(b, &e.More[i], "more["+strconv.Itoa(i)+"]."); err != nil {
			return nil, err
		}
	}
	return appendLong(b, 0), nil
}

// appendStateFields writes the fields a StateEntry and a StateItem share.
func appendStateFields(b []byte, e *StateEntry, at string) ([]byte, error) {
	if e.Key == "" {
		return nil, errors.New(at + "key is empty")
	}
	if e.RequestID == "" {
		return nil, errors.New(at + "request_id is empty")
	}
	b = appendString(b, e.Key)
	b = appendString(b, e.RequestID)
	b, err := appendOptStatus(b, e.Status, at+"status")
	if err != nil {
		return nil, err
	}
	return appendLong(b, e.ExpiresAtMs), nil
}

func appendPressure(b []byte, p *Pressure) ([]byte, error) {
	if p.Source == "" {
		return nil, errors.New("source is empty")
	}
	if p.Model == "" {
		return nil, errors.New("model is empty")
	}
	b = appendString(b, p.Source)
	b = appendString(b, p.Model)
	b = appendString(b, p.Lane)
	b = appendLong(b, int64(p.MinPriority))
	b = appendString(b, p.Instance)
	b = appendString(b, p.Status)
	b = appendLong(b, p.AtMs)
	b = appendLong(b, p.IntervalMs)
	b = appendLong(b, p.PredictedWaitMs)
	b = appendLong(b, p.RetryAfterMs)
	b = appendDouble(b, p.ShedFraction)
	b = appendDouble(b, p.CapacityPerSecond)
	b = appendLong(b, p.Backlog)
	b = appendLong(b, p.Running)
	b = appendDouble(b, p.FixedMs)
	b = appendDouble(b, p.PerItemMs)
	b = appendLong(b, int64(p.Batch))
	b = appendLong(b, int64(p.BatchLimit))
	return appendLong(b, int64(p.BatchMeasured)), nil
}

// The size functions estimate a message's encoded size, so that encoding
// allocates once.

func requestSize(r *Request) int {
	return 64 + len(r.RequestID) + len(r.IdempotencyKey) + len(r.Tenant) + len(r.Model) +
		len(r.ModelVersion) + len(r.ReplyTopic) + tensorsSize(r.Inputs) + 32*len(r.Parameters)
}

func resultSize(r *Result) int {
	return 128 + len(r.RequestID) + len(r.IdempotencyKey) + len(r.Tenant) + len(r.Reason) +
		len(r.ErrorCode) + len(r.ErrorMessage) + len(r.OriginalRequestID) + len(r.Model) +
		len(r.ModelVersion) + len(r.ReplyTopic) + tensorsSize(r.Outputs)
}

func deadLetterSize(d *DeadLetter) int {
	return 64 + len(d.Reason) + len(d.Error) + len(d.Stage) + len(d.SourceTopic) +
		len(d.RequestID) + len(d.Payload) + len(d.PayloadSHA256)
}

func stateEntrySize(e *StateEntry) int {
	n := 32 + len(e.Key) + len(e.RequestID)
	for i := range e.More {
		n += 24 + len(e.More[i].Key) + len(e.More[i].RequestID)
	}
	return n
}

func pressureSize(p *Pressure) int {
	return 112 + len(p.Source) + len(p.Model) + len(p.Lane) + len(p.Instance) + len(p.Status)
}
