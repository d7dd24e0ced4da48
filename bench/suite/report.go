package suite

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// WriteDir writes the report to dir: report.json, report.md and the SVG
// charts the Markdown shows.
func (r *Report) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var j bytes.Buffer
	if err := r.WriteJSON(&j); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), j.Bytes(), 0o644); err != nil {
		return err
	}
	var md bytes.Buffer
	r.WriteMarkdown(&md)
	if err := os.WriteFile(filepath.Join(dir, "report.md"), md.Bytes(), 0o644); err != nil {
		return err
	}
	for name, svg := range r.charts {
		if err := os.WriteFile(filepath.Join(dir, name), svg, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func metText(m *bool) string {
	switch {
	case m == nil:
		return "—"
	case *m:
		return "**met**"
	}
	return "**not met**"
}

func spreadText(s Spread) string {
	if !s.Median.known() && !math.IsInf(float64(s.Median), 1) {
		return "n/a"
	}
	if len(s.Runs) <= 1 {
		return fmtNum(float64(s.Median))
	}
	return fmt.Sprintf("%s [%s–%s]", fmtNum(float64(s.Median)), fmtNum(float64(s.Min)), fmtNum(float64(s.Max)))
}

// WriteText writes the summary: a line per scenario and the checks.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "asyncinfer bench: %s, broker %s, %d repetition(s), %s, load average %s → %s (highest %s)\n",
		r.Env.Commit, r.Env.Broker, r.Env.Reps, fmtSeconds(float64(r.Seconds)), fmtNum(float64(r.Env.LoadAvg[0])),
		fmtNum(float64(r.Env.LoadAvg[1])), fmtNum(float64(r.Env.LoadAvg[2])))
	for _, sc := range r.Scenarios {
		fmt.Fprintf(w, "\n%s %s [%s]\n  target:   %s\n  measured: %s\n", sc.ID, sc.Title, strings.Trim(metText(sc.Met), "*"), sc.Target, sc.Measured)
		if sc.Limits != "" {
			fmt.Fprintf(w, "  limits:   %s\n", sc.Limits)
		}
	}
	fmt.Fprintln(w, "\nchecks (the harness's invariants):")
	for _, c := range r.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "  %s %s", mark, c.Name)
		if c.Detail != "" {
			fmt.Fprintf(w, ": %s", c.Detail)
		}
		fmt.Fprintln(w)
	}
}

// WriteMarkdown writes the report as Markdown: the set-up, the summary
// table, and each scenario's configurations with their spreads.
func (r *Report) WriteMarkdown(w io.Writer) {
	e := r.Env
	fmt.Fprintf(w, "# asyncinfer bench\n\n")
	if e.Quick {
		fmt.Fprintf(w, "**Quick run: every scenario small, to check the harness. Its figures are not measurements.**\n\n")
	}
	fmt.Fprintf(w, "| | |\n| --- | --- |\n")
	fmt.Fprintf(w, "| date | %s |\n| asyncinfer | %s |\n| machine | %d CPUs (%s), %s GB, Linux %s |\n| Go | %s |\n",
		e.Date, e.Commit, e.CPUs, e.CPUModel, fmtNum(float64(e.MemoryGB)), e.Kernel, e.Go)
	if e.Before != "" {
		fmt.Fprintf(w, "| before | %s (S1–S4 and S6: configurations \"before\", interleaved with the rest) |\n", e.Before)
	}
	fmt.Fprintf(w, "| broker | %s |\n| processes | %s |\n", e.Broker, e.Processes)
	fmt.Fprintf(w, "| repetitions | %d of every configuration, interleaved (each repetition starts with another configuration); medians with [min–max] |\n", e.Reps)
	fmt.Fprintf(w, "| load average | %s at the start, %s at the end, %s the highest at a run's start or end |\n",
		fmtNum(float64(e.LoadAvg[0])), fmtNum(float64(e.LoadAvg[1])), fmtNum(float64(e.LoadAvg[2])))
	fmt.Fprintf(w, "| duration | %s |\n", fmtSeconds(float64(r.Seconds)))
	c := r.Constants
	fmt.Fprintf(w, "| model | simulated, t(b) = %.2f ms + %.3f ms·b, max %d items a call; objective L = %.0f ms; X* = %s/s (b* = %.0f); %d partitions |\n",
		c.AMs, c.CMs, c.MaxBatch, c.LMs, fmtNum(c.XStar), c.BStar, c.Partitions)
	fmt.Fprintf(w, "| fitted cost | a = %s ms, c = %s ms (R² %s, %d runs)%s |\n", fmtNum(float64(r.Fit.AMs)),
		fmtNum3(float64(r.Fit.CMs)), fmtNum(float64(r.Fit.R2)), r.Fit.Points, noteText(r.Fit.Note))
	fmt.Fprintf(w, "| hops (raw chain at X*) | p50 %s / p99 %s / max %s ms |\n\n", fmtNum(float64(r.Hop.P50)),
		fmtNum(float64(r.Hop.P99)), fmtNum(float64(r.Hop.Max)))

	fmt.Fprintf(w, "| scenario | target | measured | met |\n| --- | --- | --- | --- |\n")
	for _, sc := range r.Scenarios {
		m := metText(sc.Met)
		if sc.Limits != "" {
			m += ": " + sc.Limits
		}
		fmt.Fprintf(w, "| %s %s | %s | %s | %s |\n", sc.ID, sc.Title, sc.Target, sc.Measured, m)
	}
	fmt.Fprintln(w)
	for _, sc := range r.Scenarios {
		r.scenarioMarkdown(w, sc)
	}
	fmt.Fprintf(w, "## Checks\n\nThe harness's invariants (not performance):\n\n")
	for _, ch := range r.Checks {
		mark := "ok"
		if !ch.OK {
			mark = "**FAILED**"
		}
		fmt.Fprintf(w, "- %s: %s%s\n", mark, ch.Name, noteText(ch.Detail))
	}
}

func noteText(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}

func fmtNum3(f float64) string {
	if math.IsNaN(f) {
		return "n/a"
	}
	return fmt.Sprintf("%.3f", f)
}

func (r *Report) scenarioMarkdown(w io.Writer, sc *Scenario) {
	fmt.Fprintf(w, "## %s %s\n\n", sc.ID, sc.Title)
	fmt.Fprintf(w, "Target: %s. **%s**. %s\n\n", sc.Target, strings.Trim(metText(sc.Met), "*"), sc.Measured)
	if sc.Limits != "" {
		fmt.Fprintf(w, "What limits it: %s.\n\n", sc.Limits)
	}
	if sc.Error != "" {
		fmt.Fprintf(w, "**The scenario did not complete:** %s\n\n", sc.Error)
	}
	fmt.Fprintf(w, "Load average during its runs: %s–%s; %s.\n\n", fmtNum(float64(sc.LoadAvg[0])), fmtNum(float64(sc.LoadAvg[1])),
		fmtSeconds(float64(sc.Seconds)))
	for _, ch := range sc.Charts {
		fmt.Fprintf(w, "![%s](%s)\n\n", ch, ch)
	}
	switch sc.ID {
	case "S2":
		r.probesTable(w, sc)
	case "S3":
		phasesTable(w, sc)
		missesTable(w, sc)
	case "S4":
		missesTable(w, sc)
	}
	// Every configuration's figures.
	fmt.Fprintf(w, "| configuration | role | runs | figure | median [min–max] | every run |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, c := range sc.Configs {
		keys := mapKeys(c.Summary)
		for i, k := range keys {
			name, role, runs := "", "", ""
			if i == 0 {
				name, role, runs = c.Name, c.Role, fmt.Sprint(len(c.Runs))
			}
			s := c.Summary[k]
			var each []string
			for _, v := range s.Runs {
				each = append(each, fmtNum(float64(v)))
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", name, role, runs, k, spreadText(s), strings.Join(each, " / "))
		}
	}
	fmt.Fprintln(w)
}

func mapKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (r *Report) probesTable(w io.Writer, sc *Scenario) {
	fmt.Fprintf(w, "Every probe (offered Poisson rate, latency after a warm-up, mean batch; misses: requests not answered SUCCEEDED within L, by where they went: ")
	fmt.Fprintf(w, "dedup's EXPIRED / admission's REJECTED / infer's early drops / infer's other EXPIRED / SUCCEEDED but late, the first four over the whole run):\n\n")
	fmt.Fprintf(w, "| configuration | rep | probe | offered/s | p50 ms | p99 ms | in SLO | misses | mean batch | complete | load avg |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, c := range sc.Configs {
		for _, run := range c.Runs {
			batch := nan
			if run.Model != nil {
				batch = float64(run.Model.MeanBatch)
			}
			fmt.Fprintf(w, "| %s | %d | %d | %s | %s | %s | %s | %s | %s | %v | %s–%s |\n", c.Name, run.Rep, run.Probe,
				fmtNum(float64(run.Offered)), fmtNum(float64(run.Latency.P50)), fmtNum(float64(run.Latency.P99)),
				fmtNum(float64(run.Latency.InSLO)), run.Misses.String(), fmtNum(batch), run.Complete,
				fmtNum(float64(run.LoadAvg[0])), fmtNum(float64(run.LoadAvg[1])))
		}
	}
	fmt.Fprintln(w)
}

// missesTable is, for each pipeline run, where its requests that were not
// answered SUCCEEDED within L went (Misses).
func missesTable(w io.Writer, sc *Scenario) {
	fmt.Fprintf(w, "Misses per run, over the whole run (warm-up and every phase): dedup's EXPIRED / admission's REJECTED / infer's early drops / infer's other EXPIRED / SUCCEEDED but late (after the warm-up):\n\n")
	fmt.Fprintf(w, "| configuration | rep | misses | requests |\n| --- | --- | --- | --- |\n")
	for _, c := range sc.Configs {
		for _, run := range c.Runs {
			if run.Misses != nil {
				fmt.Fprintf(w, "| %s | %d | %s | %s |\n", c.Name, run.Rep, run.Misses, fmtNum(float64(run.Requests)))
			}
		}
	}
	fmt.Fprintln(w)
}

func phasesTable(w io.Writer, sc *Scenario) {
	var phases []string
	for _, c := range sc.Configs {
		for _, run := range c.Runs {
			for _, p := range run.Phases {
				if !slices.Contains(phases, p.Name) {
					phases = append(phases, p.Name)
				}
			}
		}
	}
	fmt.Fprintf(w, "Per phase (medians over the repetitions): p50 / p99 ms, mean batch, fraction SUCCEEDED within L:\n\n| configuration |")
	for _, p := range phases {
		fmt.Fprintf(w, " %s |", p)
	}
	fmt.Fprintf(w, "\n| --- |%s\n", strings.Repeat(" --- |", len(phases)))
	for _, c := range sc.Configs {
		fmt.Fprintf(w, "| %s |", c.Name)
		for _, p := range phases {
			g := func(k string) string { return fmtNum(float64(c.Summary["phase "+p+": "+k].Median)) }
			fmt.Fprintf(w, " %s / %s, b %s, %s |", g("p50_ms"), g("p99_ms"), g("mean_batch"), g("in_slo"))
		}
		fmt.Fprintln(w)
	}
	if orc, ok := sc.Figures["oracle_per_phase"].(map[string]map[string]Latency); ok {
		for _, name := range mapKeys(orc) {
			fmt.Fprintf(w, "| oracle (%s, simulated) |", name)
			for _, p := range phases {
				l := orc[name][p]
				fmt.Fprintf(w, " %s / %s |", fmtNum(float64(l.P50)), fmtNum(float64(l.P99)))
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintln(w)
}
