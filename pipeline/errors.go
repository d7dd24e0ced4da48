package pipeline

import (
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
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

// refusedRecord reports produce errors about the record itself: the broker
// (or the client, before sending) refuses it for what it is, and producing
// it again gets the same answer. Only these make an input a dead letter.
// Every other produce error is about the broker, the producer's state or
// the transaction (UNKNOWN_SERVER_ERROR during a broker restart, a sequence
// the broker does not expect), and producing again cures it:
// dead-lettering for it turned every valid input of the failed request
// into a dead letter, in both modes (TestBrokerProduceErrorsAreNotDeadLettered).
func refusedRecord(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) ||
		errors.Is(err, kerr.InvalidRecord) || errors.Is(err, kerr.InvalidTimestamp)
}
