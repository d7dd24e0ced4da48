package suite

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// checks are the harness's invariants over a report: every scenario asked
// for ran, with every configuration it needs and the repetitions asked
// for, and every run's counts agree with themselves. Never performance:
// the targets are where later work aims, not assertions.
func checks(rep *Report, opt Options) []Check {
	var out []Check
	add := func(name string, ok bool, detail string) {
		out = append(out, Check{Name: name, OK: ok, Detail: detail})
	}
	for _, id := range opt.Scenarios {
		i := slices.IndexFunc(rep.Scenarios, func(s *Scenario) bool { return s.ID == id })
		if i < 0 {
			add(id+" ran", false, "not in the report")
			continue
		}
		sc := rep.Scenarios[i]
		add(id+" ran", sc.Error == "", sc.Error)
		var missing []string
		for _, name := range sc.required {
			c := sc.config(name)
			reps := map[int]bool{}
			if c != nil {
				for _, r := range c.Runs {
					reps[r.Rep] = true
				}
			}
			if len(reps) < opt.Reps {
				missing = append(missing, fmt.Sprintf("%s: %d of %d repetitions", name, len(reps), opt.Reps))
			}
		}
		add(id+" has every configuration and baseline, repeated", len(missing) == 0, strings.Join(missing, "; "))
		var bad []string
		runs := 0
		for _, c := range sc.Configs {
			for _, r := range c.Runs {
				runs++
				if err := r.check(); err != nil {
					bad = append(bad, fmt.Sprintf("%s rep %d probe %d: %v", c.Name, r.Rep, r.Probe,
						strings.ReplaceAll(err.Error(), "\n", "; ")))
				}
			}
		}
		add(fmt.Sprintf("%s counts consistent (%d runs: every request answered once, statuses add up)", id, runs),
			len(bad) == 0 && runs > 0, strings.Join(bad, " | "))
		switch id {
		case "S2":
			// Computed, not good: on a loaded machine the hops alone can
			// take L, and then no policy meets it (0).
			o, _ := sc.Figures["oracle_rps"].(map[string]Spread)
			ok := len(o) == 2
			for _, s := range o {
				ok = ok && s.Median.known() && float64(s.Median) >= 0
			}
			add("S2 oracle computed", ok, "")
		case "S4":
			c := sc.config("candidate")
			ok := c != nil
			if ok {
				for _, r := range c.Runs {
					ok = ok && len(r.Bins) > 0 && len(r.Series) > 0
				}
			}
			add("S4 goodput bins and memory series present", ok, "")
		}
	}
	ok := rep.Fit.AMs.known() && rep.Fit.CMs.known() && !math.IsNaN(float64(rep.Seconds))
	add("model cost known (fitted or configured)", ok, rep.Fit.Note)
	return out
}
