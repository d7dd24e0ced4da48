package infer

import "sync"

// batchLimit is a model's learnt batch limit: the backend said a batch was
// too large (backend.ErrTooLarge: an HTTP 413, an out-of-memory answer), so
// the limit drops to half that batch, the size its split retries with. It
// grows back by one item every limitGrowAfter calls that succeed at the
// limit (additive increase, as Clipper's AIMD), never above the configured
// max_batch_items: a model that ran out of memory once under a burst of
// large requests gets its batches back, slowly enough that a limit that is
// real is not hit every few calls.
type batchLimit struct {
	mu   sync.Mutex
	max  int
	cur  int
	wins int // calls that succeeded at the limit since it last moved
}

const limitGrowAfter = 4

func newBatchLimit(max int) *batchLimit { return &batchLimit{max: max, cur: max} }

func (l *batchLimit) get() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur
}

// tooLarge reports a call of n items refused for its size; it returns the
// limit.
func (l *batchLimit) tooLarge(n int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n2 := max(1, n/2); n2 < l.cur {
		l.cur = n2
	}
	l.wins = 0
	return l.cur
}

// succeeded reports a call of n items that succeeded; it returns the limit.
func (l *batchLimit) succeeded(n int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n < l.cur || l.cur >= l.max {
		return l.cur
	}
	l.wins++
	if l.wins >= limitGrowAfter {
		l.cur++
		l.wins = 0
	}
	return l.cur
}
