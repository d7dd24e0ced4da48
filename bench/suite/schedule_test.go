package suite

import (
	"encoding/json"
	"math"
	"testing"
)

func TestScheduleRates(t *testing.T) {
	for _, c := range []struct {
		name string
		p    Phase
	}{
		{"poisson", Phase{Kind: Poisson, Rate: 1000, Seconds: 30}},
		{"on/off", Phase{Kind: OnOff, Rate: 500, Seconds: 120}},
		{"ramp", Phase{Kind: Ramp, Rate: 100, To: 900, Seconds: 30}},
	} {
		s := Schedule{Phases: []Phase{c.p}, Seed: 9}
		as := s.Arrivals()
		got := float64(len(as)) / c.p.Seconds
		if math.Abs(got-s.Offered())/s.Offered() > 0.05 {
			t.Errorf("%s: %.0f/s drawn, offered %.0f/s", c.name, got, s.Offered())
		}
		for i := 1; i < len(as); i++ {
			if as[i].At < as[i-1].At || as[i].At >= c.p.Seconds {
				t.Fatalf("%s: arrival %d at %v after %v (phase of %vs)", c.name, i, as[i].At, as[i-1].At, c.p.Seconds)
			}
		}
	}
	// A ramp's second half carries more than its first.
	as := Schedule{Phases: []Phase{{Kind: Ramp, Rate: 100, To: 900, Seconds: 10}}, Seed: 1}.Arrivals()
	first := 0
	for _, a := range as {
		if a.At < 5 {
			first++
		}
	}
	if want := 0.3 * float64(len(as)); math.Abs(float64(first)-want) > 0.05*float64(len(as)) {
		t.Errorf("ramp: %d of %d in the first half, want about %.0f", first, len(as), want)
	}
}

// Phases follow each other; duplicates repeat the key of an earlier
// request that has a key of its own; the same seed draws the same
// arrivals (every configuration of a repetition sees the same load).
func TestScheduleDuplicatesAndPhases(t *testing.T) {
	s := Schedule{Phases: []Phase{{Kind: Poisson, Rate: 2000, Seconds: 2}, {Kind: Poisson, Rate: 500, Seconds: 2}},
		Dup: 0.3, Seed: 4}
	as := s.Arrivals()
	dups := 0
	for i, a := range as {
		if want := 0; a.At >= 2 {
			want = 1
			if a.Phase != want {
				t.Fatalf("arrival %d at %.3fs in phase %d", i, a.At, a.Phase)
			}
		} else if a.Phase != want {
			t.Fatalf("arrival %d at %.3fs in phase %d", i, a.At, a.Phase)
		}
		if a.DupOf >= 0 {
			dups++
			if a.DupOf >= i || as[a.DupOf].DupOf != -1 {
				t.Fatalf("arrival %d repeats %d, which is not an earlier original", i, a.DupOf)
			}
		}
	}
	if f := float64(dups) / float64(len(as)); math.Abs(f-0.3) > 0.03 {
		t.Errorf("%.2f duplicates, want 0.30", f)
	}
	again := s.Arrivals()
	if len(again) != len(as) || again[len(as)/2] != as[len(as)/2] {
		t.Error("the same seed drew other arrivals")
	}
}

func TestSpreadAndNum(t *testing.T) {
	inf := math.Inf(1)
	for _, c := range []struct {
		in            []float64
		med, min, max float64
	}{
		{[]float64{3, 1, 2}, 2, 1, 3},
		{[]float64{4, 1, 2, 3}, 2.5, 1, 4},
		{[]float64{5, math.NaN(), 1}, 3, 1, 5},   // unknown runs left out
		{[]float64{1, inf, inf}, inf, 1, inf},    // unanswered counts as larger than any number
		{[]float64{1, 2, inf, inf}, inf, 1, inf}, // an even count with an infinite middle
	} {
		s := spread(c.in)
		if float64(s.Median) != c.med || float64(s.Min) != c.min || float64(s.Max) != c.max {
			t.Errorf("spread(%v) = %v/%v/%v, want %v/%v/%v", c.in, s.Median, s.Min, s.Max, c.med, c.min, c.max)
		}
	}
	b, err := json.Marshal(map[string]Num{"inf": Num(inf), "nan": Num(math.NaN()), "x": 1234.567, "y": 0.123456})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"inf":null,"nan":null,"x":1235,"y":0.12}`; got != want {
		t.Errorf("JSON %s, want %s", got, want)
	}
}

func TestLeastSquares(t *testing.T) {
	a, c, r2, ok := leastSquares([]float64{1, 10, 40}, []float64{5.25, 7.5, 15})
	if !ok || math.Abs(a-5) > 1e-9 || math.Abs(c-0.25) > 1e-9 || math.Abs(r2-1) > 1e-9 {
		t.Errorf("fit a=%v c=%v r2=%v ok=%v, want 5, 0.25, 1", a, c, r2, ok)
	}
	if _, _, _, ok := leastSquares([]float64{1, 1, 1}, []float64{5, 6, 7}); ok {
		t.Error("fitted a slope to a single batch size")
	}
}

// The capacity search's estimate: log p99 interpolated between the
// highest passing probe and the lowest failing one.
func TestBracketAndCrossing(t *testing.T) {
	pts := []point{{2000, 30, 0}, {2500, 80, 0.05}, {2200, 45, 0.005}, {2600, 40, 0.004}} // 2600 passing above a failure: noise
	lo, hi := bracket(pts, 50)
	if lo == nil || hi == nil || lo.rate != 2200 || hi.rate != 2500 {
		t.Fatalf("bracket %v %v, want 2200 and 2500", lo, hi)
	}
	x := crossing(*lo, *hi, 50)
	if x <= 2200 || x >= 2500 {
		t.Errorf("crossing %v outside the bracket", x)
	}
	// p99 unknown at the failing probe (3% missed): the miss fraction
	// crosses 1% a third of the way in log.
	if x := crossing(point{100, 20, 0.003}, point{200, math.Inf(1), 0.03}, 50); math.Abs(x-(100+100*math.Log(0.01/0.003)/math.Log(10))) > 1e-9 {
		t.Errorf("crossing by the miss fraction %v", x)
	}
	if x := crossing(point{100, 20, 0.003}, point{200, math.Inf(1), 1}, 50); math.Abs(x-math.Sqrt(2)*100) > 1e-9 {
		t.Errorf("crossing with nothing answered in time %v, want the geometric mean", x)
	}
}
