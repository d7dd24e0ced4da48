package infer

import (
	"math"
	"testing"
	"time"
)

// call is one model call fed to a cost model: b items that took t, at a
// moment of the test.
type call struct {
	at time.Duration
	b  int
	t  time.Duration
}

// line is calls of sizes sizes, one every 10ms from at, each costing
// exactly a + c·b.
func line(at time.Duration, a, c time.Duration, sizes ...int) []call {
	var out []call
	for i, b := range sizes {
		out = append(out, call{at: at + time.Duration(i)*10*time.Millisecond, b: b, t: a + time.Duration(b)*c})
	}
	return out
}

func repeat(n int, sizes ...int) []int {
	var out []int
	for range n {
		out = append(out, sizes...)
	}
	return out
}

func TestCostModel(t *testing.T) {
	const ms = time.Millisecond
	const a, c = 5 * ms, 250 * time.Microsecond
	tests := []struct {
		name         string
		calls        []call
		wantA, wantC time.Duration
		tol          float64 // relative
		wantRestarts int
		wantTop      int // the largest call measured: since the last restart
	}{
		{
			name:  "sizes that vary: the line",
			calls: line(0, a, c, repeat(10, 1, 8, 30, 64)...),
			wantA: a, wantC: c, tol: 0.02, wantTop: 64,
		},
		{
			name:  "one call",
			calls: line(0, a, c, 10),
			// One size: c is the cost per item of the line through the
			// origin and the measured point.
			wantA: 0, wantC: (a + 10*c) / 10, tol: 1e-9, wantTop: 10,
		},
		{
			name:  "every call of one size: the line through the origin",
			calls: line(0, a, c, repeat(50, 16)...),
			wantA: 0, wantC: (a + 16*c) / 16, tol: 1e-9, wantTop: 16,
		},
		{
			name: "a GC pause: one call 10x weighs little",
			calls: append(line(0, a, c, repeat(10, 4, 40)...),
				call{at: 200 * ms, b: 40, t: 150 * ms}),
			wantA: a, wantC: c, tol: 0.10, wantTop: 40,
		},
		{
			name: "two slow calls in a row are not a new regime",
			calls: append(line(0, a, c, repeat(10, 4, 40)...),
				call{at: 200 * ms, b: 40, t: 150 * ms}, call{at: 210 * ms, b: 4, t: 60 * ms}),
			wantA: a, wantC: c, tol: 0.25, wantTop: 40,
		},
		{
			name: "the cost doubles: a new regime within a few calls",
			calls: append(line(0, a, c, repeat(20, 4, 40)...),
				line(time.Second, 2*a, 2*c, repeat(4, 6, 35)...)...),
			wantA: 2 * a, wantC: 2 * c, tol: 0.02, wantRestarts: 1, wantTop: 35,
		},
		{
			name: "a slow drift is followed by the decay",
			calls: append(line(0, a, c, repeat(20, 4, 40)...),
				line(time.Second, a*12/10, c*12/10, repeat(100, 6, 35)...)...), // 2 s of calls at +20%
			wantA: a * 12 / 10, wantC: c * 12 / 10, tol: 0.10, wantTop: 40,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var m costModel
			if _, _, _, ok := m.estimate(); ok {
				t.Fatal("estimate before any call: ok")
			}
			start := time.Unix(1e9, 0)
			for _, x := range tc.calls {
				m.observe(start.Add(x.at), x.b, x.t)
			}
			ga, gc, last, ok := m.estimate()
			if !ok || !last.Equal(start.Add(tc.calls[len(tc.calls)-1].at)) {
				t.Fatalf("estimate: ok %v, last %v", ok, last)
			}
			near := func(got float64, want time.Duration) bool {
				return math.Abs(got-want.Seconds()) <= tc.tol*max(want.Seconds(), c.Seconds())
			}
			if !near(ga, tc.wantA) || !near(gc, tc.wantC) {
				t.Errorf("a = %.3fms, c = %.4fms; want %v, %v (±%.0f%%)", ga*1e3, gc*1e3, tc.wantA, tc.wantC, tc.tol*100)
			}
			if m.restarts != tc.wantRestarts {
				t.Errorf("%d restarts, want %d", m.restarts, tc.wantRestarts)
			}
			if got := m.measured(); got != tc.wantTop {
				t.Errorf("largest call measured %d, want %d", got, tc.wantTop)
			}
		})
	}
}

func TestCostsVersions(t *testing.T) {
	cs := newCosts()
	if cs.lookup(defaultVersion) != nil {
		t.Fatal("a fit before any call")
	}
	m, label := cs.of(versionLabel(""))
	if label != defaultVersion || cs.lookup(defaultVersion) != m {
		t.Fatalf("the default version's fit: label %q", label)
	}
	for i := range 2 * maxVersions {
		cs.of(versionLabel(string(rune('a' + i))))
	}
	other, label := cs.of("z-new")
	if label != otherVersion || cs.lookup("y-new") != other {
		t.Errorf("versions beyond %d: label %q, want them to share %s", maxVersions, label, otherVersion)
	}
	if len(cs.byVersion) != maxVersions+1 {
		t.Errorf("%d fits, want %d and %s", len(cs.byVersion), maxVersions, otherVersion)
	}
}

func TestRateMeter(t *testing.T) {
	r := rateMeter{halfLife: arrivalHalfLife}
	start := time.Unix(1e9, 0)
	if r.rate(start) != 0 {
		t.Fatal("a rate before any event")
	}
	const rate = 2000.0
	var now time.Time
	for i := range 4000 { // 2 s: 8 half-lives
		now = start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		r.add(now)
	}
	if got := r.rate(now); math.Abs(got-rate)/rate > 0.01 {
		t.Errorf("rate %.0f/s after 2 s at %.0f/s", got, rate)
	}
	if got := r.rate(now.Add(arrivalHalfLife)); math.Abs(got-rate/2)/rate > 0.01 {
		t.Errorf("rate %.0f/s a half-life after the last event, want about %.0f", got, rate/2)
	}
}

func TestBatchLimit(t *testing.T) {
	l := newBatchLimit(64)
	if got := l.tooLarge(40); got != 20 {
		t.Fatalf("too large at 40: limit %d, want 20", got)
	}
	if got := l.tooLarge(64); got != 20 {
		t.Fatalf("too large at 64 (a call in flight before): limit %d, want 20", got)
	}
	for range 3 * limitGrowAfter {
		l.succeeded(10) // below the limit: says nothing about it
	}
	if got := l.get(); got != 20 {
		t.Fatalf("after calls below the limit: %d, want 20", got)
	}
	for i := range limitGrowAfter {
		if got := l.succeeded(20); (got == 21) != (i == limitGrowAfter-1) {
			t.Fatalf("success %d at the limit: limit %d", i+1, got)
		}
	}
	for range 1000 {
		l.succeeded(l.get())
	}
	if got := l.get(); got != 64 {
		t.Errorf("after many successes: %d, want the configured 64", got)
	}
	if got := l.tooLarge(1); got != 1 {
		t.Errorf("too large at 1: limit %d, want 1", got)
	}

	// Near the size refused, growth is a rare probe.
	l = newBatchLimit(64)
	l.tooLarge(10)
	calls := 0
	for l.get() < 9 {
		l.succeeded(l.get())
		calls++
	}
	if calls != 4*limitGrowAfter {
		t.Errorf("5 to 9 in %d calls at the limit, want %d", calls, 4*limitGrowAfter)
	}
	for range limitProbeAfter - 1 {
		l.succeeded(9)
	}
	if got := l.get(); got != 9 {
		t.Fatalf("limit %d after %d calls below the refused size, want 9", got, limitProbeAfter-1)
	}
	if got := l.succeeded(9); got != 10 {
		t.Fatalf("limit %d after %d calls, want the probe at 10", got, limitProbeAfter)
	}
	l.succeeded(10) // the refused size works now: the ceiling is lifted
	for range limitGrowAfter {
		l.succeeded(10)
	}
	if got := l.get(); got != 11 {
		t.Errorf("limit %d, want 11: past a lifted ceiling growth is additive again", got)
	}
}
