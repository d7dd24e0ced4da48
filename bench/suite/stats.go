package suite

import (
	"math"
	"slices"
	"sort"
	"strconv"
)

// Num is a measured number. +Inf (a request never answered, a capacity
// above every rate probed) and NaN (not measured) are written to JSON as
// null: a report must say "unknown", never 0.
type Num float64

// MarshalJSON writes the number rounded to 4 significant decimals, or null.
func (n Num) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, round(f), 'f', -1, 64), nil
}

// UnmarshalJSON reads null as NaN.
func (n *Num) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*n = Num(math.NaN())
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	*n = Num(f)
	return err
}

// known says whether n is a finite number.
func (n Num) known() bool { return !math.IsInf(float64(n), 0) && !math.IsNaN(float64(n)) }

// round keeps what a report needs: 2 decimals below 100, whole numbers above.
func round(f float64) float64 {
	if math.Abs(f) >= 100 {
		return math.Round(f)
	}
	return math.Round(f*100) / 100
}

// Latency summarizes the latencies of a set of requests, in milliseconds.
// A request without an answer counts as +Inf, so a percentile that falls on
// one is unknown (null), not flattering.
type Latency struct {
	N   int `json:"n"`
	P50 Num `json:"p50_ms"`
	P95 Num `json:"p95_ms"`
	P99 Num `json:"p99_ms"`
	Max Num `json:"max_ms"`
	// InSLO is the fraction answered SUCCEEDED within the objective (when
	// the summary was given one).
	InSLO Num `json:"in_slo,omitempty"`
}

// percentile is the nearest-rank percentile of sorted values, as verify and
// bench/modes compute it.
func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// summarize sorts v in place and summarizes it.
func summarize(v []float64) Latency {
	sort.Float64s(v)
	l := Latency{N: len(v), P50: Num(percentile(v, 0.50)), P95: Num(percentile(v, 0.95)),
		P99: Num(percentile(v, 0.99)), Max: Num(math.NaN()), InSLO: Num(math.NaN())}
	if len(v) > 0 {
		l.Max = Num(v[len(v)-1])
	}
	return l
}

// Spread is one figure over the repetitions of a configuration: the median
// (the middle run; the mean of the two middle ones for an even count), the
// smallest and largest, and every run's value in run order.
type Spread struct {
	Median Num   `json:"median"`
	Min    Num   `json:"min"`
	Max    Num   `json:"max"`
	Runs   []Num `json:"runs"`
}

// spread summarizes values; unknown values (NaN) are left out of the
// median, +Inf counts as larger than any number.
func spread(v []float64) Spread {
	s := Spread{Median: Num(math.NaN()), Min: Num(math.NaN()), Max: Num(math.NaN())}
	var known []float64
	for _, x := range v {
		s.Runs = append(s.Runs, Num(x))
		if !math.IsNaN(x) {
			known = append(known, x)
		}
	}
	if len(known) == 0 {
		return s
	}
	slices.Sort(known)
	n := len(known)
	if n%2 == 1 {
		s.Median = Num(known[n/2])
	} else {
		a, b := known[n/2-1], known[n/2]
		if math.IsInf(b, 1) {
			s.Median = Num(b)
		} else {
			s.Median = Num((a + b) / 2)
		}
	}
	s.Min, s.Max = Num(known[0]), Num(known[n-1])
	return s
}

// leastSquares fits y = a + c·x and says how well (R²).
func leastSquares(x, y []float64) (a, c, r2 float64, ok bool) {
	n := float64(len(x))
	if len(x) < 2 || len(x) != len(y) {
		return 0, 0, 0, false
	}
	var sx, sy, sxx, sxy float64
	for i := range x {
		sx += x[i]
		sy += y[i]
		sxx += x[i] * x[i]
		sxy += x[i] * y[i]
	}
	d := n*sxx - sx*sx
	if d <= 1e-12*n*sxx {
		return 0, 0, 0, false // every x the same: no slope to fit
	}
	c = (n*sxy - sx*sy) / d
	a = (sy - c*sx) / n
	mean := sy / n
	var ssr, sst float64
	for i := range x {
		e := y[i] - (a + c*x[i])
		ssr += e * e
		sst += (y[i] - mean) * (y[i] - mean)
	}
	r2 = 1.0
	if sst > 0 {
		r2 = 1 - ssr/sst
	}
	return a, c, r2, true
}
