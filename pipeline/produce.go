package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/schemas"
)

// The produce of one Context's effects, without a closure, goroutine or
// counter allocated per produce: the Context carries the state of its own
// write (what is left, the first error, which phase), and one promise bound
// once per Context serves every record of it.
//
// At-least-once the phases follow the write order: the records, then, once
// Kafka acknowledged all of them, the changelog, then settle. The changelog
// records wait in the runner's logHold until the hold is due (logDue, half
// of logWait, old, or logFlushWorks works) and then go out with the next
// poll's records, or after logWait when no poll comes sooner; while the
// poll loop waits at its in-flight bound, after logWaitAtBound. Produced
// from each promise as it came, each went out in a produce request of its
// own between the outputs' requests; flushed at every hand-out, a poll of
// one or two records at 1,000 requests/s still wrote one changelog batch
// per output batch. A flush writes the entries held for one partition as
// one changelog record (produceLogs; about 10% less broker CPU per request
// in S1, and a restore reads hundreds of entries a record). They are
// produced with TryProduce, which never blocks; only when the client's
// buffer is full does a goroutine produce what did not fit. Exactly-once,
// the records and the changelog go together into the transaction.

type producePhase int32

const (
	phaseRecords producePhase = iota
	phaseChangelog
	phaseTransaction
)

// write is a Context's produce in progress.
type write struct {
	phase producePhase
	left  atomic.Int32
	mu    sync.Mutex
	first error
	// rctx is its records' context (kgo.Record.Context): the runner's
	// work context, and the way back from a record to its Context for the
	// runner's one promise (a promise bound to each Context was an
	// allocation per record).
	rctx recordCtx
}

// recordCtx is the context of a Context's records: the work context, which
// kgo sees, and the Context, which the promise finds.
type recordCtx struct {
	context.Context
	c *Context
}

// produce produces rs for phase p; when all are acknowledged or failed,
// written is called with the first error.
func (c *Context) produce(p producePhase, rs []*kgo.Record, try bool) {
	w := &c.w
	w.phase = p
	w.first = nil
	if len(rs) == 0 {
		c.written(nil)
		return
	}
	if w.rctx.c == nil {
		// Set once: it never changes for a Context, and franz-go may still
		// read it (its wait for an unknown topic) when the outputs of a
		// failed produce are produced again.
		w.rctx = recordCtx{c.r.workCtx, c}
	}
	w.left.Store(int32(len(rs)))
	for _, rec := range rs {
		rec.Context = &w.rctx
		if try {
			c.r.client().TryProduce(c.r.workCtx, rec, c.r.promise)
		} else {
			c.r.client().Produce(c.r.workCtx, rec, c.r.promise)
		}
	}
}

// onProduced is the promise of every record a Context produces (bound once,
// as Runner.promise): it hands the record to its Context.
func (r *Runner) onProduced(rec *kgo.Record, err error) {
	rec.Context.(*recordCtx).c.produced(rec, err)
}

// produced counts one of the Context's records acknowledged or failed.
func (c *Context) produced(rec *kgo.Record, err error) {
	r, w := c.r, &c.w
	if !r.produceOver(rec, err, r.promise) {
		return
	}
	if err != nil {
		w.mu.Lock()
		if w.first == nil {
			w.first = err
		}
		w.mu.Unlock()
	}
	if w.left.Add(-1) != 0 {
		return
	}
	w.mu.Lock()
	first := w.first
	w.mu.Unlock()
	c.written(first)
}

// produceOver counts a record's produce by its promise's error, and reports
// whether the produce is over. When TryProduce found the client's buffer
// full, the record is produced again from a goroutine, where waiting for
// room is allowed, with the same promise: it is not over.
func (r *Runner) produceOver(rec *kgo.Record, err error, promise func(*kgo.Record, error)) bool {
	if errors.Is(err, kgo.ErrMaxBuffered) {
		r.goroutines.Add(1)
		go func() {
			defer r.goroutines.Done()
			r.client().Produce(r.workCtx, rec, promise)
		}()
		return false
	}
	if err != nil {
		r.hot.produceErrors.Inc()
	} else {
		r.hot.produced(rec.Topic).Inc()
	}
	return true
}

// written moves the Context's write on once a phase is acknowledged.
func (c *Context) written(err error) {
	r := c.r
	switch c.w.phase {
	case phaseTransaction:
		if !c.unit.settle(c, err) {
			r.stale(c)
		}
	case phaseRecords:
		if err != nil {
			r.failed(c, err)
			return
		}
		if len(c.changes) == 0 {
			r.settle(c)
			return
		}
		r.logs.hold(r, c)
	case phaseChangelog:
		if err != nil {
			r.failed(c, err)
			return
		}
		r.settle(c)
	}
}

// logWait is the longest a changelog record waits to go out: half a
// commit interval, so it moves nothing but the settle of the work, which
// Get does not wait for (it sees staged entries), and the commit of its
// offset by at most that. From half of it on, the next poll's hand-out
// takes the held records along (one produce request for both): at
// moderate load a changelog batch a partition every 50 ms, not one with
// every poll.
const logWait = 100 * time.Millisecond

// logWaitAtBound is how long a changelog record waits while the poll loop
// waits at its in-flight bound (Runner.atBound).
const logWaitAtBound = 2 * time.Millisecond

// logFlushWorks is how many held works make a hand-out flush them before
// the hold is half of logWait old: a changelog record's worth, so that a
// backlog's drain writes full records without holding hundreds of works
// (each counts against the runner's in-flight bound until it settles).
const logFlushWorks = 256

// logHold holds the Contexts whose outputs are acknowledged and whose
// changelog records are not produced yet: one timer per runner, armed when
// the first arrives, not one per record.
type logHold struct {
	mu     sync.Mutex
	cs     []*Context
	spare  []*Context
	timer  *time.Timer
	armed  bool
	since  time.Time // when the first of cs was held
	closed bool      // the poll loop is over: produce at once
	urgent int       // a revoke waits for its partitions' work: produce at once
}

// hold adds c, whose changelog records go out with the next flush.
func (h *logHold) hold(r *Runner, c *Context) {
	h.mu.Lock()
	if h.closed || h.urgent > 0 {
		h.mu.Unlock()
		r.produceLogs([]*Context{c})
		return
	}
	h.cs = append(h.cs, c)
	if !h.armed {
		h.armed, h.since = true, time.Now()
		wait := r.cfg.logWait
		if r.atBound.Load() {
			// The poll loop waits for works like this one to settle: no
			// hand-out comes, so a short wait gathers what the other
			// promises bring (one record each, produced at once, would be
			// a changelog record a work).
			wait = logWaitAtBound
		}
		if h.timer == nil {
			h.timer = time.AfterFunc(wait, r.flushLogs)
		} else {
			h.timer.Reset(wait)
		}
	}
	h.mu.Unlock()
}

// flushDueLogs is flushLogs at the end of a poll's hand-out at now, when
// what is held is due: half of logWait old, or logFlushWorks works.
func (r *Runner) flushDueLogs(now time.Time) {
	h := &r.logs
	h.mu.Lock()
	due := h.armed && (len(h.cs) >= logFlushWorks || now.Sub(h.since) >= r.cfg.logDue)
	h.mu.Unlock()
	if due {
		r.flushLogs()
	}
}

// flushLogs produces the held changelog records: at the end of a poll's
// hand-out when they are due (flushDueLogs), when the timer fires first,
// or at once (a revoke, the drain).
func (r *Runner) flushLogs() {
	h := &r.logs
	h.mu.Lock()
	cs := h.cs
	h.cs, h.spare = h.spare[:0], nil
	if h.armed {
		h.armed = false
		h.timer.Stop()
	}
	h.mu.Unlock()
	r.produceLogs(cs)
	clear(cs)
	h.mu.Lock()
	if h.spare == nil {
		h.spare = cs[:0]
	}
	h.mu.Unlock()
}

// closeLogs flushes what is held and makes later holds produce at once:
// once the poll loop is over, no hand-out comes to take them.
func (r *Runner) closeLogs() {
	r.logs.mu.Lock()
	r.logs.closed = true
	r.logs.mu.Unlock()
	r.flushLogs()
}

// urgentLogs flushes what is held and, until the returned func is called,
// makes later holds produce at once: a revoke waits for its partitions'
// work to finish, and must not wait for a hand-out.
func (r *Runner) urgentLogs() (done func()) {
	r.logs.mu.Lock()
	r.logs.urgent++
	r.logs.mu.Unlock()
	r.flushLogs()
	return func() {
		r.logs.mu.Lock()
		r.logs.urgent--
		r.logs.mu.Unlock()
	}
}

// The bounds of one changelog record of several entries: far below any
// max.message.bytes a changelog would have (an entry is at most about 2
// KiB: longer keys and ids are kept as their SHA-256), so that a record
// never fails for its size; at load a record still carries hundreds.
const (
	logBatchEntries = 512
	logBatchBytes   = 64 << 10
)

// logBatch is one changelog record: the entries of held works of one
// partition, in the order they were held, and the works it settles.
type logBatch struct {
	r       *Runner
	p       int32
	cs      []*Context
	entries []schemas.StateEntry
	bytes   int
}

// produceLogs produces the state entries of cs, works whose outputs are
// acknowledged, a record per partition (more when one would exceed the
// bounds); each work settles when the record holding its entries is
// acknowledged. A work's entries are never split between records.
func (r *Runner) produceLogs(cs []*Context) {
	limit := logBatchBytes
	if m := r.cfg.maxRecordBytes / 2; m > 0 && m < limit {
		limit = m
	}
	// Per partition: the batch being filled, and what its works hold
	// still, so that a batch's slices are made at their final size (grown
	// by append, they cost about three times the entries' bytes: a tenth
	// of what dedup allocated).
	type part struct {
		p              int32
		open           *logBatch
		works, entries int
	}
	var parts []part
	find := func(p int32) *part {
		for i := range parts {
			if parts[i].p == p {
				return &parts[i]
			}
		}
		parts = append(parts, part{p: p})
		return &parts[len(parts)-1]
	}
	for _, c := range cs {
		pt := find(c.rec.Partition)
		pt.works++
		pt.entries += len(c.changes)
	}
	for _, c := range cs {
		n := 0
		for i := range c.changes {
			n += entrySize(&c.changes[i])
		}
		pt := find(c.rec.Partition)
		b := pt.open
		if b != nil && (len(b.entries)+len(c.changes) > logBatchEntries || b.bytes+n > limit) {
			b.produce()
			b = nil
		}
		if b == nil {
			b = &logBatch{r: r, p: c.rec.Partition,
				cs:      make([]*Context, 0, min(pt.works, logBatchEntries)),
				entries: make([]schemas.StateEntry, 0, min(pt.entries, logBatchEntries))}
			pt.open = b
		}
		b.cs = append(b.cs, c)
		b.entries = append(b.entries, c.changes...)
		b.bytes += n
		pt.works--
		pt.entries -= len(c.changes)
	}
	for _, pt := range parts {
		pt.open.produce()
	}
}

// entrySize bounds what an entry adds to a changelog record.
func entrySize(e *schemas.StateEntry) int { return 32 + len(e.Key) + len(e.RequestID) }

// produce sends the batch's record. A record of one entry is keyed by its
// key, as a record per entry was; a record of several by the hex SHA-256 of
// their keys (each preceded by its length), so that compaction, which
// keeps the latest record of a key, only ever replaces it with a record
// of the same entries' keys, written later.
func (b *logBatch) produce() {
	r := b.r
	first := b.entries[0]
	first.More = b.entries[1:]
	v, err := r.codec().EncodeStateEntry(r.changelog, &first)
	if err != nil {
		r.Fail(fmt.Errorf("pipeline: %s: encode state entry: %w", r.stage, err))
		for _, c := range b.cs {
			c.dropStaged()
			r.release(c)
		}
		return
	}
	var key []byte
	if len(b.entries) == 1 {
		key = b.cs[0].rec.Key // the usual case: the input is keyed by the state's key
		if string(key) != first.Key {
			key = []byte(first.Key)
		}
	} else {
		h := sha256.New()
		var n [binary.MaxVarintLen64]byte
		for i := range b.entries {
			k := b.entries[i].Key
			h.Write(n[:binary.PutUvarint(n[:], uint64(len(k)))])
			h.Write([]byte(k))
		}
		key = hex.AppendEncode(nil, h.Sum(nil))
	}
	rec := &kgo.Record{Topic: r.changelog, Partition: b.p, Key: key, Value: v}
	r.client().TryProduce(r.workCtx, rec, b.promise)
}

// promise settles the batch's works, or fails them, as the promise of
// each work's own record did.
func (b *logBatch) promise(rec *kgo.Record, err error) {
	if !b.r.produceOver(rec, err, b.promise) {
		return
	}
	for _, c := range b.cs {
		c.w.phase = phaseChangelog
		c.written(err)
	}
}
