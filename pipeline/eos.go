package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

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
	works   []settledWork
	err     error // the first produce error
	ended   bool
	done    chan struct{}
	parts   map[tp]bool
}

type settledWork struct {
	w   *Work
	out Output
	err error
}

func newUnit() *unit {
	return &unit{done: make(chan struct{}), parts: map[tp]bool{}}
}

// settle records that a work of the unit finished (its records acknowledged
// inside the transaction, or failed with err).
func (u *unit) settle(w *Work, out Output, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.ended || u.pending == 0 {
		return // the unit ended without it (timed out): it is stale
	}
	u.works = append(u.works, settledWork{w, out, err})
	if err != nil && u.err == nil {
		u.err = err
	}
	u.pending--
	if u.pending == 0 {
		close(u.done)
	}
}

// end closes the unit to late settles and reports whether every work
// settled without error.
func (u *unit) end() (complete bool, works []settledWork, err error) {
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

// txnID is the transactional id: the group and the instance id, stable
// across restarts, so that a restarted instance fences its own zombie.
func txnID(group, instanceID string) string { return group + "/" + instanceID }

// eosLoop is the poll loop of exactly-once mode.
func (r *Runner) eosLoop(ctx context.Context) {
	// Whatever ends the loop, rebalances (and so Close's revoke) must not
	// stay blocked by the last poll.
	defer r.sess.AllowRebalance()
	max := r.cfg.maxInflight
	for ctx.Err() == nil {
		fs := r.sess.PollRecords(ctx, max)
		if fs.IsClientClosed() {
			return
		}
		r.fetchErrors(fs)
		recs := fs.Records()
		if len(recs) == 0 {
			r.sess.AllowRebalance()
			continue
		}
		if err := r.sess.Begin(); err != nil {
			r.Fail(fmt.Errorf("pipeline: %s: begin transaction: %w", r.stage, err))
			return
		}
		u := newUnit()
		now := time.Now()
		var works []*Work
		for _, rec := range recs {
			gen, ok := r.tr.add(tp{rec.Topic, rec.Partition}, rec.Offset, rec.LeaderEpoch)
			if !ok {
				continue
			}
			u.parts[tp{rec.Topic, rec.Partition}] = true
			works = append(works, &Work{Record: rec, Received: now, r: r, gen: gen, unit: u})
		}
		u.pending = len(works)
		if u.pending == 0 {
			close(u.done)
		}
		r.m.Inflight.WithLabelValues(r.stage).Set(float64(len(works)))
		for _, w := range works {
			r.m.Consumed.WithLabelValues(r.stage).Inc()
			r.h.Handle(r.workCtx, w)
		}
		if !r.endUnit(u) {
			return
		}
		r.sess.AllowRebalance()
	}
}

// endUnit waits for the unit (up to the transaction timeout), ends its
// transaction, and applies or discards its state. It reports whether the
// loop may go on.
func (r *Runner) endUnit(u *unit) bool {
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
	// finish checks the generation and enqueues its records under the read
	// lock, and an abort makes the unit's partitions stale under the write
	// lock.
	r.txnMu.Lock()
	complete, works, perr := u.end()
	commit := complete && perr == nil
	if !commit {
		for p := range u.parts {
			r.tr.reset(p)
		}
	}
	r.txnMu.Unlock()
	if perr != nil {
		r.log.Warn("a produce failed inside the transaction; aborting it", "err", perr)
		for _, sw := range works {
			if sw.err != nil {
				r.noteFailure(sw.w)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.txnTimeout+10*time.Second)
	defer cancel()
	committed, err := r.sess.End(ctx, kgo.TransactionEndTry(commit))
	for _, sw := range works {
		if committed {
			if sw.out.Apply != nil {
				sw.out.Apply()
			}
			r.tr.done(sw.w.tp(), sw.w.gen, sw.w.Record.Offset)
		} else if sw.out.Discard != nil {
			sw.out.Discard()
		}
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
		r.Fail(fmt.Errorf("pipeline: %s: end transaction: %w", r.stage, err))
		return false
	}
	return true
}

// finishEOS produces a work's records and changelog inside the current
// transaction; the unit applies its state once the transaction commits.
func (r *Runner) finishEOS(w *Work, out Output) {
	r.txnMu.RLock()
	defer r.txnMu.RUnlock()
	if !r.tr.current(w.tp(), w.gen) {
		r.stale(w, out)
		return
	}
	recs := append(append([]*kgo.Record(nil), out.Records...), out.Changelog...)
	if r.failedBefore(w) {
		// Its outputs failed to produce in an earlier attempt (too large, a
		// topic that is gone): retrying forever would abort every
		// transaction of the partition. Its input goes to the dead letters
		// instead, inside the transaction.
		dl, err := r.deadLetterRecord(w.Record, "produce_failed", errors.New("its outputs failed to produce in an earlier transaction"), false)
		if err != nil {
			w.unit.settle(w, out, err)
			return
		}
		if out.Discard != nil {
			out.Discard()
		}
		out = Output{}
		recs = []*kgo.Record{dl}
	}
	r.produceAll(recs, func(err error) { w.unit.settle(w, out, err) })
}

type offsetKey struct {
	tp
	offset int64
}

func (r *Runner) noteFailure(w *Work) {
	r.failMu.Lock()
	defer r.failMu.Unlock()
	if r.failures == nil {
		r.failures = map[offsetKey]bool{}
	}
	r.failures[offsetKey{w.tp(), w.Record.Offset}] = true
}

func (r *Runner) failedBefore(w *Work) bool {
	r.failMu.Lock()
	defer r.failMu.Unlock()
	return r.failures[offsetKey{w.tp(), w.Record.Offset}]
}

func (r *Runner) clearFailures(works []settledWork) {
	r.failMu.Lock()
	defer r.failMu.Unlock()
	for _, sw := range works {
		delete(r.failures, offsetKey{sw.w.tp(), sw.w.Record.Offset})
	}
}
