// Package backend is the contract between the infer stage and the model
// backends (connectors/sim, connectors/oip): the ways a backend says how a
// call failed, beyond the plain error. It imports nothing of the module but
// the runtime's one error classifier, so that every backend and the stage
// agree on what an error means.
//
// A backend's Infer returns one list of output tensors per request, in
// order, and an error:
//   - nil: every item succeeded;
//   - an error marked pipeline.Transient (an outage, a timeout, a throttle):
//     the whole call is retried and counts towards the circuit breaker;
//   - an error matching ErrTooLarge (HTTP 413, an out-of-memory answer): the
//     batch was refused for its size; the stage retries it smaller;
//   - an *ItemErrors: the call was made and the items whose entry is nil
//     succeeded (their outputs are set); the others failed, each for its own
//     reason (a transient one is retried for that item alone);
//   - any other error: some input is bad; the stage splits the batch to find
//     it, so that its neighbours succeed.
package backend

import (
	"errors"
	"fmt"
	"strings"
)

// ErrTooLarge is matched (errors.Is) by the error of a call the backend
// refused because the batch was too large.
var ErrTooLarge = errors.New("backend: batch too large")

type tooLarge struct{ err error }

func (e tooLarge) Error() string        { return e.err.Error() }
func (e tooLarge) Unwrap() error        { return e.err }
func (e tooLarge) Is(target error) bool { return target == ErrTooLarge }

// TooLarge marks err as a refusal of the batch for its size.
func TooLarge(err error) error {
	if err == nil {
		return nil
	}
	return tooLarge{err}
}

// ItemErrors is the per-item outcome of a call that reached the model: entry
// i is the error of item i of the batch, nil when it succeeded. Its length is
// the batch's.
type ItemErrors []error

// Failed sets the error of item i and returns e, for chaining.
func (e ItemErrors) Failed(i int, err error) ItemErrors {
	e[i] = err
	return e
}

// Count is the number of failed items.
func (e ItemErrors) Count() int {
	n := 0
	for _, err := range e {
		if err != nil {
			n++
		}
	}
	return n
}

func (e ItemErrors) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "backend: %d of %d items failed", e.Count(), len(e))
	for i, err := range e {
		if err != nil {
			fmt.Fprintf(&b, "; first: item %d: %v", i, err)
			break
		}
	}
	return b.String()
}

// NewItemErrors returns an ItemErrors for a batch of n items, all succeeded.
func NewItemErrors(n int) ItemErrors { return make(ItemErrors, n) }

// AsItemErrors finds an ItemErrors in err's chain.
func AsItemErrors(err error) (ItemErrors, bool) {
	var e ItemErrors
	if errors.As(err, &e) {
		return e, true
	}
	return nil, false
}
