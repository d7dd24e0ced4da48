package infer

import (
	"sync/atomic"
	"testing"
	"time"
)

// An idle infer process asks the broker for its lanes' end offsets once per
// heartbeat, not at every tick; anything that could hide a backlog from the
// stage's own counts makes it ask at the next tick.
func TestServingQuiet(t *testing.T) {
	m := &served{arrivals: make([]atomic.Int64, 1), q: newLaneQueue(1, 8, nil, nil, nil)}
	sv := &serving{s: &Stage{models: map[string]*served{"m": m}}, cfg: PressureConfig{Heartbeat: time.Second}}
	at := time.Unix(1_000, 0)
	if sv.quiet(at, 0, false) {
		t.Fatal("quiet before the broker was ever asked")
	}
	sv.backlog, sv.askedAt, sv.askedSeen = []int64{0}, at, 0
	soon := at.Add(100 * time.Millisecond)
	if !sv.quiet(soon, 0, false) {
		t.Fatal("not quiet: nothing arrived, nothing queued, nothing paused, backlog empty, 100 ms after asking")
	}
	cases := []struct {
		name  string
		setup func()
		now   time.Time
		seen  int64
		pause bool
	}{
		{name: "a request arrived since", now: soon, seen: 1},
		{name: "a lane partition is paused", now: soon, pause: true},
		{name: "the heartbeat passed", now: at.Add(time.Second)},
		{name: "the last backlog was not empty", now: soon, setup: func() { sv.backlog = []int64{3} }},
		{name: "a request is queued", now: soon, setup: func() { m.q.n = 1 }},
		{name: "a call is running", now: soon, setup: func() { m.running.Store(1) }},
	}
	for _, tc := range cases {
		sv.backlog = []int64{0}
		m.q.n = 0
		m.running.Store(0)
		if tc.setup != nil {
			tc.setup()
		}
		if sv.quiet(tc.now, tc.seen, tc.pause) {
			t.Errorf("%s: quiet, want the broker asked", tc.name)
		}
	}
}
