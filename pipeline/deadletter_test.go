package pipeline

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// A dead letter always fits its limit, whatever the source: a payload at the
// topic's limit, a 515 KB request id, a 600 KB key, a huge error text. What
// does not fit is cut (the payload to a prefix with its size and SHA-256),
// never left to fail the produce and stall the partition.
func TestDeadLetterFits(t *testing.T) {
	const limit = 1 << 20
	tests := []struct {
		name      string
		key, val  int
		requestID int
		errText   int
	}{
		{"small", 10, 100, 10, 10},
		{"payload at the limit", 10, limit, 10, 10},
		{"a 515 KB request id", 515_000, 515_000, 515_000, 100},
		{"a 600 KB key, a 440 KB value", 600_000, 440_000, 0, 100},
		{"a 2 MB error", 10, limit, 10, 2 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := &kgo.Record{Topic: "t", Key: bytes.Repeat([]byte("k"), tc.key), Value: bytes.Repeat([]byte("v"), tc.val)}
			d := NewDeadLetter("dedup", "undecodable", errors.New(strings.Repeat("e", tc.errText)), src, limit)
			d.RequestID = cut(strings.Repeat("r", tc.requestID), maxDeadLetterID)
			// The Avro encoding adds at most a few bytes per field to the
			// lengths: bound it by the fields' sizes plus slack.
			value := len(d.Payload) + len(d.Error) + len(d.RequestID) + len(d.PayloadSHA256) + len(d.Reason) + len(d.Stage) + len(d.SourceTopic) + 128
			rec := &kgo.Record{Topic: "dlq", Key: deadLetterKey(src.Key), Value: make([]byte, value), Headers: deadLetterHeaders(d)}
			if n := BatchSize(rec); n > limit {
				t.Errorf("dead letter of %d bytes, limit %d", n, limit)
			}
			if d.PayloadSize != int64(tc.val) || !bytes.HasPrefix(src.Value, d.Payload) || d.Truncated != (len(d.Payload) < tc.val) {
				t.Errorf("payload %d of %d bytes, truncated=%v", len(d.Payload), d.PayloadSize, d.Truncated)
			}
		})
	}
}
