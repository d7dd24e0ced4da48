package pipeline

import (
	"context"
	"errors"
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
