package pipeline

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The produce of one Context's effects, without a closure, goroutine or
// counter allocated per produce: the Context carries the state of its own
// write (what is left, the first error, which phase), and one promise bound
// once per Context serves every record of it.
//
// At-least-once the phases follow the write order: the records, then, once
// Kafka acknowledged all of them, the changelog, then settle. The changelog
// records wait in the runner's logHold for the end of the next poll's
// hand-out, and go out with that poll's records, or for logWait when no
// poll comes sooner: produced from each promise as it came, each went out
// in a produce request of its own between the outputs' requests (at
// moderate load, one more request per input for dedup and emit). They are
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
	phase   producePhase
	left    atomic.Int32
	mu      sync.Mutex
	first   error
	promise func(*kgo.Record, error) // c.onProduced, bound once
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
	if w.promise == nil {
		w.promise = c.onProduced
	}
	w.left.Store(int32(len(rs)))
	for _, rec := range rs {
		if try {
			c.r.client().TryProduce(c.r.workCtx, rec, w.promise)
		} else {
			c.r.client().Produce(c.r.workCtx, rec, w.promise)
		}
	}
}

// onProduced is the promise of every record of the Context.
func (c *Context) onProduced(rec *kgo.Record, err error) {
	r, w := c.r, &c.w
	if errors.Is(err, kgo.ErrMaxBuffered) {
		// TryProduce found the client's buffer full: produce it from a
		// goroutine, where waiting for room is allowed.
		r.goroutines.Add(1)
		go func() {
			defer r.goroutines.Done()
			r.client().Produce(r.workCtx, rec, w.promise)
		}()
		return
	}
	if err != nil {
		r.hot.produceErrors.Inc()
		w.mu.Lock()
		if w.first == nil {
			w.first = err
		}
		w.mu.Unlock()
	} else {
		r.hot.produced(rec.Topic).Inc()
	}
	if w.left.Add(-1) != 0 {
		return
	}
	w.mu.Lock()
	first := w.first
	w.mu.Unlock()
	c.written(first)
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
		if len(c.out.changelog) == 0 {
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

// logWait is how long a changelog record waits for the next poll's records
// to go out with: far below a commit interval, so it moves nothing but the
// settle of the work, which Get does not wait for (it sees staged entries).
const logWait = 2 * time.Millisecond

// logHold holds the Contexts whose outputs are acknowledged and whose
// changelog records are not produced yet: one timer per runner, armed when
// the first arrives, not one per record.
type logHold struct {
	mu     sync.Mutex
	cs     []*Context
	spare  []*Context
	timer  *time.Timer
	armed  bool
	closed bool // the poll loop is over: produce at once
	urgent int  // a revoke waits for its partitions' work: produce at once
}

// hold adds c, whose changelog records go out with the next flush.
func (h *logHold) hold(r *Runner, c *Context) {
	h.mu.Lock()
	if h.closed || h.urgent > 0 {
		h.mu.Unlock()
		c.produce(phaseChangelog, c.out.changelog, true)
		return
	}
	h.cs = append(h.cs, c)
	if !h.armed {
		h.armed = true
		if h.timer == nil {
			h.timer = time.AfterFunc(r.cfg.logWait, r.flushLogs)
		} else {
			h.timer.Reset(r.cfg.logWait)
		}
	}
	h.mu.Unlock()
}

// flushLogs produces the held changelog records: at the end of a poll's
// hand-out (before its records, so that both share a produce request), or
// when the timer fires first.
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
	for i, c := range cs {
		c.produce(phaseChangelog, c.out.changelog, true)
		cs[i] = nil
	}
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
