package infer

import (
	"context"
	"sync"
	"time"
)

// breaker is a circuit breaker in front of one model. After threshold
// consecutive transient failures it opens: no call is made for cooldown, and
// the stage pauses its input partitions so that requests wait in Kafka, not
// in memory. Then one probe call is let through (half-open); its success
// closes the circuit, its failure opens it again.
type breaker struct {
	threshold int
	cooldown  time.Duration
	onOpen    func()
	onClose   func()

	mu       sync.Mutex
	state    int // closed, open, halfOpen
	fails    int
	openedAt time.Time
	probing  bool
	changed  chan struct{} // closed and replaced on every state change
}

const (
	closed = iota
	open
	halfOpen
)

func newBreaker(threshold int, cooldown time.Duration, onOpen, onClose func()) *breaker {
	return &breaker{threshold: threshold, cooldown: cooldown, onOpen: onOpen, onClose: onClose, changed: make(chan struct{})}
}

// acquire blocks until a call may be made. probe is true when the call is the
// half-open probe; its result must be reported.
func (b *breaker) acquire(ctx context.Context) (probe bool, err error) {
	for {
		b.mu.Lock()
		switch b.state {
		case closed:
			b.mu.Unlock()
			return false, nil
		case open:
			if wait := b.cooldown - time.Since(b.openedAt); wait > 0 {
				ch := b.changed
				b.mu.Unlock()
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return false, ctx.Err()
				case <-t.C:
				case <-ch:
				}
				t.Stop()
				continue
			}
			b.setLocked(halfOpen)
			b.probing = true
			b.mu.Unlock()
			return true, nil
		case halfOpen:
			if !b.probing {
				b.probing = true
				b.mu.Unlock()
				return true, nil
			}
			ch := b.changed
			b.mu.Unlock()
			select {
			case <-ctx.Done():
				return false, ctx.Err()
			case <-ch:
			}
		}
	}
}

// success reports a call that reached the model and got an answer.
func (b *breaker) success(probe bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fails = 0
	if probe {
		b.probing = false
	}
	if b.state != closed {
		b.setLocked(closed)
	}
}

// failure reports a transient failure.
func (b *breaker) failure(probe bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fails++
	if probe {
		b.probing = false
	}
	if b.state == halfOpen || (b.state == closed && b.fails >= b.threshold) {
		b.openedAt = time.Now()
		b.setLocked(open)
	}
}

func (b *breaker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state == closed
}

func (b *breaker) setLocked(s int) {
	was := b.state
	b.state = s
	close(b.changed)
	b.changed = make(chan struct{})
	if was == closed && s != closed && b.onOpen != nil {
		b.onOpen()
	}
	if s == closed && was != closed && b.onClose != nil {
		b.onClose()
	}
}
