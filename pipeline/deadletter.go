package pipeline

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/schemas"
)

// Dead letter headers, so that operators can filter without decoding.
const (
	HeaderReason          = "asyncinfer-dlq-reason"
	HeaderStage           = "asyncinfer-dlq-stage"
	HeaderSourceTopic     = "asyncinfer-dlq-source-topic"
	HeaderSourcePartition = "asyncinfer-dlq-source-partition"
	HeaderSourceOffset    = "asyncinfer-dlq-source-offset"
)

// DefaultMaxDeadLetterBytes bounds a dead letter record (key, value and
// headers) when nothing else is configured: the dlq topic's default
// max.message.bytes.
const DefaultMaxDeadLetterBytes = 1 << 20

// Bounds of the parts of a dead letter other than its payload: they are
// for people and tools to read, and a client controls them (a 515 KB
// request id is a valid Kafka key).
const (
	maxDeadLetterKey   = 256
	maxDeadLetterID    = 1024
	maxDeadLetterError = 4096
	// deadLetterOverhead covers the record's framing, the headers and the
	// Avro encoding of the fixed fields.
	deadLetterOverhead = 4096
)

// NewDeadLetter describes src as a dead letter that fits in maxBytes: the
// payload keeps as much of the source value as fits (truncated: a prefix,
// with the whole value's size and SHA-256), the request id and error are
// cut to their bounds.
func NewDeadLetter(stage, reason string, err error, src *kgo.Record, maxBytes int) *schemas.DeadLetter {
	sum := sha256.Sum256(src.Value)
	d := &schemas.DeadLetter{
		Reason:          reason,
		Stage:           stage,
		SourceTopic:     src.Topic,
		SourcePartition: src.Partition,
		SourceOffset:    src.Offset,
		Payload:         src.Value,
		PayloadSize:     int64(len(src.Value)),
		PayloadSHA256:   sum[:],
		AtMs:            time.Now().UnixMilli(),
	}
	if err != nil {
		d.Error = cut(err.Error(), maxDeadLetterError)
	}
	room := maxBytes - deadLetterOverhead - len(d.Error) - maxDeadLetterID - maxDeadLetterKey - len(src.Topic) - len(stage) - len(reason)
	room = max(room, 0)
	if len(d.Payload) > room {
		d.Payload = d.Payload[:room]
		d.Truncated = true
	}
	return d
}

// Cut shortens s to at most n bytes, on a UTF-8 boundary, marking the cut:
// for text a client controls (names in error messages) that must stay
// bounded.
func Cut(s string, n int) string { return cut(s, n) }

func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…(cut)"
	i := n - len(mark)
	for i > 0 && s[i]&0xC0 == 0x80 { // not in the middle of a rune
		i--
	}
	return s[:max(i, 0)] + mark
}

// deadLetterKey is the dead letter's record key: the source key when short,
// else its SHA-256, so that a hostile key cannot make the dead letter too
// large to write.
func deadLetterKey(k []byte) []byte {
	if len(k) <= maxDeadLetterKey {
		return k
	}
	sum := sha256.Sum256(k)
	return []byte("sha256:" + hex.EncodeToString(sum[:]))
}

func deadLetterHeaders(d *schemas.DeadLetter) []kgo.RecordHeader {
	return []kgo.RecordHeader{
		{Key: HeaderReason, Value: []byte(d.Reason)},
		{Key: HeaderStage, Value: []byte(d.Stage)},
		{Key: HeaderSourceTopic, Value: []byte(d.SourceTopic)},
		{Key: HeaderSourcePartition, Value: strconv.AppendInt(nil, int64(d.SourcePartition), 10)},
		{Key: HeaderSourceOffset, Value: strconv.AppendInt(nil, d.SourceOffset, 10)},
	}
}

// deadLetterRecord is the dead-letter record of src.
func (r *Runner) deadLetterRecord(src *kgo.Record, reason string, err error, answered bool, requestID string) (*kgo.Record, error) {
	if r.spec.DeadLetters == "" || r.codec() == nil {
		return nil, errors.New("pipeline: no dead letter topic or codec configured")
	}
	d := NewDeadLetter(r.stage, reason, err, src, r.cfg.maxDeadLetterBytes)
	d.Answered = answered
	if v, ok := Header(src.Headers, HeaderSource); ok {
		// The record descends from a request: point at the request.
		if t, p, o, ok := ParseSource(v); ok {
			d.SourceTopic, d.SourcePartition, d.SourceOffset = t, p, o
		}
	}
	d.RequestID = cut(requestID, maxDeadLetterID)
	v, eerr := r.codec().EncodeDeadLetter(r.spec.DeadLetters, d)
	if eerr != nil {
		return nil, eerr
	}
	r.m.DeadLetters.WithLabelValues(r.stage, reason).Inc()
	return &kgo.Record{Topic: r.spec.DeadLetters, Key: deadLetterKey(src.Key), Value: v, Headers: deadLetterHeaders(d)}, nil
}
