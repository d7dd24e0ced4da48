package infer

import (
	"math"
	"time"
)

// Batching is how a freed worker forms a batch.
type Batching string

const (
	// BatchingAuto is adaptive when the model has a latency objective and
	// no max_wait, else window.
	BatchingAuto Batching = ""
	// BatchingAdaptive sizes batches and waits from the model's fitted cost
	// and each request's deadline, and drops early what cannot make it.
	BatchingAdaptive Batching = "adaptive"
	// BatchingWindow is greedy, waiting up to MaxWait for a fuller batch
	// (Triton's max_queue_delay): the fixed policy the benchmark compares
	// with.
	BatchingWindow Batching = "window"
)

// flushReason says why a batch left the queue when it did; it is the
// label of asyncinfer_batch_flushes_total.
type flushReason uint8

const (
	// flushFull: the queue held at least what one call may take (the
	// items, bytes or learnt limit, or what the deadlines allow).
	flushFull flushReason = iota
	// flushWorkerFreed: a worker freed and nothing was worth waiting for.
	flushWorkerFreed
	// flushWaitOver: a wait for a fuller batch ended: the batch reached the
	// size that keeps up with the arrivals, or the wait its bound
	// (max_wait; adaptive: the model's fixed cost a).
	flushWaitOver
	// flushDeadline: waiting longer would put a queued request's deadline
	// at risk.
	flushDeadline
	numFlushReasons
)

var flushReasons = [numFlushReasons]string{"full", "worker_freed", "wait_over", "deadline"}

func (r flushReason) String() string { return flushReasons[r] }

// decision is what a freed worker does now.
type decision struct {
	drop   int // requests to answer EXPIRED (deadline_unreachable) off the head
	take   int // requests to take off the head (after drop) as a batch; 0: wait
	reason flushReason
	// wait (when take is 0 and requests are queued): decide again after it,
	// or at the next arrival, whichever comes first.
	wait time.Duration
}

// waitGuard is what a wait leaves between its end and the latest moment a
// batch can start and still meet the deadlines: timer and scheduling
// latency, estimation error.
const waitGuard = time.Millisecond

// arrivalHalfLife is the memory of the arrival rate the adaptive policy
// waits by: short enough to see a burst, long enough not to chase every
// Poisson gap.
const arrivalHalfLife = 250 * time.Millisecond

// policy decides, each time a worker is free, what it takes off its model's
// queue, and when it waits for a fuller batch instead. The queue asks it
// under its lock, so it must not block; one worker at a time asks (the
// others wait their turn), so that workers stagger instead of all waiting
// for the same batch.
//
// Window (greedy when MaxWait is 0): take what is queued up to the limits;
// when less than a full batch is queued, wait until the oldest request has
// waited MaxWait.
//
// Adaptive, from the model's fitted cost t(b) = a + c·b (costModel), the
// latency objective L, and each request's effective deadline: min(its
// deadline, created_at + L) minus the time from the model's answer to a
// result the client can read (DownstreamLatency):
//
//  1. Early drop (Nexus, SOSP'19): b* = (L'/2 − a)/c is the batch that
//     serves the most within the stage's budget L' (half of it waiting for
//     the running batch, half running its own); L' is L less
//     DownstreamLatency and less the measured mean time from created_at to
//     the queue (the hops before; counted up to half of what is left).
//     From the head, a request is answered EXPIRED (deadline_unreachable)
//     at once when it cannot make its deadline itself even alone, or, while
//     more than b* are queued, when a batch of b* would not end by its
//     effective deadline less one more DownstreamLatency (a margin for the
//     hops after the model: under overload the model is busy whichever
//     requests it serves, so it serves those that can absorb a slow hop).
//     Dropping only what cannot make it alone would serve nearly-expired
//     heads in tiny batches and collapse under overload; this keeps the
//     model busy with requests that can still make it. When no more than
//     b* are queued, a request that would miss only by the downstream
//     estimate takes nobody's place, and is served.
//  2. Take what is queued, up to the limits (items, bytes, the learnt
//     limit) and up to the largest batch whose estimated time still lets
//     every request in it meet its deadline, but at least b*.
//  3. When all of the queue fits that call, a worker waits for a fuller
//     batch only while waiting can raise throughput and no deadline is put
//     at risk: the model has several workers, all the others are busy (a
//     free one would take the arrivals at once), and dispatching n now
//     cannot keep up with the measured arrivals λ on K workers (λ >
//     K·n/(a + c·n)). It waits until the queue holds the n* =
//     ⌈λa/(K − λc)⌉ that keeps up (at most b*), another worker frees, or
//     the moment a batch of n* would make the earliest queued deadline
//     miss (less waitGuard), and never longer than a in all: waiting longer
//     costs more than the extra call it saves. With one worker it never
//     waits: the requests that arrive during a call are its next batch
//     anyway, so waiting could only idle the model (in the simulation it
//     raised p99 by 4–20% at 0.1–0.9 X* and gained nothing).
//
// Before the model's first measured call, and for the requests of a model
// version not called yet, adaptive is greedy: nothing is dropped on a
// guess. Early drop also pauses when no call was measured for longer than
// the objective (an outage, a model that looked too slow): the next batch
// is a probe that measures it again, so a cost that was once too high for
// every deadline cannot drop everything forever.
type policy struct {
	adaptive   bool
	maxWait    time.Duration
	maxItems   int
	maxBytes   int
	objective  time.Duration
	downstream time.Duration
	workers    int
	limit      *batchLimit
	costs      *costs
	arrivals   rateMeter // guarded by the queue's lock
	// upstream is the mean time requests took from created_at to the queue
	// (the hops before this stage), exponentially weighted; guarded by
	// the queue's lock.
	upstream time.Duration
}

// upstreamWeight is the weight of each arrival in the mean upstream time.
const upstreamWeight = 1.0 / 64

func newPolicy(cfg ModelConfig, limit *batchLimit, cs *costs) *policy {
	return &policy{
		adaptive: cfg.Batching == BatchingAdaptive, maxWait: cfg.MaxWait, maxItems: cfg.MaxBatchItems,
		maxBytes: cfg.MaxBatchBytes, objective: cfg.Objective, downstream: cfg.DownstreamLatency,
		workers: cfg.Concurrency, limit: limit, costs: cs, arrivals: rateMeter{halfLife: arrivalHalfLife},
	}
}

// arrived counts an arrival (the queue's lock held).
func (p *policy) arrived(it *item) {
	p.arrivals.add(it.enqueued)
	if it.req != nil && it.req.CreatedAtMs > 0 {
		u := max(0, it.enqueued.Sub(time.UnixMilli(it.req.CreatedAtMs)))
		p.upstream += time.Duration(upstreamWeight * float64(u-p.upstream))
	}
}

// budget is the time the stage has for a request: the objective less the
// hops after the model (DownstreamLatency) and before the queue (measured),
// the latter counted up to half of what is left, so that a backlog in
// Kafka (requests that reach the queue late) cannot shrink b* to nothing:
// that would serve nearly-late requests in tiny batches and collapse.
func (p *policy) budget() time.Duration {
	l := p.objective - p.downstream
	return l - min(p.upstream, l/2)
}

// batchLimit is the most items one call takes now: the item limit, or the
// lower limit learnt from too-large errors; at least 1.
func (p *policy) batchLimit() int { return max(1, min(p.maxItems, p.limit.get())) }

// target is the batch the policy aims at under load for a model that costs
// a + c·b seconds: b* (the adaptive policy's: the most items whose call
// takes half the stage's budget), or the batch limit (window); at least 1.
// The queue's lock is held (budget reads upstream).
func (p *policy) target(a, c float64) int {
	limit := p.batchLimit()
	if !p.adaptive || c <= 0 {
		return limit
	}
	if b := (p.budget().Seconds()/2 - a) / c; b < float64(limit) {
		return max(1, int(math.Floor(b)))
	}
	return limit
}

// due is the effective deadline of a request: the latest moment its answer
// may leave the model; ok false when it has none.
func (p *policy) due(it *item) (time.Time, bool) {
	if it.deadline.IsZero() {
		return time.Time{}, false
	}
	return it.deadline.Add(-p.downstream), true
}

// capacity is how many of the first n requests one call may carry by the
// item, learnt and byte limits; full when that is a whole call.
func (p *policy) capacity(n int, at func(int) *item) (k int, full bool) {
	limit := p.batchLimit()
	k = min(n, limit)
	if p.maxBytes > 0 {
		bytes := 0
		for i := range k {
			bytes += at(i).size
			if i > 0 && bytes > p.maxBytes {
				return i, true
			}
		}
	}
	return k, k == limit
}

// decide is what a freed worker does with the n queued requests (at(0) the
// oldest) at now; waitingSince is when it started waiting for a fuller
// batch (zero: it did not).
func (p *policy) decide(now time.Time, n int, at func(int) *item, waitingSince time.Time, idle int) decision {
	if n == 0 {
		return decision{}
	}
	if !p.adaptive {
		return p.window(now, n, at)
	}
	var (
		a, c float64
		last time.Time
		ok   bool
	)
	if head := at(0); head.req != nil {
		if m := p.costs.lookup(versionLabel(head.req.ModelVersion)); m != nil {
			a, c, last, ok = m.estimate()
		}
	}
	k, full := p.capacity(n, at)
	if !ok {
		return decision{take: k, reason: pick(full, flushFull, flushWorkerFreed)}
	}
	cost := func(b int) time.Duration { return time.Duration((a + c*float64(b)) * float64(time.Second)) }
	bstar := p.target(a, c)

	// 1. Early drop.
	d := decision{}
	if now.Sub(last) <= p.objective {
		for d.drop < n {
			it := at(d.drop)
			due, has := p.due(it)
			if !has {
				break
			}
			// A certain miss: not even alone, by the deadline itself.
			certain := now.Add(cost(1)).After(it.deadline)
			// A likely miss is dropped only while the queue holds more
			// than a batch of b*: then it would take a place that a
			// request that can still make it needs. Below, it takes
			// nobody's place, and the estimate's margin is often enough
			// (measured: dropping those expired 3-5% of requests at
			// 0.35-0.7 X*, where fixed windows answered every one in
			// time). Under that overload the model is busy whichever
			// requests it serves, and the ones FIFO serves are those at
			// the edge of their deadline, whose answer then makes it only
			// if the hops after the model take no longer than the
			// downstream estimate: a request is a likely miss when it
			// would not finish by its due less one more downstream
			// estimate, so that what is served can absorb a downstream
			// hop of twice the estimate (with Kafka's hop times in the
			// simulation, TestSimOverloadWithHops: goodput at 2 X* from
			// 0.74 to 0.87 X*, served late from 15% to 1.9%).
			likely := n-d.drop > bstar && now.Add(cost(bstar)+p.downstream).After(due)
			if !certain && !likely {
				break
			}
			d.drop++
		}
	}
	n -= d.drop
	if n == 0 {
		return d
	}
	rest := func(i int) *item { return at(d.drop + i) }
	if d.drop > 0 {
		k, full = p.capacity(n, rest)
	}

	// 2. The batch: what the deadlines allow, at least b*.
	allowed := 0
	var earliest time.Time // earliest due of the first allowed+1
	for m := 1; m <= k; m++ {
		if due, has := p.due(rest(m - 1)); has && (earliest.IsZero() || due.Before(earliest)) {
			earliest = due
		}
		if !earliest.IsZero() && now.Add(cost(m)).After(earliest) {
			break
		}
		allowed = m
	}
	d.take = min(k, max(bstar, allowed))
	if full || d.take < n {
		d.reason = flushFull
		return d
	}

	// 3. Everything queued fits this call: wait for more?
	waited := !waitingSince.IsZero()
	lambda, workers := p.arrivals.rate(now), float64(max(1, p.workers))
	nstar := bstar
	if den := workers - lambda*c; den > 0 {
		nstar = min(bstar, int(math.Ceil(lambda*a/den)))
	}
	switch {
	case n >= nstar && waited:
		d.reason = flushWaitOver
		return d
	case n >= nstar || p.workers <= 1 || idle > 1:
		d.reason = flushWorkerFreed
		return d
	}
	for i := range n { // the deadline a batch of n* would put at risk
		if due, has := p.due(rest(i)); has && (earliest.IsZero() || due.Before(earliest)) {
			earliest = due
		}
	}
	start := now
	if waited {
		start = waitingSince
	}
	until := start.Add(cost(0))
	reason := flushWaitOver
	if !earliest.IsZero() {
		if latest := earliest.Add(-cost(nstar) - waitGuard); latest.Before(until) {
			until, reason = latest, flushDeadline
		}
	}
	if !now.Before(until) {
		d.reason = reason
		if !waited && reason == flushWaitOver {
			d.reason = flushWorkerFreed // a is 0: never worth waiting
		}
		return d
	}
	d.take = 0
	d.wait = until.Sub(now)
	return d
}

// window is the fixed policy: greedy, or waiting up to maxWait from the
// oldest request.
func (p *policy) window(now time.Time, n int, at func(int) *item) decision {
	k, full := p.capacity(n, at)
	switch {
	case full:
		return decision{take: k, reason: flushFull}
	case p.maxWait <= 0:
		return decision{take: k, reason: flushWorkerFreed}
	}
	if waited := now.Sub(at(0).enqueued); waited < p.maxWait {
		return decision{wait: p.maxWait - waited}
	}
	return decision{take: k, reason: flushWaitOver}
}

func pick[T any](cond bool, yes, no T) T {
	if cond {
		return yes
	}
	return no
}
