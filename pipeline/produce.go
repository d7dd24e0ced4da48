package pipeline

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The produce of one Context's effects, without a closure, goroutine or
// counter allocated per produce: the Context carries the state of its own
// write (what is left, the first error, which phase), and one promise bound
// once per Context serves every record of it.
//
// At-least-once the phases follow the write order: the records, then, once
// Kafka acknowledged all of them, the changelog, then settle. The changelog
// is produced from the promise with TryProduce, which never blocks (a
// promise must not block on the client); only when the client's buffer is
// full does a goroutine produce what did not fit. Exactly-once, the records
// and the changelog go together into the transaction.

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
		c.produce(phaseChangelog, c.out.changelog, true)
	case phaseChangelog:
		if err != nil {
			r.failed(c, err)
			return
		}
		r.settle(c)
	}
}
