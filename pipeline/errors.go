package pipeline

import (
	"context"
	"errors"
	"net"
	"syscall"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// transientError marks an error worth retrying: the same call may succeed
// later (a timeout, an unavailable backend, a throttle).
type transientError struct{ err error }

func (e transientError) Error() string { return e.err.Error() }
func (e transientError) Unwrap() error { return e.err }

// Transient marks err as worth retrying. Errors are permanent unless marked,
// so an unknown failure is never retried blindly.
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return transientError{err}
}

// Retryable is the one place that classifies errors: marked transient
// errors and deadlines of a single attempt are retryable; cancellation (a
// shutdown) and everything else are not.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var t transientError
	return errors.As(err, &t) || errors.Is(err, context.DeadlineExceeded)
}

// retriableKafkaErr reports produce and transaction errors that a broker
// coming back (or a leader moving) cures: they are waited out, never turned
// into a dead letter or a stopped stage.
func retriableKafkaErr(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed) {
		return false
	}
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ke.Retriable
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, kgo.ErrRecordTimeout) || errors.Is(err, kgo.ErrRecordRetries) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}
