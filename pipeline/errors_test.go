package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestRetryable(t *testing.T) {
	expired, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel()
	<-expired.Done()
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()

	base := errors.New("backend said no")
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain error is permanent", base, false},
		{"wrapped plain error", fmt.Errorf("call: %w", base), false},
		{"transient", Transient(base), true},
		{"wrapped transient", fmt.Errorf("infer: %w", Transient(base)), true},
		{"twice wrapped transient", fmt.Errorf("a: %w", fmt.Errorf("b: %w", Transient(io.ErrUnexpectedEOF))), true},
		{"transient in a join", errors.Join(base, Transient(io.EOF)), true},
		{"deadline exceeded", context.DeadlineExceeded, true},
		{"wrapped deadline exceeded", fmt.Errorf("call: %w", context.DeadlineExceeded), true},
		{"deadline of an expired context", expired.Err(), true},
		{"cancellation", context.Canceled, false},
		{"cancellation of a context", cancelled.Err(), false},
		{"wrapped cancellation", fmt.Errorf("call: %w", context.Canceled), false},
		{"cancellation marked transient", Transient(context.Canceled), false},
		{"cancellation joined with a transient error", errors.Join(Transient(base), context.Canceled), false},
		{"cancellation joined with a deadline", errors.Join(context.DeadlineExceeded, context.Canceled), false},
		{"error text alone is not a mark", errors.New(Transient(base).Error()), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Retryable(tc.err); got != tc.want {
				t.Fatalf("Retryable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestTransient(t *testing.T) {
	if err := Transient(nil); err != nil {
		t.Fatalf("Transient(nil) = %v, want nil", err)
	}
	base := errors.New("unavailable")
	err := Transient(base)
	if err.Error() != base.Error() {
		t.Fatalf("Transient changes the message: %q, want %q", err.Error(), base.Error())
	}
	if !errors.Is(err, base) {
		t.Fatal("Transient(err) does not wrap err")
	}
	if errors.Unwrap(err) != base { //nolint:errorlint // the direct cause, not the chain, is the point
		t.Fatalf("Unwrap = %v, want %v", errors.Unwrap(err), base)
	}
}

// Only an error about the record itself dead-letters an input: errors of
// the broker, of the producer's state or of the transaction are produced
// again, however final franz-go marks them.
func TestRefusedRecord(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("%w (uncompressed_bytes=2000000)", kerr.MessageTooLarge), true}, // franz-go's, before sending
		{kerr.MessageTooLarge, true},
		{kerr.RecordListTooLarge, true},
		{kerr.InvalidRecord, true},
		{kerr.InvalidTimestamp, true},
		{kerr.UnknownServerError, false}, // a broker restarting
		{kerr.OutOfOrderSequenceNumber, false},
		{kerr.UnknownProducerID, false},
		{kerr.InvalidProducerEpoch, false}, // the transaction timed out
		{kerr.InvalidTxnState, false},
		{kerr.TransactionAbortable, false},
		{kerr.NotLeaderForPartition, false},
		{kerr.UnknownTopicOrPartition, false},
		{kgo.ErrRecordTimeout, false},
		{kgo.ErrAborting, false},
		{context.DeadlineExceeded, false},
		{errors.New("connection reset"), false},
		{nil, false},
	}
	for _, tc := range tests {
		if got := refusedRecord(tc.err); got != tc.want {
			t.Errorf("refusedRecord(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
