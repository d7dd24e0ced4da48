package infer

import (
	"context"
	"sync"
	"time"

	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

// item is one request waiting for, or in, a batch.
type item struct {
	c        *pipeline.Context // nil in tests of the executor
	done     <-chan struct{}   // closed when the work went stale
	req      *schemas.Request
	size     int       // encoded bytes, for the batch byte limit
	enqueued time.Time // entered the queue
	deadline time.Time // zero: none
	// byObjective: the deadline is created_at + the model's objective,
	// earlier than the request's own.
	byObjective bool
	attempt     int32 // model calls that carried it
	failures    int   // transient failures counted against MaxAttempts
}

// stale reports whether the work went stale: nothing done for it would take
// effect, so it must not take a model's time.
func (it *item) stale() bool {
	if it.done == nil {
		return false
	}
	select {
	case <-it.done:
		return true
	default:
		return false
	}
}

// queue is the bounded in-memory queue of one model, in front of its
// workers. It is FIFO; a worker takes a batch off its head when its policy
// says so. Items that went stale while queued are handed to drop instead of
// to a worker; items the policy drops early are handed to expire, which
// answers them.
type queue struct {
	mu     sync.Mutex
	items  []*item // ring buffer
	head   int
	n      int
	ready  chan struct{} // signalled (non-blocking) when items arrive
	turn   chan struct{} // held by the one worker deciding what to take
	pol    *policy
	idle   int         // workers in take
	drop   func(*item) // gets each stale item taken off the queue
	expire func(*item) // gets each item the policy dropped early
}

func newQueue(capacity int, pol *policy, drop, expire func(*item)) *queue {
	if drop == nil {
		drop = func(*item) {}
	}
	if expire == nil {
		expire = func(*item) {}
	}
	return &queue{items: make([]*item, capacity), ready: make(chan struct{}, 1), turn: make(chan struct{}, 1),
		pol: pol, drop: drop, expire: expire}
}

// push appends it; false when the queue is full even after dropping the
// stale items it holds.
func (q *queue) push(it *item) bool {
	q.mu.Lock()
	if q.n == len(q.items) {
		dropped := q.purgeLocked()
		if q.n == len(q.items) {
			q.mu.Unlock()
			q.dropAll(dropped)
			return false
		}
		defer q.dropAll(dropped)
	}
	q.items[(q.head+q.n)%len(q.items)] = it
	q.n++
	q.pol.arrived(it)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

func (q *queue) dropAll(its []*item) {
	for _, it := range its {
		q.drop(it)
	}
}

// purgeLocked removes the stale items, keeping the order of the others.
func (q *queue) purgeLocked() []*item {
	var dropped []*item
	kept := 0
	for i := 0; i < q.n; i++ {
		it := q.items[(q.head+i)%len(q.items)]
		if it.stale() {
			dropped = append(dropped, it)
			continue
		}
		q.items[(q.head+kept)%len(q.items)] = it
		kept++
	}
	for i := kept; i < q.n; i++ {
		q.items[(q.head+i)%len(q.items)] = nil
	}
	q.n = kept
	return dropped
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// oldest is how long the oldest queued item has waited (0: none queued).
func (q *queue) oldest(now time.Time) time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 {
		return 0
	}
	return max(0, now.Sub(q.items[q.head].enqueued))
}

func (q *queue) at(i int) *item { return q.items[(q.head+i)%len(q.items)] }

// take blocks until the policy says a batch is due and returns it, with why
// it left then. One worker at a time decides (the others wait their turn):
// with several workers, each waits for a batch of its own instead of all
// waiting for the same one. Stale items at the head are dropped, not taken;
// items the policy drops early are expired. It returns nil when ctx is
// done.
func (q *queue) take(ctx context.Context) ([]*item, flushReason) {
	q.mu.Lock()
	q.idle++
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		q.idle--
		q.mu.Unlock()
	}()
	select { // a worker waiting for a fuller batch need wait no more
	case q.ready <- struct{}{}:
	default:
	}
	select {
	case q.turn <- struct{}{}:
	case <-ctx.Done():
		return nil, 0
	}
	defer func() { <-q.turn }()
	var waitingSince time.Time
	for {
		q.mu.Lock()
		var stale, expired []*item
		for q.n > 0 && q.items[q.head].stale() {
			stale = append(stale, q.popLocked())
		}
		now := time.Now()
		d := q.pol.decide(now, q.n, q.at, waitingSince, q.idle)
		for range d.drop {
			if it := q.popLocked(); it.stale() {
				stale = append(stale, it)
			} else {
				expired = append(expired, it)
			}
		}
		var b []*item
		if d.take > 0 {
			b = q.batchLocked(d.take, q.pol.maxBytes)
		}
		empty := q.n == 0
		q.mu.Unlock()
		q.dropAll(stale)
		for _, it := range expired {
			q.expire(it)
		}
		if b != nil {
			return b, d.reason
		}
		if empty || d.wait <= 0 {
			waitingSince = time.Time{}
			select {
			case <-ctx.Done():
				return nil, 0
			case <-q.ready:
			}
			continue
		}
		if waitingSince.IsZero() {
			waitingSince = now
		}
		t := time.NewTimer(d.wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, 0
		case <-q.ready:
		case <-t.C:
		}
		t.Stop()
	}
}

func (q *queue) popLocked() *item {
	it := q.items[q.head]
	q.items[q.head] = nil
	q.head = (q.head + 1) % len(q.items)
	q.n--
	return it
}

func (q *queue) batchLocked(maxItems, maxBytes int) []*item {
	var b []*item
	bytes := 0
	for q.n > 0 && len(b) < maxItems {
		it := q.items[q.head]
		if len(b) > 0 && maxBytes > 0 && bytes+it.size > maxBytes {
			break
		}
		bytes += it.size
		b = append(b, q.popLocked())
	}
	return b
}
