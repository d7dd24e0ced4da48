package pipeline

import (
	"context"
	"errors"
	"time"
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

// Retry calls fn until it succeeds, fails with an error again says not to
// retry, or five tries (about three seconds of backoff) have failed. It
// serves the short outages of a collaborator (the schema registry) that
// would otherwise turn good input into dead letters.
func Retry(ctx context.Context, fn func() error, again func(error) bool) error {
	var err error
	for i := 0; i < 5; i++ {
		if err = fn(); err == nil || !again(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond << i):
		}
	}
	return err
}
