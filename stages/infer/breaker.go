package infer

import (
	"context"
	"sync"
	"time"
)

// breaker is a circuit breaker in front of one model. After threshold
// consecutive transient failures it opens: no call is made for cooldown, and
// the stage pauses its input partitions so that requests wait in Kafka, not
// in memory. When the cooldown is over it is half-open, by itself (onHalfOpen:
// the input resumes, so that there is a request to probe with even when
// nothing was queued): one probe call is let through; its success closes
// the circuit, its failure opens it again (onReopen: the input pauses).
type breaker struct {
	threshold  int
	cooldown   time.Duration
	onOpen     func()
	onClose    func()
	onHalfOpen func()
	onReopen   func()
	// probe, when set, is how the breaker asks a backend whether it is up
	// (an OIP server's readiness): after each cooldown it is called instead
	// of letting a request through, and its success closes the circuit, so
	// no input is read while the model is down.
	probe func(context.Context) error

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

// cooled turns an open breaker whose cooldown is over half-open, or, with
// a probe, asks the backend and closes the circuit if it is up.
func (b *breaker) cooled() {
	b.mu.Lock()
	if b.state != open || time.Since(b.openedAt) < b.cooldown {
		b.mu.Unlock()
		return
	}
	if b.probe == nil {
		b.setLocked(halfOpen)
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), max(b.cooldown, time.Second))
	err := b.probe(ctx)
	cancel()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != open {
		return
	}
	if err == nil {
		b.fails = 0
		b.setLocked(closed)
		return
	}
	b.openedAt = time.Now()
	time.AfterFunc(b.cooldown, b.cooled)
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
			if wait := b.cooldown - time.Since(b.openedAt); wait > 0 || b.probe != nil {
				if b.probe != nil {
					wait = b.cooldown // the probe decides; wait for it
				}
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

// release gives back a probe whose call says nothing about the model (it
// was cancelled because nobody waits for its answer): another call may
// probe.
func (b *breaker) release(probe bool) {
	if !probe {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probing = false
	close(b.changed)
	b.changed = make(chan struct{})
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

// down reports whether the circuit is open or half-open, and how long
// until its next probe (0 when half-open).
func (b *breaker) down() (bool, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case closed:
		return false, 0
	case open:
		return true, max(0, b.cooldown-time.Since(b.openedAt))
	}
	return true, 0
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
	if s == open {
		time.AfterFunc(b.cooldown, b.cooled)
	}
	switch {
	case was == closed && s != closed:
		if b.onOpen != nil {
			b.onOpen()
		}
	case s == closed && was != closed:
		if b.onClose != nil {
			b.onClose()
		}
	case was == open && s == halfOpen:
		if b.onHalfOpen != nil {
			b.onHalfOpen()
		}
	case was == halfOpen && s == open:
		if b.onReopen != nil {
			b.onReopen()
		}
	}
}
