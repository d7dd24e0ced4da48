package suite

import (
	"math"
	"math/rand/v2"
)

// Arrival processes of a run.
const (
	Poisson = "poisson" // exponential gaps at Rate
	OnOff   = "onoff"   // bursts: Poisson at 4×Rate while on (exp. 200 ms), nothing while off (exp. 600 ms)
	Ramp    = "ramp"    // Poisson whose rate goes linearly from Rate to To
)

// Phase is one part of a run's offered load.
type Phase struct {
	Name    string  `json:"name"`
	Kind    string  `json:"kind"`
	Rate    float64 `json:"rate"`         // mean requests/s (a ramp's start)
	To      float64 `json:"to,omitempty"` // a ramp's end
	Seconds float64 `json:"seconds"`
}

// mean is the phase's mean offered rate.
func (p Phase) mean() float64 {
	if p.Kind == Ramp {
		return (p.Rate + p.To) / 2
	}
	return p.Rate
}

// Schedule is a run's open-loop load: its phases one after the other, a
// fraction of duplicates, and the seed every configuration of a repetition
// shares, so that they all see the same arrivals.
type Schedule struct {
	Phases []Phase `json:"phases"`
	Dup    float64 `json:"duplicates,omitempty"`
	Seed   uint64  `json:"seed"`
}

// Arrival is one request of a schedule.
type Arrival struct {
	At    float64 // seconds from the start
	Phase int
	DupOf int // the index of the request whose idempotency key this one repeats; -1: a key of its own
}

// Seconds is the schedule's length.
func (s Schedule) Seconds() float64 {
	var t float64
	for _, p := range s.Phases {
		t += p.Seconds
	}
	return t
}

// Offered is the schedule's mean offered rate.
func (s Schedule) Offered() float64 {
	var n, t float64
	for _, p := range s.Phases {
		n += p.mean() * p.Seconds
		t += p.Seconds
	}
	if t == 0 {
		return 0
	}
	return n / t
}

// PhaseStart is when phase i starts, seconds from the start.
func (s Schedule) PhaseStart(i int) float64 {
	var t float64
	for _, p := range s.Phases[:i] {
		t += p.Seconds
	}
	return t
}

// Arrivals draws the schedule's requests. Duplicates repeat the key of an
// earlier request that has a key of its own: half of them one of the last
// 64 (inside a batch window, often still in flight), half any earlier one
// (long after its answer).
func (s Schedule) Arrivals() []Arrival {
	rng := rand.New(rand.NewPCG(s.Seed, 0xa5a5))
	var out []Arrival
	var uniques []int
	var base float64
	add := func(at float64, phase int) {
		a := Arrival{At: at, Phase: phase, DupOf: -1}
		if len(uniques) > 0 && rng.Float64() < s.Dup {
			if rng.IntN(2) == 0 {
				a.DupOf = uniques[max(0, len(uniques)-1-rng.IntN(64))]
			} else {
				a.DupOf = uniques[rng.IntN(len(uniques))]
			}
		} else {
			uniques = append(uniques, len(out))
		}
		out = append(out, a)
	}
	for i, p := range s.Phases {
		end := base + p.Seconds
		switch p.Kind {
		case Poisson:
			for t := base + rng.ExpFloat64()/p.Rate; p.Rate > 0 && t < end; t += rng.ExpFloat64() / p.Rate {
				add(t, i)
			}
		case OnOff:
			peak := 4 * p.Rate
			for t, on := base, true; t < end && p.Rate > 0; on = !on {
				if !on {
					t += rng.ExpFloat64() * 0.6
					continue
				}
				stop := math.Min(end, t+rng.ExpFloat64()*0.2)
				for t += rng.ExpFloat64() / peak; t < stop; t += rng.ExpFloat64() / peak {
					add(t, i)
				}
				t = stop
			}
		case Ramp:
			// Thinning: Poisson at the higher rate, each arrival kept with
			// the probability rate(t)/higher.
			top := math.Max(p.Rate, p.To)
			for t := base + rng.ExpFloat64()/top; top > 0 && t < end; t += rng.ExpFloat64() / top {
				r := p.Rate + (p.To-p.Rate)*(t-base)/p.Seconds
				if rng.Float64()*top < r {
					add(t, i)
				}
			}
		}
		base = end
	}
	return out
}

// times are the arrival times alone, for the simulator.
func times(as []Arrival) []float64 {
	t := make([]float64, len(as))
	for i, a := range as {
		t[i] = a.At
	}
	return t
}

// poissonTimes draws Poisson arrivals at rate for seconds.
func poissonTimes(rate, seconds float64, seed uint64) []float64 {
	return times(Schedule{Phases: []Phase{{Kind: Poisson, Rate: rate, Seconds: seconds}}, Seed: seed}.Arrivals())
}
