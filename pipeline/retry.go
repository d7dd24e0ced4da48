package pipeline

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is a retry policy: exponential delays with full jitter, from
// Initial doubling up to Max, for at most Attempts tries (0: until the
// context is done).
type Backoff struct {
	Initial  time.Duration
	Max      time.Duration
	Attempts int
}

// Delay is the wait before retry number n (0 for the first retry): a
// uniformly random duration in (0, min(Initial·2ⁿ, Max)], so that many
// clients retrying one dependency do not retry in step.
func (b Backoff) Delay(n int) time.Duration {
	d := b.Initial
	for i := 0; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d))) + 1
}

// Retry calls fn until it succeeds, fails with an error retry says not to
// retry, the attempts are spent, or ctx is done; it returns fn's last error
// (or ctx's, when ctx ended the wait). It never waits after the last
// attempt.
func Retry(ctx context.Context, b Backoff, fn func() error, retry func(error) bool) error {
	for n := 0; ; n++ {
		err := fn()
		if err == nil || !retry(err) || (b.Attempts > 0 && n+1 >= b.Attempts) {
			return err
		}
		if !Sleep(ctx, b.Delay(n)) {
			return err
		}
	}
}

// Sleep waits for d or until ctx is done; it reports whether the whole wait
// passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
