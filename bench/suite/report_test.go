package suite

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func fakeRun(config string, rep int, lat float64) *RunResult {
	return &RunResult{Config: config, Rep: rep, Requests: 100, Answered: 100, Complete: true,
		Statuses: map[string]int{"SUCCEEDED": 100}, Latency: summarize([]float64{lat, lat, lat * 2}),
		Throughput: 1000, Model: &ModelResult{Calls: 50, Items: 100, MeanBatch: 2, MeanCallMs: 5.5},
		Procs:   []ProcResult{{Name: "dedup-0", CPUMicrosPerReq: 10, AllocsPerRequest: 20}},
		Started: time.Now(), GenLagP99: Num(nan), GenLagMax: Num(nan)}
}

// The checks fail when the harness does: a baseline missing, a request
// unanswered, statuses that do not add up; and the report renders in
// every format whatever is missing.
func TestChecksAndReport(t *testing.T) {
	s := &suite{opt: Options{Reps: 2, Scenarios: []string{"S6"}}, p: params(true)}
	sc := &Scenario{ID: "S6", Title: titles["S6"], Figures: map[string]any{},
		required: []string{"candidate", "raw chain (3 hops)"}}
	sc.add("candidate", fakeRun("candidate", 1, 7))
	sc.add("candidate", fakeRun("candidate", 2, 8))
	sc.add("baseline", fakeRun("raw chain (3 hops)", 1, 3))
	bad := fakeRun("raw chain (3 hops)", 1, 3)
	bad.Answered, bad.Complete = 99, false
	sc.add("baseline", bad)
	rep := &Report{Scenarios: []*Scenario{sc}, Seconds: 1}
	s.analyze(rep)
	rep.Checks = checks(rep, s.opt)
	var failed []string
	for _, c := range rep.Checks {
		if !c.OK {
			failed = append(failed, c.Name)
		}
	}
	has := func(prefix string) bool {
		for _, f := range failed {
			if strings.HasPrefix(f, prefix) {
				return true
			}
		}
		return false
	}
	if !has("S6 has every configuration and baseline") {
		t.Errorf("a baseline with one repetition of two passed: %v", failed)
	}
	if !has("S6 counts consistent") {
		t.Errorf("an incomplete run passed: %v", failed)
	}
	if has("S6 ran") || len(failed) != 2 {
		t.Errorf("failed %v, want the two above", failed)
	}
	if sc.Met == nil || !*sc.Met {
		t.Errorf("S6 judged not met: p50 7.5 against 3 + 5.25 + 0.5 is")
	}

	var txt, md bytes.Buffer
	rep.WriteText(&txt)
	rep.WriteMarkdown(&md)
	if !strings.Contains(txt.String(), "FAIL") || !strings.Contains(md.String(), "| S6 ") {
		t.Errorf("text:\n%s\nmarkdown:\n%s", txt.String(), md.String())
	}
	dir := t.TempDir()
	if err := rep.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("report.json does not read back: %v", err)
	}
	if len(back.Scenarios) != 1 || math.IsNaN(float64(back.Scenarios[0].Configs[0].Summary["latency_p50_ms"].Median)) {
		t.Errorf("report.json lost the scenario: %s", b)
	}
}

// S2's ratio is to an oracle that bounds every policy: one below what a
// measured configuration reached (its hops slower than the pipeline's were)
// gives no verdict, where one above it does.
func TestS2OracleBelowMeasuredGivesNoVerdict(t *testing.T) {
	s := &suite{opt: Options{Reps: 1, Scenarios: []string{"S2"}}, p: params(true)}
	// hops of 10 ms but the slowest 1.2% (p99 of the given figure).
	judge := func(p99 float64) *Scenario {
		sc := &Scenario{ID: "S2", Title: titles["S2"], Figures: map[string]any{"capacity": map[string][]capEst{
			"candidate": {{Rate: 2100, Bound: "="}}, "fixed L/10": {{Rate: 1500, Bound: "="}},
			"fixed L/4": {{Rate: 1200, Bound: "="}}, "fixed L/2": {{Rate: 700, Bound: "="}}, "one at a time": {{Rate: 119, Bound: "="}},
		}}}
		o := Oracle{Cost: Cost{A: costA.Seconds(), C: costC.Seconds(), Bmax: maxBatch}, L: objective.Seconds()}
		for i := range 1000 {
			h := p99
			if i < 988 {
				h = 0.010
			}
			o.Hop = append(o.Hop, h)
		}
		s.judgeS2(sc, o)
		return sc
	}
	slow := judge(0.0436)
	if v := float64(slow.Figures["oracle_rps"].(map[string]Spread)["greedy"].Median); v == 0 {
		t.Fatal("the slow hops leave no oracle at all: not the case under test")
	}
	if slow.Met != nil || !strings.HasPrefix(slow.Limits, "no verdict") || !math.IsNaN(float64(slow.Figures["ratio_to_oracle"].(Num))) {
		t.Errorf("hops of 43.6 ms: met %v, limits %q, ratio %v; want no verdict", metText(slow.Met), slow.Limits, slow.Figures["ratio_to_oracle"])
	}
	if strings.Contains(slow.Measured, "× the oracle") {
		t.Errorf("hops of 43.6 ms: measured %q still gives a ratio", slow.Measured)
	}
	fast := judge(0.020)
	if fast.Met == nil || strings.HasPrefix(fast.Limits, "no verdict") {
		t.Errorf("hops of p99 20 ms: met %v, limits %q; want a verdict", metText(fast.Met), fast.Limits)
	}
	t.Logf("43.6 ms: %s | %s", slow.Measured, slow.Limits)
	t.Logf("20 ms: %s", fast.Measured)
}

// A run's misses explain its EXPIRED and REJECTED answers, or the run's
// check fails: a stage counter the harness reads wrongly (renamed, a label
// changed) would otherwise leave the misses table quietly at zero.
func TestMissesExplainTheAnswers(t *testing.T) {
	r := fakeRun("candidate", 1, 7)
	r.Statuses = map[string]int{"SUCCEEDED": 80, "EXPIRED": 15, "REJECTED": 5}
	r.Misses = &Misses{DedupExpired: 2, EarlyDrops: 10, InferExpired: 3, Rejected: 5, Late: 1}
	if err := r.check(); err != nil {
		t.Errorf("misses that explain the answers: %v", err)
	}
	if got, want := r.Misses.String(), "2 / 5 / 10 / 3 / 1"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	r.Misses = &Misses{EarlyDrops: 10, Rejected: 5}
	if err := r.check(); err == nil || !strings.Contains(err.Error(), "15 answered EXPIRED, the stages counted 10") {
		t.Errorf("EXPIRED the stages did not count: %v", err)
	}
	r.Misses = &Misses{DedupExpired: 15}
	if err := r.check(); err == nil || !strings.Contains(err.Error(), "5 answered REJECTED, dedup counted 0") {
		t.Errorf("REJECTED dedup did not count: %v", err)
	}
	if (*Misses)(nil).String() != "n/a" {
		t.Error("a raw chain's misses print other than n/a")
	}
}
