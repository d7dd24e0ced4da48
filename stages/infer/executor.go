package infer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/asyncinfer/asyncinfer/connectors/backend"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

// executor runs batches of one model until every item has an outcome: it
// retries transient failures with backoff behind a circuit breaker, splits a
// batch that fails for a bad input (or is too large) until the culprit is
// alone, honours per-item errors, expires what passed its deadline, and
// drops work that went stale without calling the model for it.
type executor struct {
	cfg    ModelConfig
	br     *breaker
	m      *Metrics
	answer func(*item, *schemas.Result) // a terminal outcome for the item; it must not keep the Result
	drop   func(*item)                  // let go of a stale item
	// What the calls teach: the model's cost (nil: not measured), its batch
	// limit (nil: none learnt), how busy its workers are (nil: not counted).
	costs *costs
	limit *batchLimit
	busy  *busyMeter
	// The children of the metrics counted per call, resolved once.
	hotOnce sync.Once
	hot     callMetrics
}

type callMetrics struct {
	seconds, size prometheus.Observer
	ok            prometheus.Counter
}

func (e *executor) callMetrics() *callMetrics {
	e.hotOnce.Do(func() {
		e.hot = callMetrics{e.m.CallSeconds.WithLabelValues(e.cfg.Name), e.m.BatchSize.WithLabelValues(e.cfg.Name),
			e.m.Calls.WithLabelValues(e.cfg.Name, "ok")}
	})
	return &e.hot
}

// ReasonDeadlineUnreachable is the reason of an EXPIRED answer to a request
// the adaptive batcher dropped early: no batch could answer it within its
// deadline (or the model's latency objective).
const ReasonDeadlineUnreachable = "deadline_unreachable"

// unreachable answers an item the batcher dropped early: one whose deadline
// has passed already is expired as the executor expires it (the reason
// says which deadline); the others with ReasonDeadlineUnreachable.
func (e *executor) unreachable(it *item) {
	if it.stale() {
		e.drop(it)
		return
	}
	if len(e.expire([]*item{it})) == 0 {
		return
	}
	e.m.EarlyDrops.WithLabelValues(e.cfg.Name).Inc()
	e.answer(it, &schemas.Result{Status: schemas.StatusExpired, Reason: ReasonDeadlineUnreachable, Attempt: it.attempt})
}

// retryBackoff spaces the retries of a transiently failing batch.
var retryBackoff = pipeline.Backoff{Initial: 10 * time.Millisecond, Max: time.Second}

// run calls the model for a batch until every item has an outcome, or the
// stage is stopping (ctx done: the items stay unfinished and are consumed
// again).
func (e *executor) run(ctx context.Context, b []*item) {
	if bad, err := e.runBatch(ctx, b, true); bad != nil {
		e.bisect(ctx, bad, err)
	}
}

// runBatch calls the model for b until every item has an outcome, except
// when a call fails for its inputs (a permanent error, or a refusal of its
// size with no limit to learn): it then returns the items of that call and
// the error, for the caller to find the culprits (bisect). measured says
// that the first call measures the model's cost: the batch is one the
// batcher formed, not a part of a split one. Retries never do.
func (e *executor) runBatch(ctx context.Context, b []*item, measured bool) ([]*item, error) {
	name := e.cfg.Name
	for first := true; len(b) > 0; first = false {
		measured = measured && first
		b = e.live(b)
		b = e.expire(b)
		if len(b) == 0 {
			return nil, nil
		}
		// Nothing is worth waiting for past the batch's last deadline:
		// not an open circuit, not a call. (A hung model held the worker,
		// and the queue behind it, for the call's timeout, 30 s by
		// default, five times before the circuit opened.)
		last, bounded := lastDeadline(b) // last is zero when not bounded
		actx, cancelAcquire := e.whileLiveUntil(ctx, b, last)
		probe, err := e.br.acquire(actx)
		cancelAcquire()
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil // shutting down: unfinished, so consumed again
			}
			continue // every item went stale, or its deadline passed, while the circuit was open
		}
		reqs := make([]*schemas.Request, len(b))
		for i, it := range b {
			reqs[i] = it.req
			it.attempt++
		}
		start := time.Now()
		callEnd := start.Add(e.cfg.Timeout)
		if bounded && last.Before(callEnd) {
			callEnd = last
		}
		cctx, cancelCall := e.whileLiveUntil(ctx, b, callEnd)
		e.busy.add(start, 1)
		outs, err := e.cfg.Backend.Infer(cctx, reqs)
		end := time.Now()
		e.busy.add(end, -1)
		took := end.Sub(start)
		cancelCall()
		cm := e.callMetrics()
		cm.seconds.Observe(took.Seconds())
		cm.size.Observe(float64(len(b)))
		if ctx.Err() != nil {
			return nil, nil
		}
		if allStale(b) {
			// Nobody waits for the answer any more (the call may have been
			// cancelled for it): whatever it says does not count.
			e.m.Calls.WithLabelValues(name, "cancelled").Inc()
			e.br.release(probe)
			continue
		}
		if err != nil && bounded && !end.Before(last) {
			// The call outlived every deadline in it; its items expire,
			// next time round. A call that ran far past the model's cost
			// is a timeout, which the circuit counts (a hung model is down
			// for every request); one cut sooner, by deadlines tighter than
			// the model's cost, is not the model's doing.
			e.m.Calls.WithLabelValues(name, "deadline").Inc()
			if e.overran(b, took) {
				e.br.failure(probe)
			} else {
				e.br.release(probe)
			}
			continue
		}
		items, isItems := backend.AsItemErrors(err)
		switch {
		case err == nil && len(outs) != len(b):
			e.m.Calls.WithLabelValues(name, "permanent").Inc()
			return e.permanent(b, probe), fmt.Errorf("model %s returned %d outputs for %d inputs", name, len(outs), len(b))
		case err == nil:
			cm.ok.Inc()
			e.br.success(probe)
			e.learn(b, measured, end, took)
			res := new(schemas.Result) // one for the call: answer keeps none
			for i, it := range b {
				e.succeed(res, it, outs[i], len(b), start, took)
			}
			return nil, nil
		case isItems && len(items) == len(b) && len(outs) == len(b):
			// The model answered; some items failed on their own.
			e.m.Calls.WithLabelValues(name, "partial").Inc()
			e.br.success(probe)
			e.learn(b, measured, end, took) // the model ran the whole batch
			var again []*item
			res := new(schemas.Result)
			for i, it := range b {
				switch ierr := items[i]; {
				case ierr == nil:
					e.succeed(res, it, outs[i], len(b), start, took)
				case pipeline.Retryable(ierr):
					it.failures++
					if it.failures >= e.cfg.MaxAttempts {
						e.fail(it, CodeModelUnavailable, ierr, len(b))
						continue
					}
					again = append(again, it)
				default:
					e.fail(it, CodeInferenceFailed, ierr, len(b))
				}
			}
			b = again
			if len(b) > 0 && !e.pause(ctx, b) {
				return nil, nil
			}
		case errors.Is(err, backend.ErrTooLarge):
			e.m.Calls.WithLabelValues(name, "too_large").Inc()
			if e.limit == nil || len(b) == 1 {
				return e.permanent(b, probe), err // nothing to learn: a bad input's way
			}
			b = e.tooLarge(ctx, b, probe)
		case !pipeline.Retryable(err):
			e.m.Calls.WithLabelValues(name, "permanent").Inc()
			return e.permanent(b, probe), err
		default:
			e.m.Calls.WithLabelValues(name, "transient").Inc()
			// Failures while the circuit is open or probing do not count:
			// an outage makes requests wait, not fail. The failure that
			// opens the circuit does not count either.
			e.br.failure(probe)
			counted := e.br.isClosed() && !probe
			var keep []*item
			for _, it := range b {
				if counted {
					it.failures++
				}
				if it.failures >= e.cfg.MaxAttempts {
					e.fail(it, CodeModelUnavailable, err, len(b))
					continue
				}
				keep = append(keep, it)
			}
			b = keep
			if len(b) > 0 && !e.pause(ctx, b) {
				return nil, nil
			}
		}
	}
	return nil, nil
}

// permanent takes a call of b that failed for its inputs: the model
// answered, so it is up, and the items' transient failures start again
// (the limit is on consecutive ones). It returns b.
func (e *executor) permanent(b []*item, probe bool) []*item {
	e.br.success(probe)
	for _, it := range b {
		it.failures = 0
	}
	return b
}

// learn takes what a successful call of b says: its cost (when measured),
// and that the model takes batches of its size.
func (e *executor) learn(b []*item, measured bool, end time.Time, took time.Duration) {
	if e.limit != nil {
		e.m.BatchLimit.WithLabelValues(e.cfg.Name).Set(float64(e.limit.succeeded(len(b))))
	}
	if !measured || e.costs == nil {
		return
	}
	v := b[0].req.ModelVersion
	for _, it := range b[1:] {
		if it.req.ModelVersion != v {
			return // several versions: several models' costs in one call
		}
	}
	m, label := e.costs.of(versionLabel(v))
	m.observe(end, len(b), took)
	a, c, _, _ := m.estimate()
	e.m.CostFixed.WithLabelValues(e.cfg.Name, label).Set(a)
	e.m.CostPerItem.WithLabelValues(e.cfg.Name, label).Set(c)
}

// bisect finds the inputs that make bad, a batch whose call failed for
// them (err), fail, and answers every item: an item fails only after a
// call of it alone failed. It halves the suspects and calls the first
// half alone: when that half succeeds, the culprit is in the second half,
// which is halved in turn without calling it whole; when it fails, the
// search goes on in it and the second half, probably innocent, waits. The
// halves that wait are called together once the search ends. A poison
// input in a batch of n so costs about log2(n)+1 calls of shrinking parts,
// where calling both halves of every split took 2·log2(n): the worker, and
// the queue behind it, stall for about half as long. When the halves that
// waited fail too (more than one culprit), they are searched by calling
// both halves of each split: a search per culprit, the rest waiting again,
// would take about n·log2(n) calls for a batch of bad inputs only (a model
// that refuses every request), both halves fewer than 2n. (Serving the
// queue between the calls of a search, as far as the suspects' deadlines
// allowed, was measured and not kept: it expired about as many requests,
// and made dedup reject more.)
func (e *executor) bisect(ctx context.Context, bad []*item, err error) {
	var waiting []*item
	e.search(ctx, bad, err, true, &waiting)
	if len(waiting) > 0 && ctx.Err() == nil {
		if f, ferr := e.runBatch(ctx, waiting, false); f != nil {
			e.search(ctx, f, ferr, true, nil)
		}
	}
}

// search answers every item of bad, a batch that failed for its inputs
// (err; called: a call of bad as it is failed, else a culprit is only
// inferred to be in it), by halving it: the first half is called; when it
// succeeds, the second is halved without a call of it whole; when it
// fails, the search goes on in it, and the second half is added to
// waiting, when there is one, for the caller to call, else called (and
// searched when it fails).
func (e *executor) search(ctx context.Context, bad []*item, err error, called bool, waiting *[]*item) {
	if errors.Is(err, backend.ErrTooLarge) {
		e.halve(ctx, bad, err)
		return
	}
	if bad = e.expire(e.live(bad)); len(bad) == 0 || ctx.Err() != nil {
		return
	}
	if len(bad) == 1 {
		e.failAlone(ctx, bad, err, called)
		return
	}
	half := len(bad) / 2
	first, second := bad[:half], bad[half:]
	f, ferr := e.runBatch(ctx, first, false)
	if f == nil {
		// The first half is clean (or went stale, or expired: then the
		// second is halved without cause, which costs calls, never an
		// answer, since nothing fails but alone).
		e.search(ctx, second, err, false, waiting)
		return
	}
	if waiting != nil {
		// In the original order: every half that waits lies after f.
		*waiting = append(slices.Clip(second), *waiting...)
		e.search(ctx, f, ferr, true, waiting)
		return
	}
	e.search(ctx, f, ferr, true, nil)
	if g, gerr := e.runBatch(ctx, second, false); g != nil {
		e.search(ctx, g, gerr, true, nil)
	}
}

// failAlone fails the one item of bad with err, the error of a call of it
// alone; when none was made (called false: it is only inferred to be the
// culprit), after one: it may succeed alone.
func (e *executor) failAlone(ctx context.Context, bad []*item, err error, called bool) {
	if !called {
		f, ferr := e.runBatch(ctx, bad, false)
		if f == nil {
			return
		}
		err = ferr
	}
	e.fail(bad[0], CodeInferenceFailed, err, 1)
}

// halve answers every item of b, a batch refused for its size with no
// limit to learn: a clean half says nothing of the other (it is no input's
// fault), so each half is called in turn, and halved again when refused. A
// single item refused fails.
func (e *executor) halve(ctx context.Context, b []*item, err error) {
	if len(b) == 1 {
		e.fail(b[0], CodeInferenceFailed, err, 1)
		return
	}
	half := len(b) / 2
	for _, part := range [][]*item{b[:half], b[half:]} {
		if f, ferr := e.runBatch(ctx, part, false); f != nil {
			e.bisect(ctx, f, ferr)
		}
	}
}

// tooLarge handles a call refused for its size: the model's batch limit
// falls to half of it, and the batch is run in parts of the limit (each
// part on its own, the limit read again before each, since a part refused
// lowers it further), so that the refusals it takes to find a size the
// backend takes are a few, not one per half of every half. It returns what
// is left to run.
func (e *executor) tooLarge(ctx context.Context, b []*item, probe bool) []*item {
	e.permanent(b, probe)
	e.m.BatchLimit.WithLabelValues(e.cfg.Name).Set(float64(e.limit.tooLarge(len(b))))
	for size := e.limit.get(); len(b) > size && ctx.Err() == nil; size = e.limit.get() {
		if f, err := e.runBatch(ctx, b[:size], false); f != nil {
			e.bisect(ctx, f, err)
		}
		b = b[size:]
	}
	return b
}

// succeed answers it with its outputs, in res: the call's items share one
// Result, overwritten for each (an allocation per answer was an eighth of
// what infer allocates), which answer encodes and does not keep.
func (e *executor) succeed(res *schemas.Result, it *item, outs []schemas.Tensor, n int, start time.Time, took time.Duration) {
	*res = schemas.Result{Status: schemas.StatusSucceeded, Outputs: outs, Attempt: it.attempt, BatchSize: int32(n),
		Timings: schemas.Timings{BatchWaitMs: ms(start.Sub(it.enqueued)), InferenceMs: ms(took)}}
	e.answer(it, res)
}

func (e *executor) fail(it *item, code string, err error, n int) {
	e.answer(it, &schemas.Result{Status: schemas.StatusFailed, ErrorCode: code,
		ErrorMessage: pipeline.Cut(err.Error(), maxMessage), Attempt: it.attempt, BatchSize: int32(n)})
}

// live drops the items whose work went stale and returns the rest.
func (e *executor) live(b []*item) []*item {
	keep := b[:0]
	for _, it := range b {
		if it.stale() {
			e.drop(it)
			continue
		}
		keep = append(keep, it)
	}
	return keep
}

// expire answers the items whose deadline has passed and returns the rest.
func (e *executor) expire(b []*item) []*item {
	now := time.Now()
	keep := b[:0]
	for _, it := range b {
		if !it.deadline.IsZero() && !now.Before(it.deadline) { // at the deadline: expired (acquire and a call end then)
			reason := "deadline_passed"
			if it.byObjective {
				reason = "objective_passed"
			}
			e.answer(it, &schemas.Result{Status: schemas.StatusExpired, Reason: reason, Attempt: it.attempt})
			continue
		}
		keep = append(keep, it)
	}
	return keep
}

// overran reports whether a call of b that took took ran well past the
// model's fitted cost for it (4 times, and 10 ms more): a model that hangs
// or crawls. A call cut sooner by deadlines tighter than the model's cost
// is the requests' doing: counted, it would let a client open the circuit
// for everyone with deadlines nobody can make. Before the first fit it
// counts.
func (e *executor) overran(b []*item, took time.Duration) bool {
	if e.costs == nil || b[0].req == nil {
		return true
	}
	m := e.costs.lookup(versionLabel(b[0].req.ModelVersion))
	if m == nil {
		return true
	}
	a, c, _, ok := m.estimate()
	if !ok {
		return true
	}
	expect := time.Duration((a + c*float64(len(b))) * float64(time.Second))
	return took > 4*expect+10*time.Millisecond
}

// pause waits before b is called again (backoff with jitter), but not
// past b's last deadline: its items expire then, next time round. It
// returns false when ctx ended.
func (e *executor) pause(ctx context.Context, b []*item) bool {
	d := retryBackoff.Delay(b[0].failures)
	if last, bounded := lastDeadline(b); bounded {
		d = min(d, time.Until(last))
	}
	return pipeline.Sleep(ctx, d)
}

// lastDeadline is the latest deadline of b's items; bounded false when
// one of them has none.
func lastDeadline(b []*item) (last time.Time, bounded bool) {
	for _, it := range b {
		if it.deadline.IsZero() {
			return time.Time{}, false
		}
		if it.deadline.After(last) {
			last = it.deadline
		}
	}
	return last, len(b) > 0
}

func allStale(b []*item) bool {
	for _, it := range b {
		if !it.stale() {
			return false
		}
	}
	return true
}

// whileLive is a context that ends with ctx, or when every item of b went
// stale: nobody waits for the answer any more.
func (e *executor) whileLive(ctx context.Context, b []*item) (context.Context, context.CancelFunc) {
	cctx, cancel := context.WithCancel(ctx)
	var chans []<-chan struct{}
	for _, it := range b {
		if it.done == nil {
			return cctx, cancel // an item that never goes stale
		}
		if !containsChan(chans, it.done) {
			chans = append(chans, it.done)
		}
	}
	go func() {
		for _, ch := range chans {
			select {
			case <-ch:
			case <-cctx.Done():
				return
			}
		}
		cancel()
	}()
	return cctx, cancel
}

// whileLiveUntil is whileLive, ended at until too (zero: no bound).
func (e *executor) whileLiveUntil(ctx context.Context, b []*item, until time.Time) (context.Context, context.CancelFunc) {
	cctx, cancel := e.whileLive(ctx, b)
	if until.IsZero() {
		return cctx, cancel
	}
	dctx, cancelDeadline := context.WithDeadline(cctx, until)
	return dctx, func() { cancelDeadline(); cancel() }
}

func containsChan(cs []<-chan struct{}, c <-chan struct{}) bool {
	for _, x := range cs {
		if x == c {
			return true
		}
	}
	return false
}

// busyMeter adds up the time a model's workers spend in calls.
type busyMeter struct {
	mu     sync.Mutex
	active int
	since  time.Time
	total  time.Duration
}

// add counts delta calls starting (1) or ending (-1) at now; nil is a
// meter that counts nothing.
func (m *busyMeter) add(now time.Time, delta int) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.active > 0 {
		m.total += time.Duration(m.active) * now.Sub(m.since)
	}
	m.since = now
	m.active += delta
}

// busy is the time spent in calls up to now, calls still running included.
func (m *busyMeter) busy(now time.Time) time.Duration {
	m.add(now, 0)
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.total
}
