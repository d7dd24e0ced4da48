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
	lane        int   // its priority lane, 0 the highest
	counted     bool  // counted as live in its lane (laneControl) until answered or dropped
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

// ring is one lane's FIFO, a ring buffer.
type ring struct {
	items []*item
	head  int
	n     int
}

// queue is the bounded in-memory queue of one model, in front of its
// workers: one FIFO per priority lane, read as one sequence, the highest
// lane first, so that the policy sees (and a batch takes) every request of
// a higher lane before any of a lower one. A worker takes a batch off its
// head when its policy says so. Items that went stale while queued are
// handed to drop instead of to a worker; items the policy drops early are
// handed to expire, which answers them.
type queue struct {
	mu     sync.Mutex
	rings  []ring        // by lane, the highest first
	n      int           // items in all rings
	capac  int           // most items in all rings
	ready  chan struct{} // signalled (non-blocking) when items arrive
	turn   chan struct{} // held by the one worker deciding what to take
	pol    *policy
	idle   int         // workers in take
	drop   func(*item) // gets each stale item taken off the queue
	expire func(*item) // gets each item the policy dropped early
}

func newQueue(capacity int, pol *policy, drop, expire func(*item)) *queue {
	return newLaneQueue(1, capacity, pol, drop, expire)
}

// newLaneQueue is a queue of lanes priority lanes holding at most capacity
// items in all.
func newLaneQueue(lanes, capacity int, pol *policy, drop, expire func(*item)) *queue {
	if drop == nil {
		drop = func(*item) {}
	}
	if expire == nil {
		expire = func(*item) {}
	}
	q := &queue{rings: make([]ring, max(1, lanes)), capac: capacity, ready: make(chan struct{}, 1),
		turn: make(chan struct{}, 1), pol: pol, drop: drop, expire: expire}
	return q
}

// push appends it to its lane; false when the queue is full even after
// dropping the stale items it holds.
func (q *queue) push(it *item) bool {
	q.mu.Lock()
	if q.n >= q.capac {
		dropped := q.purgeLocked()
		if q.n >= q.capac {
			q.mu.Unlock()
			q.dropAll(dropped)
			return false
		}
		defer q.dropAll(dropped)
	}
	it.lane = min(max(0, it.lane), len(q.rings)-1)
	r := &q.rings[it.lane]
	if r.n == len(r.items) {
		// Grown on demand, up to the queue's capacity: a lane that never
		// gets a request costs nothing.
		grown := make([]*item, min(q.capac, max(16, 2*len(r.items))))
		for i := range r.n {
			grown[i] = r.items[(r.head+i)%len(r.items)]
		}
		r.items, r.head = grown, 0
	}
	r.items[(r.head+r.n)%len(r.items)] = it
	r.n++
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
	for l := range q.rings {
		r := &q.rings[l]
		kept := 0
		for i := 0; i < r.n; i++ {
			it := r.items[(r.head+i)%len(r.items)]
			if it.stale() {
				dropped = append(dropped, it)
				continue
			}
			r.items[(r.head+kept)%len(r.items)] = it
			kept++
		}
		for i := kept; i < r.n; i++ {
			r.items[(r.head+i)%len(r.items)] = nil
		}
		q.n -= r.n - kept
		r.n = kept
	}
	return dropped
}

// target is the model's target batch (policy.target), the fit it comes
// from and the largest call that fit rests on; fitted false before the
// first measured call (target is then the batch limit).
func (q *queue) target(cs *costs) (target int, a, c float64, measured int, fitted bool) {
	if m := cs.current(); m != nil {
		a, c, _, fitted = m.estimate()
		measured = m.measured()
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if !fitted {
		return q.pol.target(0, 0), 0, 0, 0, false
	}
	return q.pol.target(a, c), a, c, measured, true
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// lanes is how many requests of each lane are queued, into out (grown to
// the lanes).
func (q *queue) lanes(out []int) []int {
	q.mu.Lock()
	defer q.mu.Unlock()
	out = out[:0]
	for _, r := range q.rings {
		out = append(out, r.n)
	}
	return out
}

// oldest is how long the oldest queued item has waited (0: none queued).
func (q *queue) oldest(now time.Time) time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	var d time.Duration
	for _, r := range q.rings {
		if r.n > 0 {
			d = max(d, now.Sub(r.items[r.head].enqueued))
		}
	}
	return d
}

// at is the i-th item in the order the workers take them: every lane's
// items before the next lane's.
func (q *queue) at(i int) *item {
	for l := range q.rings {
		r := &q.rings[l]
		if i < r.n {
			return r.items[(r.head+i)%len(r.items)]
		}
		i -= r.n
	}
	panic("infer: queue index out of range") // a bug: the policy reads only below n
}

// head is the first item in take order (q.n > 0).
func (q *queue) head() *item { return q.at(0) }

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
		for q.n > 0 && q.head().stale() {
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

// popLocked takes the first item in take order (q.n > 0).
func (q *queue) popLocked() *item {
	for l := range q.rings {
		r := &q.rings[l]
		if r.n == 0 {
			continue
		}
		it := r.items[r.head]
		r.items[r.head] = nil
		r.head = (r.head + 1) % len(r.items)
		r.n--
		q.n--
		return it
	}
	panic("infer: pop of an empty queue") // a bug: callers check q.n
}

func (q *queue) batchLocked(maxItems, maxBytes int) []*item {
	var b []*item
	bytes := 0
	for q.n > 0 && len(b) < maxItems {
		it := q.head()
		if len(b) > 0 && maxBytes > 0 && bytes+it.size > maxBytes {
			break
		}
		bytes += it.size
		b = append(b, q.popLocked())
	}
	return b
}
