package infer

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

const (
	testThreshold = 3
	testCooldown  = time.Second
)

// countingBreaker is a breaker whose transitions are counted.
type countingBreaker struct {
	*breaker
	opens, closes int
}

func newCountingBreaker() *countingBreaker {
	cb := &countingBreaker{}
	cb.breaker = newBreaker(testThreshold, testCooldown, func() { cb.opens++ }, func() { cb.closes++ })
	return cb
}

func (cb *countingBreaker) check(t *testing.T, step string, wantClosed bool, opens, closes int) {
	t.Helper()
	if got := cb.isClosed(); got != wantClosed {
		t.Fatalf("%s: isClosed = %v, want %v", step, got, wantClosed)
	}
	if cb.opens != opens || cb.closes != closes {
		t.Fatalf("%s: onOpen called %d times, onClose %d; want %d and %d", step, cb.opens, cb.closes, opens, closes)
	}
}

type acquired struct {
	probe bool
	err   error
	at    time.Time
}

func acquireAsync(ctx context.Context, b *breaker) <-chan acquired {
	ch := make(chan acquired, 1)
	go func() {
		probe, err := b.acquire(ctx)
		ch <- acquired{probe, err, time.Now()}
	}()
	return ch
}

// acquireBlocked reports, once the bubble is idle, whether acquire has not returned.
func acquireBlocked(ch <-chan acquired) bool {
	synctest.Wait()
	return len(ch) == 0
}

func TestBreakerCountsConsecutiveFailures(t *testing.T) {
	tests := []struct {
		name       string
		results    string // f: failure, s: success (non-probe calls)
		wantClosed bool
		wantOpens  int
		wantCloses int
	}{
		{"below threshold", "ff", true, 0, 0},
		{"at threshold", "fff", false, 1, 0},
		{"success resets the count", "ffsff", true, 0, 0},
		{"success resets, then threshold again", "ffsfff", false, 1, 0},
		// An answer from a call in flight closes it; the count restarts.
		{"success after opening", "fffsf", true, 1, 1},
		{"success after opening, then threshold again", "fffsfff", false, 2, 1},
		{"only successes", "sssss", true, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cb := newCountingBreaker()
			for _, r := range tc.results {
				if r == 'f' {
					cb.failure(false)
				} else {
					cb.success(false)
				}
			}
			cb.check(t, "end", tc.wantClosed, tc.wantOpens, tc.wantCloses)
		})
	}
}

func TestBreakerOpensOnce(t *testing.T) {
	cb := newCountingBreaker()
	for range testThreshold {
		cb.failure(false)
	}
	cb.check(t, "opened", false, 1, 0)
	// Calls in flight when it opened keep failing: no new open.
	for range 5 {
		cb.failure(false)
	}
	cb.check(t, "late failures", false, 1, 0)
}

func TestBreakerClosedAcquire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cb := newCountingBreaker()
		start := time.Now()
		probe, err := cb.acquire(t.Context())
		if probe || err != nil {
			t.Fatalf("acquire on a closed breaker = (%v, %v), want (false, nil)", probe, err)
		}
		if d := time.Since(start); d != 0 {
			t.Fatalf("acquire on a closed breaker waited %v", d)
		}
	})
}

// openAndProbe opens cb, checks that acquire waits exactly the cooldown, and
// returns holding the probe.
func openAndProbe(t *testing.T, cb *countingBreaker) {
	t.Helper()
	for range testThreshold {
		cb.failure(false)
	}
	opened := time.Now()
	ch := acquireAsync(t.Context(), cb.breaker)
	if !acquireBlocked(ch) {
		t.Fatal("acquire did not block on an open breaker")
	}
	time.Sleep(testCooldown - time.Nanosecond)
	if !acquireBlocked(ch) {
		t.Fatal("acquire returned before the cooldown")
	}
	time.Sleep(time.Nanosecond)
	if acquireBlocked(ch) {
		t.Fatal("acquire still blocked after the cooldown")
	}
	a := <-ch
	if !a.probe || a.err != nil {
		t.Fatalf("first acquire after the cooldown = (%v, %v), want the probe", a.probe, a.err)
	}
	if d := a.at.Sub(opened); d != testCooldown {
		t.Fatalf("probe let through after %v, want %v", d, testCooldown)
	}
}

func TestBreakerHalfOpen(t *testing.T) {
	tests := []struct {
		name    string
		probeOK bool
	}{
		{"probe success closes", true},
		{"probe failure re-opens", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cb := newCountingBreaker()
				openAndProbe(t, cb)
				cb.check(t, "half-open", false, 1, 0)

				// Exactly one probe: the others wait for its outcome,
				// however long it takes.
				waiters := []<-chan acquired{acquireAsync(t.Context(), cb.breaker), acquireAsync(t.Context(), cb.breaker)}
				time.Sleep(10 * testCooldown)
				for _, w := range waiters {
					if !acquireBlocked(w) {
						t.Fatal("a second call was let through while the probe runs")
					}
				}

				reported := time.Now()
				if tc.probeOK {
					cb.success(true)
					cb.check(t, "after the probe", true, 1, 1)
					for _, w := range waiters {
						if acquireBlocked(w) {
							t.Fatal("waiter still blocked after the circuit closed")
						}
						if a := <-w; a.probe || a.err != nil || a.at != reported {
							t.Fatalf("waiter = (%v, %v) after %v, want (false, nil) at once", a.probe, a.err, a.at.Sub(reported))
						}
					}
					return
				}

				cb.failure(true)
				cb.check(t, "after the probe", false, 1, 0)
				time.Sleep(testCooldown - time.Nanosecond)
				for _, w := range waiters {
					if !acquireBlocked(w) {
						t.Fatal("waiter let through within the new cooldown")
					}
				}
				time.Sleep(time.Nanosecond)
				synctest.Wait()
				var probe, rest <-chan acquired
				switch {
				case len(waiters[0]) == 1 && len(waiters[1]) == 0:
					probe, rest = waiters[0], waiters[1]
				case len(waiters[1]) == 1 && len(waiters[0]) == 0:
					probe, rest = waiters[1], waiters[0]
				default:
					t.Fatalf("after the new cooldown %d and %d waiters returned, want exactly one probe",
						len(waiters[0]), len(waiters[1]))
				}
				if a := <-probe; !a.probe || a.err != nil || a.at.Sub(reported) != testCooldown {
					t.Fatalf("new probe = (%v, %v) after %v, want (true, nil) after %v",
						a.probe, a.err, a.at.Sub(reported), testCooldown)
				}
				cb.success(true)
				cb.check(t, "after the second probe", true, 1, 1)
				if acquireBlocked(rest) {
					t.Fatal("last waiter still blocked after the circuit closed")
				}
				if a := <-rest; a.probe || a.err != nil {
					t.Fatalf("last waiter = (%v, %v), want (false, nil)", a.probe, a.err)
				}
			})
		})
	}
}

func TestBreakerRepeatedFailedProbes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cb := newCountingBreaker()
		openAndProbe(t, cb)
		for cycle := range 3 {
			cb.failure(true)
			cb.check(t, "re-opened", false, 1, 0)
			// Each cooldown starts at the failed probe.
			reported := time.Now()
			probe, err := cb.acquire(t.Context())
			if !probe || err != nil {
				t.Fatalf("cycle %d: acquire = (%v, %v), want the probe", cycle, probe, err)
			}
			if d := time.Since(reported); d != testCooldown {
				t.Fatalf("cycle %d: probe after %v, want %v", cycle, d, testCooldown)
			}
		}
		cb.success(true)
		cb.check(t, "closed", true, 1, 1)
		// Closed again: the failure count starts from zero.
		for range testThreshold - 1 {
			cb.failure(false)
		}
		cb.check(t, "below threshold after closing", true, 1, 1)
	})
}

func TestBreakerAcquireCancelled(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, cb *countingBreaker)
	}{
		{"open", func(t *testing.T, cb *countingBreaker) {
			for range testThreshold {
				cb.failure(false)
			}
		}},
		{"half-open with the probe out", openAndProbe},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cb := newCountingBreaker()
				tc.setup(t, cb)
				ctx, cancel := context.WithCancel(t.Context())
				ch := acquireAsync(ctx, cb.breaker)
				if !acquireBlocked(ch) {
					t.Fatal("acquire did not block")
				}
				cancel()
				if acquireBlocked(ch) {
					t.Fatal("acquire still blocked after cancel")
				}
				if a := <-ch; a.probe || !errors.Is(a.err, context.Canceled) {
					t.Fatalf("cancelled acquire = (%v, %v), want (false, context.Canceled)", a.probe, a.err)
				}
			})
		})
	}
}

// An open breaker turns half-open by itself when its cooldown is over, even
// with no call waiting: the stage's input resumes so that a request arrives
// to probe with (with nothing queued, no probe would ever be made and the
// circuit would stay open). A failed probe pauses the input again.
func TestBreakerHalfOpensWithoutWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var halfOpens, reopens atomic.Int32
		b := newBreaker(testThreshold, testCooldown, nil, nil)
		b.onHalfOpen = func() { halfOpens.Add(1) }
		b.onReopen = func() { reopens.Add(1) }
		for range testThreshold {
			b.failure(false)
		}
		time.Sleep(testCooldown - time.Nanosecond)
		synctest.Wait()
		if halfOpens.Load() != 0 {
			t.Fatal("half-open before the cooldown")
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if n := halfOpens.Load(); n != 1 {
			t.Fatalf("half-opened %d times after the cooldown, want 1", n)
		}
		probe, err := b.acquire(t.Context())
		if !probe || err != nil {
			t.Fatalf("acquire = (%v, %v), want the probe at once", probe, err)
		}
		b.failure(true)
		if n := reopens.Load(); n != 1 {
			t.Fatalf("re-opened %d times after a failed probe, want 1", n)
		}
		time.Sleep(testCooldown)
		synctest.Wait()
		if n := halfOpens.Load(); n != 2 {
			t.Fatalf("half-opened %d times, want 2", n)
		}
		b.success(true)
		if !b.isClosed() {
			t.Fatal("not closed after a good probe")
		}
	})
}

// With a probe (a backend's readiness), an open breaker asks it after each
// cooldown instead of letting a request through: no input flows while the
// model is down, and the circuit closes as soon as the probe says it is up.
func TestBreakerReadinessProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var up atomic.Bool
		var asked, halfOpens atomic.Int32
		cb := newCountingBreaker()
		cb.onHalfOpen = func() { halfOpens.Add(1) }
		cb.probe = func(context.Context) error {
			asked.Add(1)
			if up.Load() {
				return nil
			}
			return errors.New("not ready")
		}
		for range testThreshold {
			cb.failure(false)
		}
		waiter := acquireAsync(t.Context(), cb.breaker)
		time.Sleep(3 * testCooldown)
		synctest.Wait()
		if n := asked.Load(); n != 3 {
			t.Fatalf("probed %d times in 3 cooldowns, want 3", n)
		}
		if !acquireBlocked(waiter) || halfOpens.Load() != 0 {
			t.Fatal("a call or the input was let through while the probe says the model is down")
		}
		up.Store(true)
		time.Sleep(testCooldown)
		synctest.Wait()
		cb.check(t, "after a good probe", true, 1, 1)
		if acquireBlocked(waiter) {
			t.Fatal("waiter still blocked after the circuit closed")
		}
		if a := <-waiter; a.probe || a.err != nil {
			t.Fatalf("waiter = (%v, %v), want a plain call", a.probe, a.err)
		}
	})
}
