package sim

import (
	"testing"
	"time"
)

// The timer's lateness is followed (a steady overshoot is learnt) and
// subtracted from the sleep, never below half the cost.
func TestLateness(t *testing.T) {
	var avg time.Duration
	for range 100 {
		avg = lateness(avg, time.Millisecond)
	}
	if avg < 990*time.Microsecond || avg > time.Millisecond {
		t.Errorf("after 100 timers 1ms late the average is %v, want about 1ms", avg)
	}
	if got := lateness(avg, -time.Millisecond); got >= avg {
		t.Errorf("a timer on time must lower the average: %v then %v", avg, got)
	}
	if got := shorten(5250*time.Microsecond, time.Millisecond); got != 4250*time.Microsecond {
		t.Errorf("shorten(5.25ms, 1ms) = %v, want 4.25ms", got)
	}
	if got := shorten(2*time.Millisecond, time.Hour); got != time.Millisecond {
		t.Errorf("shorten(2ms, 1h) = %v, want half the cost", got)
	}
}
