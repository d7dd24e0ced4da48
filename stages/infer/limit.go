package infer

import "sync"

// batchLimit is a model's learnt batch limit: the backend said a batch was
// too large (backend.ErrTooLarge: an HTTP 413, an out-of-memory answer), so
// the limit drops to half that batch. It grows back by one item every
// limitGrowAfter calls that succeed at the limit (additive increase, as
// Clipper's AIMD), never above the configured max_batch_items, so that a
// model that ran out of memory once under a burst of large requests gets
// its batches back. The smallest size refused is remembered as a ceiling:
// growing to it takes limitProbeAfter calls at the limit instead, so a
// limit that is real costs a refused call once in a while, not every few
// calls; a call of that size that succeeds lifts the ceiling.
type batchLimit struct {
	mu   sync.Mutex
	max  int
	cur  int
	ceil int // smallest size refused since one of that size last succeeded; 0: none
	wins int // calls that succeeded at the limit since it last moved
}

const (
	limitGrowAfter  = 4
	limitProbeAfter = 64
)

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
	if l.ceil == 0 || n < l.ceil {
		l.ceil = n
	}
	l.wins = 0
	return l.cur
}

// succeeded reports a call of n items that succeeded; it returns the limit.
func (l *batchLimit) succeeded(n int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ceil > 0 && n >= l.ceil {
		l.ceil = 0
	}
	if n < l.cur || l.cur >= l.max {
		return l.cur
	}
	l.wins++
	need := limitGrowAfter
	if l.ceil > 0 && l.cur+1 >= l.ceil {
		need = limitProbeAfter
	}
	if l.wins >= need {
		l.cur++
		l.wins = 0
	}
	return l.cur
}
