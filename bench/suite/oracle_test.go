package suite

import (
	"math"
	"testing"
)

// The simulator against the reference's own simulation (batching.md §1.1:
// a = 5 ms, c = 0.25 ms, L = 50 ms, no hops, p99 over all requests, drops
// as misses): the capacities it reports, within the noise of one seed.
func TestOracleMatchesReference(t *testing.T) {
	m := Cost{A: 0.005, C: 0.00025, Bmax: 1 << 20}
	o := Oracle{Cost: m, L: 0.050}
	gen := func(rate float64) []float64 { return poissonTimes(rate, 60, 1) }
	for _, c := range []struct {
		name string
		p    simPolicy
		want float64
	}{
		{"unbatched", simPolicy{kind: simOne}, 145},
		{"greedy", simPolicy{kind: simGreedy}, 3024},
		{"early drop", simPolicy{kind: simEarlyDrop}, 3134},
		{"window L/10", simPolicy{kind: simWindow, wait: 0.005}, 3024},
		{"window L/2", simPolicy{kind: simWindow, wait: 0.025}, 2746},
	} {
		got := o.capacity(c.p, gen, 50, 4000)
		// One seed: unbatched (few arrivals) moves by ±6% with it.
		if math.Abs(got-c.want)/c.want > 0.06 {
			t.Errorf("%s: capacity %.0f/s, reference %.0f/s", c.name, got, c.want)
		}
	}
	if x := m.XStar(0.050); math.Abs(x-3200) > 1e-6 {
		t.Errorf("X* = %v, want 3200", x)
	}
}

// Under 2× overload FIFO collapses and early drop keeps the model busy with
// requests that can make it (reference §1.1, overload table).
func TestOracleOverload(t *testing.T) {
	m := Cost{A: 0.005, C: 0.00025, Bmax: 1 << 20}
	o := Oracle{Cost: m, L: 0.050}
	arr := poissonTimes(6400, 20, 3)
	good := func(p simPolicy) float64 {
		n := 0
		for _, l := range o.latencies(arr, p) {
			if l <= o.L {
				n++
			}
		}
		return float64(n) / 20
	}
	if g := good(simPolicy{kind: simEarlyDrop}); g < 0.95*3200 {
		t.Errorf("early drop goodput %.0f/s at 2X*, want about X* = 3200", g)
	}
	if g := good(simPolicy{kind: simGreedy}); g > 0.1*3200 {
		t.Errorf("greedy FIFO goodput %.0f/s at 2X*, want a collapse", g)
	}
}

func TestSimulateExact(t *testing.T) {
	m := Cost{A: 1, C: 0.5, Bmax: 2}
	arr := []float64{0, 0, 0, 10}
	for _, c := range []struct {
		name string
		p    simPolicy
		want []float64
	}{
		// {0,1} from 0 to 2; {2} from 2 to 3.5; {3} from 10 to 11.5.
		{"greedy", simPolicy{kind: simGreedy}, []float64{2, 2, 3.5, 1.5}},
		{"one", simPolicy{kind: simOne}, []float64{1.5, 3, 4.5, 1.5}},
		// Full at 0: no wait; then 2 alone waits out its window (to 5),
		// and 3 its own (to 15).
		{"window", simPolicy{kind: simWindow, wait: 5}, []float64{2, 2, 6.5, 6.5}},
		// budget 3: request 2 would finish at 3.5 > 3: dropped.
		{"early drop", simPolicy{kind: simEarlyDrop, budget: 3}, []float64{2, 2, math.Inf(1), 1.5}},
	} {
		got := simulate(arr, m, c.p)
		for i := range got {
			if math.Abs(got[i]-c.want[i]) > 1e-9 && !(math.IsInf(got[i], 1) && math.IsInf(c.want[i], 1)) {
				t.Errorf("%s: latencies %v, want %v", c.name, got, c.want)
				break
			}
		}
	}
}
