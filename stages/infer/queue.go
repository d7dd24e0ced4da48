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
	w        *pipeline.Work
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

// queue is the bounded in-memory queue of one model, in front of its
// workers. It is FIFO; a worker takes a batch off its head.
type queue struct {
	mu    sync.Mutex
	items []*item // ring buffer
	head  int
	n     int
	ready chan struct{} // signalled (non-blocking) when items arrive
}

func newQueue(capacity int) *queue {
	return &queue{items: make([]*item, capacity), ready: make(chan struct{}, 1)}
}

// push appends it; false when the queue is full.
func (q *queue) push(it *item) bool {
	q.mu.Lock()
	if q.n == len(q.items) {
		q.mu.Unlock()
		return false
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

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// take blocks until a batch is due and returns it: at most maxItems items
// whose sizes add up to at most maxBytes (the first item always goes), taken
// as soon as the queue holds maxItems, or when its oldest item has waited
// maxWait. With maxWait 0 it is greedy: whatever is queued when a worker
// asks. It returns nil when ctx is done.
func (q *queue) take(ctx context.Context, maxItems, maxBytes int, maxWait time.Duration) []*item {
	for {
		q.mu.Lock()
		if q.n > 0 {
			oldest := q.items[q.head]
			wait := maxWait - time.Since(oldest.enqueued)
			if q.n >= maxItems || wait <= 0 {
				b := q.popLocked(maxItems, maxBytes)
				more := q.n > 0
				q.mu.Unlock()
				if more { // let another idle worker see what is left
					select {
					case q.ready <- struct{}{}:
					default:
					}
				}
				return b
			}
			q.mu.Unlock()
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
		select {
		case <-ctx.Done():
			return nil
		case <-q.ready:
		}
	}
}

func (q *queue) popLocked(maxItems, maxBytes int) []*item {
	var b []*item
	bytes := 0
	for q.n > 0 && len(b) < maxItems {
		it := q.items[q.head]
		if len(b) > 0 && maxBytes > 0 && bytes+it.size > maxBytes {
			break
		}
		bytes += it.size
		b = append(b, it)
		q.items[q.head] = nil
		q.head = (q.head + 1) % len(q.items)
		q.n--
	}
	return b
}
