package infer

import (
	"context"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/asyncinfer/asyncinfer/schemas"
)

// fitted is a model's costs with a fit of a and c whose newest sample is
// at last.
func fitted(a, c time.Duration, last time.Time) *costs {
	cs := newCosts()
	m, _ := cs.of(defaultVersion)
	m.a, m.c, m.s0, m.last = a.Seconds(), c.Seconds(), 1, last
	return cs
}

// The adaptive policy's decisions, one at a time, with a fitted t(b) = 5ms
// + 0.25ms·b, an objective of 50ms and a downstream latency of 10ms: the
// budget L' is 40ms, b* = (L'/2 − a)/c = 60.
func TestPolicyAdaptive(t *testing.T) {
	const ms = time.Millisecond
	now := time.Unix(1e9, 0)
	// queued are n requests that arrived age ago (deadline: arrival + the
	// objective); own is a request with its own deadline, due from now.
	type queued struct {
		n    int
		age  time.Duration
		own  time.Duration // 0: the objective's deadline
		size int           // bytes; 0: 1
	}
	tests := []struct {
		name     string
		queue    []queued
		noFit    bool
		fitAge   time.Duration // since the newest sample
		rate     float64       // measured arrivals per second
		workers  int           // 0: 1
		idle     int           // workers in take; 0: 1
		limit    int           // learnt limit; 0: none
		maxBytes int
		waiting  time.Duration // how long the worker has waited already; 0: not
		upstream time.Duration // measured time from created_at to the queue
		want     decision
	}{
		{
			name:  "nothing measured yet: greedy",
			queue: []queued{{n: 300, age: 45 * ms}},
			noFit: true,
			want:  decision{take: 256, reason: flushFull},
		},
		{
			name:  "what is queued, at once",
			queue: []queued{{n: 10}},
			want:  decision{take: 10, reason: flushWorkerFreed},
		},
		{
			// Deadline at now+4ms: not even alone (5.25ms), whatever the
			// queue.
			name:  "early drop of a certain miss",
			queue: []queued{{n: 3, age: 46 * ms}, {n: 5}},
			want:  decision{drop: 3, take: 5, reason: flushWorkerFreed},
		},
		{
			// Due (less the downstream 10ms) at now+2ms, deadline at
			// now+12ms: a likely miss, but all 8 fit a batch of b* (60):
			// it takes nobody's place, and the downstream margin may be
			// enough.
			name:  "a likely miss is served while the queue fits a best batch",
			queue: []queued{{n: 3, age: 38 * ms}, {n: 5}},
			want:  decision{take: 8, reason: flushWorkerFreed},
		},
		{
			// Due at now+8ms: alone it would make it (5.25ms), but not in a
			// batch of b* = 60 (20ms), and 100 are queued: a naive drop
			// would serve it in a batch of 12 and leave the rest to pile up.
			name:  "early drop counts the batch, not the request alone",
			queue: []queued{{n: 2, age: 32 * ms}, {n: 98}},
			want:  decision{drop: 2, take: 98, reason: flushWorkerFreed},
		},
		{
			// 62 queued, the first 5 due at now+8ms: two are dropped, then
			// the 60 left fit a batch of b*, and the other three are served.
			name:  "likely misses are dropped only down to a best batch",
			queue: []queued{{n: 5, age: 32 * ms}, {n: 57}},
			want:  decision{drop: 2, take: 60, reason: flushWorkerFreed},
		},
		{
			// Due in 12ms: not in a batch of b* = 60 (20ms).
			name:  "early drop with the whole budget",
			queue: []queued{{n: 1, age: 28 * ms}, {n: 99}},
			want:  decision{drop: 1, take: 99, reason: flushWorkerFreed},
		},
		{
			// The hops before the queue took 20ms of the 40: b* = (20ms/2
			// − a)/c = 20 (10ms), so the head due in 22ms makes it with
			// the overload's margin (10ms + 10ms), in a batch of what its
			// deadline allows, 68. With b* = 60 (20ms + 10ms) it would be
			// dropped.
			name:     "the hops before the queue shrink the budget, and b*",
			queue:    []queued{{n: 1, age: 18 * ms}, {n: 99}},
			upstream: 20 * ms,
			want:     decision{take: 68, reason: flushFull},
		},
		{
			// A backlog in Kafka: they count up to half the budget.
			name:     "the hops before the queue count up to half the budget",
			queue:    []queued{{n: 1, age: 18 * ms}, {n: 99}},
			upstream: time.Second,
			want:     decision{take: 68, reason: flushFull},
		},
		{
			// 100 queued, more than b* = 20: the head, due in 12ms, would
			// end a batch of b* 2ms before its due, short of the margin
			// (one more downstream estimate) that overload asks for.
			name:     "under overload a likely miss keeps a downstream margin",
			queue:    []queued{{n: 1, age: 28 * ms}, {n: 99}},
			upstream: 20 * ms,
			want:     decision{drop: 1, take: 99, reason: flushWorkerFreed},
		},
		{
			name:   "no early drop when the fit is older than the objective: a probe",
			queue:  []queued{{n: 3, age: 38 * ms}, {n: 5}},
			fitAge: 51 * ms,
			want:   decision{take: 8, reason: flushWorkerFreed},
		},
		{
			// The head is due in 30ms = t(60) + the overload's margin
			// (10ms): it stays, and the batch is what its deadline allows,
			// 100.
			name:  "the head's deadline caps the batch",
			queue: []queued{{n: 1, age: 10 * ms}, {n: 150}},
			want:  decision{take: 100, reason: flushFull},
		},
		{
			// The head has 35ms: the deadlines allow 120 items (35ms).
			name:  "the head's slack allows more than b*",
			queue: []queued{{n: 1, age: 5 * ms}, {n: 150}},
			want:  decision{take: 120, reason: flushFull},
		},
		{
			// The second request is due in 8ms (its own deadline): the
			// deadlines allow 12, but the batch is at least b*.
			name:  "at least b*",
			queue: []queued{{n: 1, age: 10 * ms}, {n: 1, own: 18 * ms}, {n: 100}},
			want:  decision{take: 60, reason: flushFull},
		},
		{
			name:  "the learnt limit",
			queue: []queued{{n: 10}},
			limit: 4,
			want:  decision{take: 4, reason: flushFull},
		},
		{
			name:     "the byte limit",
			queue:    []queued{{n: 10, size: 100}},
			maxBytes: 350,
			want:     decision{take: 3, reason: flushFull},
		},
		{
			// n* = ⌈λa/(K − λc)⌉ = ⌈2000·5ms/(2 − 0.5)⌉ = 7; waits at most a.
			name:    "several workers, the others busy, too few to keep up: wait",
			queue:   []queued{{n: 2}},
			rate:    2000,
			workers: 2,
			want:    decision{wait: 5 * ms},
		},
		{
			name:    "the wait counts from its start",
			queue:   []queued{{n: 2}},
			rate:    2000,
			workers: 2,
			waiting: 3 * ms,
			want:    decision{wait: 2 * ms},
		},
		{
			name:    "a wait of a is over",
			queue:   []queued{{n: 2}},
			rate:    2000,
			workers: 2,
			waiting: 5 * ms,
			want:    decision{take: 2, reason: flushWaitOver},
		},
		{
			name:    "the batch that keeps up is there",
			queue:   []queued{{n: 7}},
			rate:    2000,
			workers: 2,
			waiting: time.Millisecond,
			want:    decision{take: 7, reason: flushWaitOver},
		},
		{
			// Due in 8ms: a batch of 7 takes 6.75ms, and 1ms of guard.
			name:    "the wait ends before it puts a deadline at risk",
			queue:   []queued{{n: 1, age: 32 * ms}, {n: 1}},
			rate:    2000,
			workers: 2,
			want:    decision{wait: 250 * time.Microsecond},
		},
		{
			name:    "a deadline at risk: no wait",
			queue:   []queued{{n: 1, age: 33 * ms}, {n: 1}},
			rate:    2000,
			workers: 2,
			want:    decision{take: 2, reason: flushDeadline},
		},
		{
			name:    "another worker is free: no wait",
			queue:   []queued{{n: 2}},
			rate:    2000,
			workers: 2,
			idle:    2,
			want:    decision{take: 2, reason: flushWorkerFreed},
		},
		{
			// With one worker, the requests that arrive during a call are
			// its next batch: waiting would only idle the model.
			name:  "one worker never waits",
			queue: []queued{{n: 2}},
			rate:  2000,
			want:  decision{take: 2, reason: flushWorkerFreed},
		},
		{
			// 2·5ms/(2 − 0.05): n* = 6... but the arrivals are slow enough
			// that dispatching 2 keeps up: 2·2/(5.5ms) = 727/s > 200.
			name:    "arrivals slow enough: no wait",
			queue:   []queued{{n: 2}},
			rate:    200,
			workers: 2,
			want:    decision{take: 2, reason: flushWorkerFreed},
		},
		{
			name:    "overloaded: the wait aims at b*, and no deadline allows it",
			queue:   []queued{{n: 30, age: 25 * ms}},
			rate:    20000,
			workers: 2,
			want:    decision{take: 30, reason: flushDeadline},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ModelConfig{Name: "m", MaxBatchItems: 256, MaxBatchBytes: tc.maxBytes, Objective: 50 * ms,
				DownstreamLatency: 10 * ms, Concurrency: max(1, tc.workers)}
			cfg.setDefaults()
			cfg.MaxBatchBytes = tc.maxBytes
			if cfg.Batching != BatchingAdaptive {
				t.Fatalf("batching %q with an objective, want adaptive", cfg.Batching)
			}
			limit := newBatchLimit(cfg.MaxBatchItems)
			if tc.limit > 0 {
				limit.tooLarge(2 * tc.limit)
			}
			cs := fitted(5*ms, 250*time.Microsecond, now.Add(-tc.fitAge))
			if tc.noFit {
				cs = newCosts()
			}
			p := newPolicy(cfg, limit, cs)
			p.arrivals = rateMeter{halfLife: arrivalHalfLife, last: now, v: tc.rate * arrivalHalfLife.Seconds() / 0.6931471805599453}
			p.upstream = tc.upstream
			var items []*item
			req := &schemas.Request{}
			for _, q := range tc.queue {
				for range q.n {
					it := &item{req: req, size: max(1, q.size), enqueued: now.Add(-q.age), deadline: now.Add(-q.age + cfg.Objective)}
					if q.own > 0 {
						it.deadline = now.Add(q.own)
					}
					items = append(items, it)
				}
			}
			var waitingSince time.Time
			if tc.waiting > 0 {
				waitingSince = now.Add(-tc.waiting)
			}
			got := p.decide(now, len(items), func(i int) *item { return items[i] }, waitingSince, max(1, tc.idle))
			if got != tc.want {
				t.Errorf("decide = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// Several workers stagger: one waits for a fuller batch while the others
// are busy, and it stops waiting as soon as another worker is free.
func TestQueueStaggers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const ms = time.Millisecond
		cfg := ModelConfig{Name: "m", MaxBatchItems: 64, Objective: time.Second, Concurrency: 2}
		cfg.setDefaults()
		p := newPolicy(cfg, newBatchLimit(64), fitted(5*ms, 250*time.Microsecond, time.Now()))
		// Arrivals measured at 2,000/s: with two workers, n* = 7.
		p.arrivals = rateMeter{halfLife: arrivalHalfLife, last: time.Now(), v: 2000 * arrivalHalfLife.Seconds() / 0.6931471805599453}
		q := newQueue(64, p, nil, nil)
		push := func(n int) {
			t.Helper()
			for range n {
				if !q.push(&item{req: &schemas.Request{}, size: 1, enqueued: time.Now()}) {
					t.Fatal("push refused")
				}
			}
		}
		type took struct {
			n   int
			why flushReason
			at  time.Duration
		}
		start := time.Now()
		worker := func() <-chan took {
			ch := make(chan took, 1)
			go func() {
				b, why := q.take(t.Context())
				ch <- took{len(b), why, time.Since(start)}
			}()
			return ch
		}
		pending := func(ch <-chan took, who string) {
			t.Helper()
			synctest.Wait()
			select {
			case got := <-ch:
				t.Fatalf("%s took %d (%s) after %v; want it waiting", who, got.n, got.why, got.at)
			default:
			}
		}
		check := func(got took, n int, why flushReason, at time.Duration) {
			t.Helper()
			if got.n != n || got.why != why || got.at != at {
				t.Fatalf("took %d (%s) after %v, want %d (%s) after %v", got.n, got.why, got.at, n, why, at)
			}
		}

		// Both workers free: the first takes what comes at once.
		w1, w2 := worker(), worker()
		synctest.Wait()
		push(1)
		synctest.Wait()
		var first, second <-chan took
		select {
		case got := <-w1:
			check(got, 1, flushWorkerFreed, 0)
			second = w2
		case got := <-w2:
			check(got, 1, flushWorkerFreed, 0)
			second = w1
		}
		// The other is the only free worker: it waits for a batch of 7.
		push(2)
		pending(second, "the only free worker, 3 queued")
		time.Sleep(ms)
		push(5)
		check(<-second, 7, flushWaitOver, ms)

		// Again, but the busy worker frees while the other waits: the
		// waiter takes what is queued at once, and the one that freed waits
		// in its turn, at most a.
		first = worker()
		push(3)
		pending(first, "the waiter")
		time.Sleep(2 * ms)
		second = worker()
		check(<-first, 3, flushWorkerFreed, 3*ms)
		push(1)
		pending(second, "the worker that freed")
		time.Sleep(10 * ms)
		check(<-second, 1, flushWaitOver, 8*ms)
	})
}

// Items the policy drops early leave the queue through expire, the others
// stay queued in order.
func TestQueueEarlyDrop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const ms = time.Millisecond
		cfg := ModelConfig{Name: "m", MaxBatchItems: 64, Objective: 50 * ms, DownstreamLatency: 10 * ms}
		cfg.setDefaults()
		var expired []int
		q := newQueue(64, newPolicy(cfg, newBatchLimit(64), fitted(5*ms, 250*time.Microsecond, time.Now())), nil,
			func(it *item) { expired = append(expired, it.size) })
		for i := range 4 {
			now := time.Now()
			q.push(&item{req: &schemas.Request{}, size: i + 1, enqueued: now, deadline: now.Add(cfg.Objective)})
			time.Sleep(2 * ms)
		}
		// The first can no longer make its deadline even alone (4ms left,
		// a call takes 5.25ms); the second can (6ms), and is served though
		// the downstream estimate (10ms) says it will miss: nothing else
		// waits for its place.
		time.Sleep(38 * ms)
		b, why := q.take(context.Background())
		if !slices.Equal(expired, []int{1}) || !slices.Equal(itemSizes(b), []int{2, 3, 4}) || why != flushWorkerFreed {
			t.Fatalf("expired %v, took %v (%s); want [1] expired, [2 3 4] taken", expired, itemSizes(b), why)
		}
	})
}

// The policy measures the time requests took to reach the queue: the hops
// before it eat the budget b* is computed from.
func TestPolicyMeasuresUpstream(t *testing.T) {
	cfg := ModelConfig{Name: "m", Objective: 100 * time.Millisecond}
	cfg.setDefaults()
	p := newPolicy(cfg, newBatchLimit(cfg.MaxBatchItems), newCosts())
	now := time.Unix(1e9, 0)
	for i := range 1000 {
		at := now.Add(time.Duration(i) * time.Millisecond)
		p.arrived(&item{req: &schemas.Request{CreatedAtMs: at.Add(-30 * time.Millisecond).UnixMilli()}, enqueued: at})
	}
	if p.upstream < 29*time.Millisecond || p.upstream > 31*time.Millisecond {
		t.Errorf("upstream %v, want 30ms", p.upstream)
	}
	if got, want := p.budget(), 60*time.Millisecond; got < want-time.Millisecond || got > want+time.Millisecond {
		t.Errorf("budget %v, want about %v (100ms less 10 downstream, 30 upstream)", got, want)
	}
	p.arrived(&item{req: &schemas.Request{}, enqueued: now}) // no created_at: not counted
	if p.upstream < 29*time.Millisecond {
		t.Errorf("a request without created_at moved the mean to %v", p.upstream)
	}
}
