package infer

import (
	"slices"
	"testing"
	"time"
)

// A lower lane pauses while a higher one saturates a model (more queued
// than its target batch) or while it holds its share of the in-flight
// bound, and resumes at half of either: never merely because a higher
// lane has a request queued.
func TestLaneControl(t *testing.T) {
	type step struct {
		higher [3]int // per lane: requests of the lanes above it queued for the one model
		live   [3]int64
		unused bool   // no request of the highest lane for longer than reserveFor
		want   []bool // paused, per lane
	}
	tests := []struct {
		name   string
		target int
		steps  []step
	}{
		{"a higher request queued is no reason", 8, []step{
			{higher: [3]int{0, 3, 3}, live: [3]int64{3, 0, 0}, want: []bool{false, false, false}},
		}},
		{"a saturated model pauses the lanes below, half resumes", 8, []step{
			// What is queued is live: handed to the stage, not answered.
			{higher: [3]int{0, 9, 9}, live: [3]int64{9, 0, 0}, want: []bool{false, true, true}},
			{higher: [3]int{0, 5, 9}, live: [3]int64{5, 4, 0}, want: []bool{false, true, true}},
			{higher: [3]int{0, 4, 6}, live: [3]int64{4, 2, 0}, want: []bool{false, false, true}},
			{higher: [3]int{0, 0, 4}, live: [3]int64{0, 4, 0}, want: []bool{false, false, false}},
		}},
		{"a lane's share of the in-flight bound", 8, []step{
			// inflight 40, 3 lanes: each lower lane may hold 10.
			{live: [3]int64{0, 10, 3}, want: []bool{false, true, false}},
			{live: [3]int64{50, 6, 3}, want: []bool{false, true, false}},
			{live: [3]int64{50, 5, 3}, want: []bool{false, false, false}},
		}},
		{"no share is reserved for a lane nobody uses", 8, []step{
			{live: [3]int64{0, 30, 3}, unused: true, want: []bool{false, false, false}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var cur step
			paused := make([]bool, 3)
			calls := 0
			lc := newLaneControl(3, 40, func(l int, p bool) {
				calls++
				if paused[l] == p {
					t.Fatalf("lane %d set to %v twice", l, p)
				}
				paused[l] = p
			}, func(l int) []laneLoad { return []laneLoad{{higher: cur.higher[l], target: tc.target}} })
			clock := time.Now()
			lc.now = func() time.Time { return clock }
			lc.handed(0, clock) // the highest lane is in use
			for i, st := range tc.steps {
				cur = st
				for l := range 3 {
					lc.live[l].Store(st.live[l])
				}
				if st.unused {
					clock = clock.Add(reserveFor + time.Second)
				}
				lc.update()
				if !slices.Equal(paused, st.want) || !slices.Equal(lc.pausedLanes(), st.want) {
					t.Fatalf("step %d: paused %v (control %v), want %v", i, paused, lc.pausedLanes(), st.want)
				}
				before := calls
				lc.update()
				if calls != before {
					t.Fatalf("step %d: an update with nothing changed paused or resumed", i)
				}
			}
		})
	}
	// A lane paused at its share resumes as its requests are answered,
	// with no take to look again (a model that is down answers nothing,
	// then drops what went stale).
	paused := false
	lc := newLaneControl(2, 40, func(_ int, p bool) { paused = p }, func(int) []laneLoad { return nil })
	lc.handed(0, time.Now())
	for range 20 {
		lc.handed(1, time.Now())
	}
	lc.update()
	if !paused {
		t.Fatal("a lane holding its share is not paused")
	}
	for i := range 10 {
		if !paused {
			t.Fatalf("resumed after %d answers, at %d live", i, lc.live[1].Load())
		}
		lc.done(1)
	}
	if paused {
		t.Fatalf("still paused at %d live, half its share", lc.live[1].Load())
	}

	// A lane at its share keeps going while no higher request was ever
	// handed out: nothing to reserve room for.
	unused := newLaneControl(2, 40, func(int, bool) { t.Fatal("paused with the higher lane never used") },
		func(int) []laneLoad { return nil })
	for range 20 {
		unused.handed(1, time.Now())
	}
	unused.update()

	// One lane: nothing to pause.
	var none *laneControl
	none.update()
	newLaneControl(1, 40, func(int, bool) { t.Fatal("paused the only lane") }, nil).update()
}
