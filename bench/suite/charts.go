package suite

import (
	"math"
	"sort"
	"strconv"
)

// buildCharts draws the report's charts from its runs and the oracle.
func (s *suite) buildCharts(rep *Report, o Oracle) map[string][]byte {
	out := map[string][]byte{}
	L := ms(objective)
	for _, sc := range rep.Scenarios {
		switch sc.ID {
		case "S2":
			c := chart{title: "S2: p99 against the offered Poisson rate", xlabel: "offered requests/s",
				ylabel: "p99 latency, ms (log)", logY: true, hlines: []hline{{L, "objective L"}}}
			for _, cfg := range sc.Configs {
				if cfg.Name == "raw chain at X*" {
					continue
				}
				var pts [][2]float64
				for _, r := range cfg.Runs {
					pts = append(pts, [2]float64{float64(r.Offered), float64(r.Latency.P99)})
				}
				sort.Slice(pts, func(i, j int) bool { return pts[i][0] < pts[j][0] })
				c.series = append(c.series, series{name: cfg.Name, pts: pts, marks: true, noLine: true})
			}
			dur := s.p.warmup + s.p.probe
			seed := s.seed("S2", 1)
			for _, pol := range []struct {
				name string
				p    simPolicy
			}{{"oracle, greedy", simPolicy{kind: simGreedy}}, {"oracle, early drop", simPolicy{kind: simEarlyDrop}}} {
				var pts [][2]float64
				for f := 0.05; f <= 1.3; f += 0.05 {
					rate := f * xStar
					pts = append(pts, [2]float64{rate, o.p99(poissonTimes(rate, dur, seed), pol.p) * 1000})
				}
				c.series = append(c.series, series{name: pol.name, pts: pts, dashed: true})
			}
			c.yMax = 10000
			out["s2-p99-vs-rate.svg"] = c.svg()
		case "S3":
			batch := chart{title: "S3: mean batch size per second (first repetition)", xlabel: "seconds from the start",
				ylabel: "items per model call"}
			p99 := chart{title: "S3: p99 of the requests created in each second (first repetition)",
				xlabel: "seconds from the start", ylabel: "p99 latency, ms (log)", logY: true, hlines: []hline{{L, "objective L"}},
				yMax: 1000}
			for _, cfg := range sc.Configs {
				if len(cfg.Runs) == 0 {
					continue
				}
				r := cfg.Runs[0]
				var bp, pp [][2]float64
				for _, sec := range r.Series {
					bp = append(bp, [2]float64{sec.T, float64(sec.Batch)})
					pp = append(pp, [2]float64{sec.T - 0.5, float64(sec.P99)})
				}
				batch.series = append(batch.series, series{name: cfg.Name, pts: bp})
				p99.series = append(p99.series, series{name: cfg.Name, pts: pp})
			}
			out["s3-batch.svg"] = batch.svg()
			out["s3-p99.svg"] = p99.svg()
		case "S4":
			c := chart{title: "S4: goodput (SUCCEEDED within L) per 100 ms, 2× X* then 0.5× X*",
				xlabel: "seconds from the start", ylabel: "results/s within L", hlines: []hline{{xStar, "X*"}}}
			cfg := sc.config("candidate")
			if cfg == nil || len(cfg.Runs) == 0 {
				continue
			}
			for _, r := range cfg.Runs {
				var pts [][2]float64
				for _, b := range r.Bins {
					pts = append(pts, [2]float64{b.T, float64(b.Goodput)})
				}
				c.series = append(c.series, series{name: "candidate, rep " + itoa(r.Rep), pts: pts})
			}
			r0 := cfg.Runs[0]
			arr := times(r0.arrivals)
			for _, pol := range []struct {
				name string
				p    simPolicy
			}{{"oracle, early drop", simPolicy{kind: simEarlyDrop}}, {"oracle, greedy FIFO", simPolicy{kind: simGreedy}}} {
				lat := o.latencies(arr, pol.p)
				nb := len(r0.Bins)
				good := make([]float64, nb)
				for i, l := range lat {
					b := int((arr[i] + l) * 10)
					if l <= o.L && b >= 0 && b < nb {
						good[b] += 10
					}
				}
				var pts [][2]float64
				for b := range nb {
					pts = append(pts, [2]float64{float64(b) / 10, good[b]})
				}
				c.series = append(c.series, series{name: pol.name, pts: pts, dashed: true})
			}
			c.yMax = math.Max(2.5*xStar, 0)
			out["s4-goodput.svg"] = c.svg()
		}
	}
	return out
}

func itoa(i int) string {
	return strconv.Itoa(i)
}
