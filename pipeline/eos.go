package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Exactly-once mode (ExactlyOnce).
//
// The poll loop runs units of work: it polls, begins a Kafka transaction,
// hands the records out, and waits until every one of them is finished; the
// stage's outputs, changelog records and dead letters are produced inside the
// transaction, which commits the input offsets with them (franz-go's
// GroupTransactSession). Only after the transaction commits are the staged
// state changes applied; after an abort they are discarded, the consumer
// rewinds to the committed offsets, and the records are handed out again, so
// nothing of an aborted unit stays in state or output.
//
// Rebalances are blocked from a poll until its unit has ended (and the unit is
// bounded by the transaction timeout, well below the rebalance timeout), so a
// revoke never lands inside a transaction: partitions move between units,
// with nothing in flight. A unit that does not finish within the transaction
// timeout (a model that is down keeps its items) is aborted: its records
// return to Kafka and wait there, and whatever of it is still running is
// stale and produces nothing.

// unit is one transaction's work.
type unit struct {
	mu      sync.Mutex
	pending int
	works   []settled
	err     error // the first produce error
	ended   bool
	done    chan struct{}
	parts   map[tp]bool
}

type settled struct {
	c   *Context
	err error
}

func newUnit() *unit {
	return &unit{done: make(chan struct{}), parts: map[tp]bool{}}
}

func (u *unit) add(t tp) {
	u.parts[t] = true
	u.pending++
}

// settle records that a work of the unit finished (its records acknowledged
// inside the transaction, or failed with err), or was given up (gaveUp: it
// is neither committed nor applied, and the unit cannot commit without it).
// It reports whether the unit took it: false when the unit ended without it.
func (u *unit) settle(c *Context, err error) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.ended || u.pending == 0 {
		return false // the unit ended without it (timed out): it is stale
	}
	u.works = append(u.works, settled{c, err})
	if err != nil && u.err == nil {
		u.err = err
	}
	u.pending--
	if u.pending == 0 {
		close(u.done)
	}
	return true
}

// end closes the unit to late settles and reports whether every work
// settled without error.
func (u *unit) end() (complete bool, works []settled, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	complete = u.pending == 0
	if !complete {
		u.pending = 0 // late settles are ignored from now on
		close(u.done)
	}
	u.ended = true
	return complete, u.works, u.err
}

// eosLoop is the poll loop of exactly-once mode.
func (r *Runner) eosLoop(ctx context.Context) {
	// Whatever ends the loop, rebalances (and so Close's revoke) must not
	// stay blocked by the last poll.
	defer func() { r.session().AllowRebalance() }() // the session of the moment (renew replaces it)
	max := r.cfg.maxInflight
	for ctx.Err() == nil {
		// Work of an aborted unit the stage still holds (queued for a model)
		// counts against the bound until the stage lets go of it.
		if !r.tr.wait(ctx.Done(), func() bool { return r.tr.liveLocked() < max }) {
			return
		}
		fs := r.session().PollRecords(ctx, max-r.tr.liveCount())
		if fs.IsClientClosed() {
			return
		}
		r.fetchErrors(fs)
		if fs.NumRecords() == 0 {
			r.session().AllowRebalance()
			continue
		}
		if err := r.session().Begin(); err != nil {
			if fenced(err) {
				// What was polled is dropped with the old client: the
				// new one starts from the group's committed offsets.
				if !r.renew(ctx, err) {
					return
				}
				continue
			}
			r.Fail(fmt.Errorf("pipeline: %s: begin transaction: %w%s", r.stage, err, r.authHint(err)))
			return
		}
		u := newUnit()
		works := r.handOut(fs, u)
		if u.pending == 0 {
			close(u.done)
		}
		r.m.Inflight.WithLabelValues(r.stage).Set(float64(len(works)))
		for _, c := range works {
			v, err := c.pending, c.pendingErr
			c.pending, c.pendingErr = nil, nil
			if r.stopping() {
				// The stage failed: the rest of the unit is not handed out
				// (the unit aborts, and the records are consumed again).
				c.ended.Store(true)
				r.release(c)
				continue
			}
			r.dispatch(c, v, err)
		}
		if !r.endUnit(ctx, u) {
			return
		}
		r.session().AllowRebalance()
	}
}

// endUnit waits for the unit (up to the transaction timeout), ends its
// transaction, and applies or discards its state. It reports whether the
// loop may go on.
func (r *Runner) endUnit(ctx context.Context, u *unit) bool {
	timer := time.NewTimer(r.cfg.txnTimeout)
	defer timer.Stop()
	select {
	case <-u.done:
	case <-timer.C:
		r.log.Warn("transaction timed out with work unfinished; aborting it, the records wait in Kafka")
	case <-r.fatal:
	}
	if r.killed.Load() {
		return false
	}
	// No work of the unit may start producing once the transaction ends:
	// finishEOS checks the generation and enqueues its records under the
	// read lock, and an abort makes the unit's partitions stale under the
	// write lock.
	r.txnMu.Lock()
	complete, works, perr := u.end()
	commit := complete && perr == nil && !r.stopping()
	if !commit {
		for p := range u.parts {
			r.tr.reset(p)
		}
	}
	r.txnMu.Unlock()
	if perr != nil {
		r.log.Warn("a produce failed inside the transaction; aborting it", "err", perr)
		for _, sw := range works {
			// An outage, a timed-out transaction or a renewed producer is
			// waited out: only the record refused for what it is makes the
			// next attempt dead-letter the input.
			if sw.err != nil && refusedRecord(sw.err) {
				r.noteFailure(sw.c)
			}
		}
	}
	var want map[string]map[int32]kgo.EpochOffset // what the commit commits
	if commit {
		want = offsetsOf(r.client().UncommittedOffsets(), u.parts)
	}
	committed, err := r.endTxn(ctx, commit)
	if err == nil && !committed {
		if !r.settleAbort(ctx, want, &committed) {
			err = ctx.Err()
			if err == nil {
				err = context.Canceled // the runner failed meanwhile
			}
		}
	}
	for _, sw := range works {
		if committed {
			sw.c.apply()
			r.tr.done(sw.c.tp(), sw.c.gen, sw.c.rec.Offset)
		} else {
			sw.c.dropStaged()
		}
		r.release(sw.c)
	}
	if committed {
		r.m.Commits.WithLabelValues(r.stage).Inc()
		r.clearFailures(works)
	} else {
		r.m.Aborts.WithLabelValues(r.stage).Inc()
		for p := range u.parts {
			r.tr.reset(p)
		}
	}
	r.m.Inflight.WithLabelValues(r.stage).Set(0)
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed) {
			return false
		}
		if fenced(err) {
			return r.renew(ctx, err)
		}
		r.Fail(fmt.Errorf("pipeline: %s: end transaction: %w%s", r.stage, err, r.authHint(err)))
		return false
	}
	return true
}

// settleAbort makes a transaction that did not commit final at the broker,
// and the consumer's position agree with it; it reports false when the
// runner stops meanwhile.
//
// Re-initializing the producer id (at the same epoch) fences whatever of
// ours is still open: an abort that could not reach the broker (it was
// down) returns as if done, and leaves the transaction open there with its
// offsets pending, so the group's offsets stay unstable, and the consumer
// that fetches them waits, until the broker times it out (30 to 60 s seen
// after a broker restart). It also waits for a transaction being completed.
//
// want is what the unit's commit would have committed, when a commit was
// attempted: whether it happened is the broker's to say, whatever franz-go
// reported. An answer lost with the connection comes back as an error (the
// retry aborts nothing), and an UNKNOWN_SERVER_ERROR as "not committed"
// without one: franz-go's retry as an abort sends nothing, its failed call
// having ended the transaction on the client. Once the producer id is
// re-initialized, the group's committed offsets say what happened: the
// unit's offsets if it committed (committed is then set), the ones before
// it if not. franz-go rewinds the consumer to the offsets it last saw
// committed, which is wrong in the first case, so the consumer is set to
// what the broker says. Believing "not committed" dropped a committed
// unit's state while its offsets moved the consumer past its inputs.
func (r *Runner) settleAbort(ctx context.Context, want map[string]map[int32]kgo.EpochOffset, committed *bool) bool {
	if !r.initProducer(ctx) {
		return false
	}
	adm := kadm.NewClient(r.client())
	var got kadm.OffsetResponses
	var lastWarn time.Time
	err := Retry(ctx, Backoff{Initial: 100 * time.Millisecond, Max: 2 * time.Second}, func() error {
		var err error
		got, err = adm.FetchOffsets(kadm.RequireStable(ctx), r.group)
		if err == nil {
			err = got.Error()
		}
		return err
	}, func(err error) bool {
		if authError(err) || errors.Is(err, kgo.ErrClientClosed) || ctx.Err() != nil {
			return false
		}
		if time.Since(lastWarn) > holdWarnEvery {
			lastWarn = time.Now()
			r.log.Warn("cannot read the group's offsets after a transaction that did not commit; retrying", "err", err)
		}
		return true
	})
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, kgo.ErrClientClosed) {
			r.Fail(fmt.Errorf("pipeline: %s: read the group's offsets: %w%s", r.stage, err, r.authHint(err)))
		}
		return false
	}
	all := len(want) > 0
	for t, ps := range want {
		for p, w := range ps {
			if o, ok := got.Lookup(t, p); !ok || o.At != w.Offset {
				all = false
			}
		}
	}
	if all {
		*committed = true
		r.log.Warn("a transaction reported not committed had committed; its work stands")
	}
	// Every partition, not only the unit's: franz-go rewinds them all to
	// what it last saw committed, and after a commit it did not see that
	// is behind.
	at := map[string]map[int32]kgo.EpochOffset{}
	got.Each(func(o kadm.OffsetResponse) {
		if o.Err != nil || o.At < 0 || o.Topic != r.spec.Input {
			return
		}
		if at[o.Topic] == nil {
			at[o.Topic] = map[int32]kgo.EpochOffset{}
		}
		at[o.Topic][o.Partition] = kgo.EpochOffset{Epoch: o.LeaderEpoch, Offset: o.At}
	})
	r.client().SetOffsets(at)
	return true
}

// offsetsOf keeps the offsets of the given partitions.
func offsetsOf(offs map[string]map[int32]kgo.EpochOffset, parts map[tp]bool) map[string]map[int32]kgo.EpochOffset {
	out := map[string]map[int32]kgo.EpochOffset{}
	for t, ps := range offs {
		for p, o := range ps {
			if !parts[tp{t, p}] {
				continue
			}
			if out[t] == nil {
				out[t] = map[int32]kgo.EpochOffset{}
			}
			out[t][p] = o
		}
	}
	return out
}

// endTxn ends the transaction. A broker that cannot be reached (shut down,
// restarting) is waited for: the end is retried until it answers, so the
// stage rides out a broker restart instead of exiting. Errors that retrying
// cannot fix (authorization, fencing) are returned.
//
// One attempt is bounded by the session timeout. When it starts, the unit's
// records are acknowledged (or, for an abort, dropped), so what is left is
// a few round trips: the offsets, a heartbeat, EndTxn. The heartbeat is the
// trap: franz-go's End waits for the group's heartbeat loop to confirm the
// membership, and when the session died meanwhile (a broker restart, a
// failed heartbeat) that loop has quit and the group's onLost waits for the
// rebalance this runner blocks until the unit ends (franz-go #1053): End
// waits for its whole deadline. Past the session timeout the broker has
// expired the membership anyway, so the attempt is given up, and the
// retry aborts.
//
// committed is franz-go's word: false after an attempt to commit whose
// answer was lost, or was an unsure error, though the broker may have
// committed (settleAbort asks the broker).
func (r *Runner) endTxn(ctx context.Context, commit bool) (committed bool, err error) {
	start := time.Now()
	err = Retry(ctx, Backoff{Initial: 100 * time.Millisecond, Max: 2 * time.Second}, func() error {
		ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.sessionTimeout)
		defer cancel()
		var err error
		committed, err = r.session().End(ectx, kgo.TransactionEndTry(commit))
		return err
	}, func(err error) bool {
		if errors.Is(err, kgo.ErrClientClosed) || errors.Is(err, context.Canceled) || authError(err) || fenced(err) || r.killed.Load() {
			return false
		}
		if time.Since(start) > 5*time.Second {
			r.log.Warn("cannot end the transaction; retrying until the broker answers", "err", err)
			start = time.Now()
		}
		// After a failed commit attempt the transaction can only abort.
		commit = false
		return true
	})
	return committed, err
}

// finishEOS produces a work's records and changelog inside the current
// transaction; the unit applies its state once the transaction commits.
func (r *Runner) finishEOS(c *Context, out output) {
	r.txnMu.RLock()
	defer r.txnMu.RUnlock()
	if !r.tr.current(c.tp(), c.gen) {
		r.stale(c)
		return
	}
	recs := append(out.records, out.changelog...)
	if r.failedBefore(c) {
		// Its outputs failed to produce in an earlier attempt (too large, a
		// topic that is gone): retrying forever would abort every
		// transaction of the partition. Its input goes to the dead letters
		// instead, inside the transaction.
		dl, err := r.deadLetterRecord(c.rec, ReasonProduceFailed, errors.New("its outputs failed to produce in an earlier transaction"), false, "")
		c.dropStaged()
		if err != nil {
			if !c.unit.settle(c, err) {
				r.release(c)
			}
			return
		}
		recs = []*kgo.Record{dl}
	}
	c.produce(phaseTransaction, recs, false)
}

type offsetKey struct {
	tp
	offset int64
}

func (r *Runner) noteFailure(c *Context) {
	r.failMu.Lock()
	defer r.failMu.Unlock()
	if r.failures == nil {
		r.failures = map[offsetKey]bool{}
	}
	r.failures[offsetKey{c.tp(), c.rec.Offset}] = true
}

func (r *Runner) failedBefore(c *Context) bool {
	r.failMu.Lock()
	defer r.failMu.Unlock()
	return r.failures[offsetKey{c.tp(), c.rec.Offset}]
}

func (r *Runner) clearFailures(works []settled) {
	r.failMu.Lock()
	defer r.failMu.Unlock()
	for _, sw := range works {
		delete(r.failures, offsetKey{sw.c.tp(), sw.c.rec.Offset})
	}
}
