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
// workers. It is FIFO; a worker takes a batch off its head. Items that went
// stale while queued are handed to drop instead of to a worker.
type queue struct {
	mu    sync.Mutex
	items []*item // ring buffer
	head  int
	n     int
	ready chan struct{} // signalled (non-blocking) when items arrive
	drop  func(*item)   // gets each stale item taken off the queue
}

func newQueue(capacity int, drop func(*item)) *queue {
	if drop == nil {
		drop = func(*item) {}
	}
	return &queue{items: make([]*item, capacity), ready: make(chan struct{}, 1), drop: drop}
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

// take blocks until a batch is due and returns it: at most maxItems items
// whose sizes add up to at most maxBytes (the first item always goes), taken
// as soon as the queue holds maxItems, or when its oldest item has waited
// maxWait. With maxWait 0 it is greedy: whatever is queued when a worker
// asks. Stale items at the head are dropped, not taken. It returns nil when
// ctx is done.
func (q *queue) take(ctx context.Context, maxItems, maxBytes int, maxWait time.Duration) []*item {
	for {
		q.mu.Lock()
		var dropped []*item
		for q.n > 0 && q.items[q.head].stale() {
			dropped = append(dropped, q.popLocked())
		}
		if q.n > 0 {
			oldest := q.items[q.head]
			wait := maxWait - time.Since(oldest.enqueued)
			if q.n >= maxItems || wait <= 0 {
				b := q.batchLocked(maxItems, maxBytes)
				more := q.n > 0
				q.mu.Unlock()
				q.dropAll(dropped)
				if more { // let another idle worker see what is left
					select {
					case q.ready <- struct{}{}:
					default:
					}
				}
				return b
			}
			q.mu.Unlock()
			q.dropAll(dropped)
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-q.ready:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		q.mu.Unlock()
		q.dropAll(dropped)
		select {
		case <-ctx.Done():
			return nil
		case <-q.ready:
		}
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
