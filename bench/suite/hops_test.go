package suite

import (
	"fmt"
	"strings"
	"testing"
)

// S6's hop by hop: each stage's hop against its raw hop (infer less the
// wait for the model and the call), and the wait M/D/1 predicts for one
// worker at 50/s: ρ = 0.25 at t(1) = 5 ms, ρ·t(1)/(2(1 − ρ)) = 0.83 ms.
func TestHopsS6(t *testing.T) {
	conf := func(figs map[string]float64) *ConfigResult { return hopFigures("hop_mean_ms:", figs) }
	cand := conf(map[string]float64{"dedup": 1.0, "infer": 7.0, "emit": 0.9, hopModelWait: 0.8, hopModelCall: 5.1})
	raw := conf(map[string]float64{"hop1": 1.1, "hop2": 0.7, "hop3": 0.7})
	got := hopsS6(cand, raw, 5)
	for _, want := range []string{"dedup -0.10", "infer without the wait and the call +0.40", "emit +0.20",
		"busy 25% of the time: M/D/1 predicts 0.83 ms"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
	if got := hopsS6(cand, conf(nil), 5); got != "" {
		t.Errorf("without the raw chain's hops: %q, want nothing", got)
	}
}

// S1's hop by hop at 1,000/s: each hop's p99 beside its raw hop's, and
// nothing without them.
func TestHopsS1(t *testing.T) {
	conf := func(figs map[string]float64) *ConfigResult { return hopFigures("hop_p99_ms:", figs) }
	cand := conf(map[string]float64{"dedup": 9, "infer": 12, "emit": 7})
	raw := conf(map[string]float64{"hop1": 6, "hop2": 5, "hop3": 4})
	want := "dedup 9.00, infer 12.0, emit 7.00, against the raw hops' 6.00, 5.00, 4.00"
	if got := hopsS1(cand, raw); !strings.Contains(got, want) {
		t.Errorf("%q lacks %q", got, want)
	}
	if got := hopsS1(cand, conf(nil)); got != "" {
		t.Errorf("without the raw chain's hops: %q, want nothing", got)
	}
}

// The nearest-rank quantile of hop times.
func TestQuantile(t *testing.T) {
	xs := make([]float64, 0, 200)
	for i := 200; i >= 1; i-- {
		xs = append(xs, float64(i))
	}
	for _, c := range []struct{ q, want float64 }{{0.99, 198}, {0.5, 100}, {1, 200}, {0, 1}} {
		if got := quantile(xs, c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
}

// hopFigures is a configuration whose summary holds figs under prefix.
func hopFigures(prefix string, figs map[string]float64) *ConfigResult {
	c := &ConfigResult{Summary: map[string]Spread{}}
	for k, v := range figs {
		c.Summary[prefix+k] = Spread{Median: Num(v)}
	}
	return c
}

// A hop's mean and p99 count only the requests seen on both sides, each by
// its own key: 100 requests took 1..100 ms, one more left no output, and
// an output with no input is not a hop.
func TestHopStats(t *testing.T) {
	from, to := map[string]int64{"lost": 5}, map[string]int64{"stray": 9}
	for i := 1; i <= 100; i++ {
		k := fmt.Sprint("r", i)
		from[k], to[k] = int64(1000*i), int64(1000*i+i)
	}
	mean, p99, ok := hopStats(from, to)
	if !ok || mean != 50.5 || p99 != 99 {
		t.Errorf("hopStats = %v, %v, %v; want 50.5, 99, true", mean, p99, ok)
	}
	if _, _, ok := hopStats(map[string]int64{"a": 1}, map[string]int64{"b": 2}); ok {
		t.Error("no shared key: want ok false")
	}
}
