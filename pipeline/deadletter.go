package pipeline

import (
	"crypto/sha256"
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

// DefaultMaxDeadLetterPayload is how much of a source value a dead letter
// keeps; the rest is represented by its size and SHA-256, so a dead letter for
// a record at the topic's size limit still fits the dlq topic.
const DefaultMaxDeadLetterPayload = 512 << 10

// NewDeadLetter describes src as a dead letter.
func NewDeadLetter(stage, reason string, err error, src *kgo.Record, maxPayload int) *schemas.DeadLetter {
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
		d.Error = err.Error()
	}
	if maxPayload > 0 && len(d.Payload) > maxPayload {
		d.Payload = d.Payload[:maxPayload]
		d.Truncated = true
	}
	return d
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
