package infer

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// sizes lists the sizes of a batch: the tests tell items apart by size.
func itemSizes(b []*item) []int {
	var out []int
	for _, it := range b {
		out = append(out, it.size)
	}
	return out
}

func pushSizes(t *testing.T, q *queue, ss ...int) {
	t.Helper()
	for _, s := range ss {
		if !q.push(&item{size: s, enqueued: time.Now()}) {
			t.Fatalf("push(size %d) refused", s)
		}
	}
}

// windowQueue is a queue whose policy is the fixed window (greedy when
// maxWait is 0).
func windowQueue(capacity, maxItems, maxBytes int, maxWait time.Duration) *queue {
	cfg := ModelConfig{MaxBatchItems: maxItems, MaxBatchBytes: maxBytes, MaxWait: maxWait, Batching: BatchingWindow, Concurrency: 1}
	return newQueue(capacity, newPolicy(cfg, newBatchLimit(maxItems), newCosts()), nil, nil)
}

// takeBatch is take's batch.
func takeBatch(ctx context.Context, q *queue) []*item {
	b, _ := q.take(ctx)
	return b
}

// takeAsync runs take in a goroutine of the bubble; the batch arrives on the
// channel (nil when take gave up).
func takeAsync(ctx context.Context, q *queue) <-chan []*item {
	ch := make(chan []*item, 1)
	go func() { ch <- takeBatch(ctx, q) }()
	return ch
}

func mustNotReturn(t *testing.T, ch <-chan []*item, when string) {
	t.Helper()
	synctest.Wait()
	select {
	case b := <-ch:
		t.Fatalf("%s: take returned %v early", when, itemSizes(b))
	default:
	}
}

func mustReturn(t *testing.T, ch <-chan []*item, when string) []*item {
	t.Helper()
	synctest.Wait()
	select {
	case b := <-ch:
		return b
	default:
		t.Fatalf("%s: take still blocked", when)
		return nil
	}
}

// TestQueueTakeQueued covers takes that find their batch already due.
func TestQueueTakeQueued(t *testing.T) {
	tests := []struct {
		name     string
		queued   []int
		maxItems int
		maxBytes int
		maxWait  time.Duration
		want     [][]int // successive takes
	}{
		{"greedy takes what is queued", []int{1, 2, 3}, 8, 0, 0, [][]int{{1, 2, 3}}},
		{"greedy up to maxItems", []int{1, 2, 3, 4, 5}, 2, 0, 0, [][]int{{1, 2}, {3, 4}, {5}}},
		{"maxItems reached with a wait", []int{1, 2, 3}, 3, 0, time.Hour, [][]int{{1, 2, 3}}},
		{"more than maxItems with a wait", []int{1, 2, 3, 4, 5}, 2, 0, time.Hour, [][]int{{1, 2}, {3, 4}}},
		{"maxBytes stops the batch", []int{4, 4, 4}, 10, 8, 0, [][]int{{4, 4}, {4}}},
		{"maxBytes exactly filled", []int{3, 5, 1}, 10, 8, 0, [][]int{{3, 5}, {1}}},
		{"first item goes even if too large", []int{50, 1, 1}, 10, 8, 0, [][]int{{50}, {1, 1}}},
		{"too large item waits for the next batch", []int{1, 50, 1}, 10, 8, 0, [][]int{{1}, {50}, {1}}},
		{"maxBytes 0 is no limit", []int{1 << 20, 1 << 20}, 10, 0, 0, [][]int{{1 << 20, 1 << 20}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				q := windowQueue(16, tc.maxItems, tc.maxBytes, tc.maxWait)
				pushSizes(t, q, tc.queued...)
				start := time.Now()
				for i, want := range tc.want {
					got := takeBatch(t.Context(), q)
					if !slices.Equal(itemSizes(got), want) {
						t.Fatalf("take %d = %v, want %v", i, itemSizes(got), want)
					}
				}
				if d := time.Since(start); d != 0 {
					t.Fatalf("takes of due batches waited %v", d)
				}
				var left int
				for _, w := range tc.want {
					left -= len(w)
				}
				left += len(tc.queued)
				if q.len() != left {
					t.Fatalf("len = %d after the takes, want %d", q.len(), left)
				}
			})
		})
	}
}

func TestQueueGreedyBlocksUntilPush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := windowQueue(4, 4, 0, 0)
		ch := takeAsync(t.Context(), q)
		mustNotReturn(t, ch, "empty queue")
		time.Sleep(time.Minute)
		mustNotReturn(t, ch, "empty queue after a minute")
		pushSizes(t, q, 7)
		if got := itemSizes(mustReturn(t, ch, "after push")); !slices.Equal(got, []int{7}) {
			t.Fatalf("take = %v, want [7]", got)
		}
	})
}

func TestQueueMaxWait(t *testing.T) {
	const maxWait = 100 * time.Millisecond
	tests := []struct {
		name string
		// before runs before take is called; after while take waits.
		before, after func(t *testing.T, q *queue)
		want          []int
		wantWait      time.Duration // fake time from take to its return
	}{
		{
			name:     "single item goes after maxWait",
			before:   func(t *testing.T, q *queue) { pushSizes(t, q, 1) },
			want:     []int{1},
			wantWait: maxWait,
		},
		{
			name:   "maxWait counts from the oldest item",
			before: func(t *testing.T, q *queue) { pushSizes(t, q, 1); time.Sleep(60 * time.Millisecond) },
			after: func(t *testing.T, q *queue) {
				time.Sleep(10 * time.Millisecond)
				pushSizes(t, q, 2)
			},
			want:     []int{1, 2},
			wantWait: 40 * time.Millisecond,
		},
		{
			name:   "newer items do not extend the wait",
			before: func(t *testing.T, q *queue) { pushSizes(t, q, 1) },
			after: func(t *testing.T, q *queue) {
				for i := range 3 {
					time.Sleep(30 * time.Millisecond)
					pushSizes(t, q, 2+i)
				}
			},
			want:     []int{1, 2, 3, 4},
			wantWait: maxWait,
		},
		{
			name:   "goes at once when the queue reaches maxItems",
			before: func(t *testing.T, q *queue) { pushSizes(t, q, 1) },
			after: func(t *testing.T, q *queue) {
				time.Sleep(10 * time.Millisecond)
				pushSizes(t, q, 2, 3, 4, 5)
			},
			want:     []int{1, 2, 3, 4, 5},
			wantWait: 10 * time.Millisecond,
		},
		{
			name: "empty queue: the wait starts at the first push",
			after: func(t *testing.T, q *queue) {
				time.Sleep(time.Second)
				pushSizes(t, q, 1)
			},
			want:     []int{1},
			wantWait: time.Second + maxWait,
		},
		{
			name:     "an item older than maxWait goes at once",
			before:   func(t *testing.T, q *queue) { pushSizes(t, q, 1); time.Sleep(time.Second) },
			want:     []int{1},
			wantWait: 0,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				q := windowQueue(16, 5, 0, maxWait)
				if tc.before != nil {
					tc.before(t, q)
				}
				start := time.Now()
				var end time.Time
				ch := make(chan []*item, 1)
				go func() {
					b := takeBatch(t.Context(), q)
					end = time.Now()
					ch <- b
				}()
				if tc.after != nil {
					tc.after(t, q)
				}
				b := <-ch
				if got := itemSizes(b); !slices.Equal(got, tc.want) {
					t.Fatalf("take = %v, want %v", got, tc.want)
				}
				if got := end.Sub(start); got != tc.wantWait {
					t.Fatalf("take returned after %v, want %v", got, tc.wantWait)
				}
			})
		})
	}
}

func TestQueueMaxWaitNotEarly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := windowQueue(4, 4, 0, time.Second)
		pushSizes(t, q, 1)
		ch := takeAsync(t.Context(), q)
		mustNotReturn(t, ch, "at once")
		time.Sleep(time.Second - time.Nanosecond)
		mustNotReturn(t, ch, "just before maxWait")
		time.Sleep(time.Nanosecond)
		if got := itemSizes(mustReturn(t, ch, "at maxWait")); !slices.Equal(got, []int{1}) {
			t.Fatalf("take = %v, want [1]", got)
		}
	})
}

func TestQueuePushFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := windowQueue(3, 2, 0, 0)
		pushSizes(t, q, 1, 2, 3)
		if q.push(&item{size: 4, enqueued: time.Now()}) {
			t.Fatal("push on a full queue = true, want false")
		}
		if q.len() != 3 {
			t.Fatalf("len = %d, want 3", q.len())
		}
		// Free two slots, then wrap around the ring: FIFO order holds.
		if got := itemSizes(takeBatch(t.Context(), q)); !slices.Equal(got, []int{1, 2}) {
			t.Fatalf("take = %v, want [1 2]", got)
		}
		pushSizes(t, q, 4, 5)
		if q.push(&item{size: 6, enqueued: time.Now()}) {
			t.Fatal("push on a full (wrapped) queue = true, want false")
		}
		q.pol.maxItems = 10
		q.pol.limit = newBatchLimit(10)
		if got := itemSizes(takeBatch(t.Context(), q)); !slices.Equal(got, []int{3, 4, 5}) {
			t.Fatalf("take = %v, want [3 4 5]", got)
		}
		if q.len() != 0 {
			t.Fatalf("len = %d, want 0", q.len())
		}
	})
}

func TestQueueZeroCapacity(t *testing.T) {
	q := windowQueue(0, 1, 0, 0)
	if q.push(&item{size: 1}) {
		t.Fatal("push on a zero-capacity queue = true, want false")
	}
}

func TestQueueTakeCancelled(t *testing.T) {
	tests := []struct {
		name    string
		queued  []int
		maxWait time.Duration
	}{
		{"empty queue", nil, 0},
		{"empty queue with a wait", nil, time.Second},
		{"waiting for a fuller batch", []int{1}, time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				q := windowQueue(4, 4, 0, tc.maxWait)
				pushSizes(t, q, tc.queued...)
				ctx, cancel := context.WithCancel(t.Context())
				ch := takeAsync(ctx, q)
				mustNotReturn(t, ch, "before cancel")
				cancel()
				if b := mustReturn(t, ch, "after cancel"); b != nil {
					t.Fatalf("take after cancel = %v, want nil", itemSizes(b))
				}
				if q.len() != len(tc.queued) {
					t.Fatalf("len = %d after a cancelled take, want %d", q.len(), len(tc.queued))
				}
			})
		})
	}
}

// TestQueueWakesEveryIdleWorker: a burst of items, one per idle worker, must
// reach every worker, although the signal holds a single token.
func TestQueueWakesEveryIdleWorker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := windowQueue(8, 1, 0, 0)
		const workers = 3
		chs := make([]<-chan []*item, workers)
		for i := range chs {
			chs[i] = takeAsync(t.Context(), q)
		}
		synctest.Wait()
		pushSizes(t, q, 1, 2, 3)
		var got []int
		for i, ch := range chs {
			got = append(got, itemSizes(mustReturn(t, ch, fmt.Sprintf("worker %d", i)))...)
		}
		slices.Sort(got)
		if !slices.Equal(got, []int{1, 2, 3}) {
			t.Fatalf("workers took %v, want [1 2 3]", got)
		}
	})
}

// With lanes, a take sees (and takes) every request of a higher lane before
// any of a lower one, each lane in its own order; the capacity bounds all
// lanes together; stale items of any lane are purged to make room.
func TestQueueLanes(t *testing.T) {
	type push struct{ lane, size int }
	tests := []struct {
		name     string
		pushes   []push
		maxItems int
		want     [][]int
	}{
		{"a higher lane first", []push{{2, 1}, {2, 2}, {0, 3}, {1, 4}}, 8, [][]int{{3, 4, 1, 2}}},
		{"batches fill from the highest lane", []push{{1, 1}, {1, 2}, {0, 3}, {0, 4}, {0, 5}}, 2, [][]int{{3, 4}, {5, 1}, {2}}},
		{"one lane is a FIFO", []push{{1, 1}, {1, 2}, {1, 3}}, 2, [][]int{{1, 2}, {3}}},
		{"a lane out of range goes to the nearest", []push{{7, 1}, {1, 2}, {-1, 3}}, 8, [][]int{{3, 2, 1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := ModelConfig{MaxBatchItems: tc.maxItems, Batching: BatchingWindow, Concurrency: 1}
				q := newLaneQueue(3, 16, newPolicy(cfg, newBatchLimit(tc.maxItems), newCosts()), nil, nil)
				for _, p := range tc.pushes {
					if !q.push(&item{size: p.size, lane: p.lane, enqueued: time.Now()}) {
						t.Fatalf("push %+v refused", p)
					}
				}
				for i, want := range tc.want {
					if got := itemSizes(takeBatch(t.Context(), q)); !slices.Equal(got, want) {
						t.Fatalf("take %d = %v, want %v", i, got, want)
					}
				}
				if q.len() != 0 {
					t.Fatalf("%d left", q.len())
				}
			})
		})
	}

	synctest.Test(t, func(t *testing.T) {
		cfg := ModelConfig{MaxBatchItems: 8, Batching: BatchingWindow, Concurrency: 1}
		q := newLaneQueue(3, 3, newPolicy(cfg, newBatchLimit(8), newCosts()), nil, nil)
		stale := make(chan struct{})
		close(stale)
		q.push(&item{size: 1, lane: 2, enqueued: time.Now()})
		time.Sleep(time.Second)
		q.push(&item{size: 2, lane: 0, enqueued: time.Now(), done: stale})
		q.push(&item{size: 3, lane: 1, enqueued: time.Now()})
		if got := q.lanes(nil); !slices.Equal(got, []int{1, 1, 1}) {
			t.Fatalf("lanes %v", got)
		}
		if got := q.oldest(time.Now()); got != time.Second {
			t.Fatalf("oldest %v, want the low lane's second", got)
		}
		// Full across the lanes: the stale item makes room.
		if !q.push(&item{size: 4, lane: 0, enqueued: time.Now()}) {
			t.Fatal("push refused although a queued item is stale")
		}
		if q.push(&item{size: 5, lane: 2, enqueued: time.Now()}) {
			t.Fatal("push accepted past the capacity")
		}
		if got := itemSizes(takeBatch(t.Context(), q)); !slices.Equal(got, []int{4, 3, 1}) {
			t.Fatalf("take = %v, want [4 3 1]", got)
		}
	})
}
