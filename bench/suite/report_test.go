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
