// Package suite is asyncinfer bench: the benchmark scenarios S1–S7 of
// docs/benchmarks.md, each beside its baselines (the raw franz-go chain,
// one request at a time, fixed batching windows, a simulated oracle) in
// one invocation, interleaved, repeated, and reported as JSON, Markdown
// and SVG charts.
//
// Every process it measures is the asyncinfer binary it runs from: each
// pipeline stage is `asyncinfer run --stages X` in a process of its own,
// each raw hop `asyncinfer bench hop`, the embedded broker `asyncinfer
// dev-broker`; so CPU, allocations and memory are per process, scraped
// from /proc and from each process's /metrics before and after the load.
// The load generator and the results reader live in the benchmark's own
// process. A request's latency is the moment its first result is visible
// to a read_committed consumer less its created_at (its scheduled arrival:
// a generator that falls behind shows as latency, not as a lower rate).
package suite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Options are an invocation's choices.
type Options struct {
	Bin       string   // the asyncinfer binary: stages, hops and the embedded broker run from it
	Brokers   []string // empty: the embedded broker, in a process of its own
	Registry  string   // a schema registry; empty: the embedded one's
	BrokerPID int      // the broker's process, for its CPU (0: make kafka's, if running)
	Quick     bool     // every scenario small: the harness's correctness, not performance
	Scenarios []string // empty: all
	Reps      int      // repetitions of each configuration (0: 3; quick: 1)
	Seed      uint64   // arrivals (0: 1)
	Progress  io.Writer
	Commit    string // what is measured (the report's header)
	// Before is another asyncinfer binary (the one before a change): S1–S4
	// and S6 then run it too, as configurations "before" (and, in
	// S1, "before at 1,000/s"), interleaved with the candidate and the
	// baselines, so that a before and after share one invocation and its
	// machine.
	Before       string
	BeforeCommit string // what Before is (the report's header)
	// KeepTopics leaves every run's topics and groups on the broker, to
	// read them afterwards (`asyncinfer results` with the run's prefix, or
	// any Kafka tool): what each request was answered and why, each hop's
	// record timestamps. They pile up on the broker: a broker holding a
	// few hundred more partitions stalls more often, and later runs show
	// it.
	KeepTopics bool
}

// Scenario IDs, in report order.
var scenarioIDs = []string{"S1", "S2", "S3", "S4", "S5", "S6", "S7"}

// Report is the whole invocation.
type Report struct {
	Env       EnvInfo     `json:"env"`
	Constants Constants   `json:"constants"`
	Fit       Fit         `json:"fit"`
	Hop       Latency     `json:"hop_latency"` // the raw chain's, the oracle's hops
	Scenarios []*Scenario `json:"scenarios"`
	Checks    []Check     `json:"checks"`
	Seconds   Num         `json:"seconds"`
	charts    map[string][]byte
}

// EnvInfo says where and on what the figures were taken.
type EnvInfo struct {
	Date      string `json:"date"`
	Commit    string `json:"commit"`
	Before    string `json:"before,omitempty"` // the binary run as "before" in S1–S4 and S6
	Go        string `json:"go"`
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model,omitempty"`
	MemoryGB  Num    `json:"memory_gb"`
	Kernel    string `json:"kernel,omitempty"`
	Broker    string `json:"broker"`
	Processes string `json:"processes"`
	Quick     bool   `json:"quick"`
	Reps      int    `json:"reps"`
	Seed      uint64 `json:"seed"`
	LoadAvg   [3]Num `json:"load_avg"` // at the start, the end, the highest at a run's start or end
}

// Constants are the scenarios' model and objective (reference §1).
type Constants struct {
	AMs        float64 `json:"a_ms"`
	CMs        float64 `json:"c_ms"`
	LMs        float64 `json:"objective_ms"`
	XStar      float64 `json:"x_star_rps"`
	BStar      float64 `json:"b_star"`
	MaxBatch   int     `json:"max_batch_items"`
	Partitions int     `json:"partitions"`
}

// Fit is t(b) = a + c·b fitted to infer's measured model calls: each run
// of the simulated model is a point (mean batch, mean call time).
type Fit struct {
	AMs    Num    `json:"a_ms"`
	CMs    Num    `json:"c_ms"`
	R2     Num    `json:"r2"`
	Points int    `json:"points"`
	Note   string `json:"note,omitempty"`
}

// Check is one of the harness's invariants.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Scenario is one scenario's runs and what they say.
type Scenario struct {
	ID       string          `json:"id"`
	Title    string          `json:"title"`
	Target   string          `json:"target"`
	Measured string          `json:"measured"`
	Met      *bool           `json:"met"` // null: no target, or not measurable
	Limits   string          `json:"limits,omitempty"`
	Configs  []*ConfigResult `json:"configs"`
	Figures  map[string]any  `json:"figures,omitempty"`
	Charts   []string        `json:"charts,omitempty"`
	LoadAvg  [2]Num          `json:"load_avg"` // lowest and highest at its runs' starts and ends
	Seconds  Num             `json:"seconds"`
	Error    string          `json:"error,omitempty"`
	required []string        // configurations that must have runs
}

// ConfigResult is one configuration's runs in a scenario.
type ConfigResult struct {
	Name    string            `json:"name"`
	Role    string            `json:"role"` // candidate, baseline, context
	Runs    []*RunResult      `json:"runs"`
	Summary map[string]Spread `json:"summary"`
}

func (s *Scenario) config(name string) *ConfigResult {
	for _, c := range s.Configs {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// add records a run under its configuration.
func (s *Scenario) add(role string, r *RunResult) {
	c := s.config(r.Config)
	if c == nil {
		c = &ConfigResult{Name: r.Config, Role: role, Summary: map[string]Spread{}}
		s.Configs = append(s.Configs, c)
	}
	c.Runs = append(c.Runs, r)
}

// Run runs the selected scenarios and reports. The error is for what kept
// the invocation from running at all (no broker, an interrupt); a scenario
// that failed is in the report, with the checks that failed.
func Run(ctx context.Context, opt Options) (*Report, error) {
	if opt.Progress == nil {
		opt.Progress = io.Discard
	}
	if opt.Reps <= 0 {
		opt.Reps = 3
		if opt.Quick {
			opt.Reps = 1
		}
	}
	if opt.Seed == 0 {
		opt.Seed = 1
	}
	if len(opt.Scenarios) == 0 {
		opt.Scenarios = scenarioIDs
	}
	for _, id := range opt.Scenarios {
		if !slices.Contains(scenarioIDs, id) {
			return nil, fmt.Errorf("scenario %q: want some of %s", id, strings.Join(scenarioIDs, ","))
		}
	}
	if opt.Bin == "" {
		return nil, errors.New("no asyncinfer binary to run the stages from")
	}
	if opt.Before != "" {
		if st, err := os.Stat(opt.Before); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("before: %s is not an executable file (want another asyncinfer binary)", opt.Before)
		}
	}
	began := time.Now()
	rep := &Report{Env: envInfo(opt), Constants: constants()}
	rep.Env.LoadAvg[0] = Num(loadAvg())
	e, err := startEnv(ctx, opt)
	if err != nil {
		return nil, err
	}
	defer e.close()
	rep.Env.Broker = e.brokerName
	fmt.Fprintf(opt.Progress, "bench: broker %s, registry %s, %d repetition(s)%s\n", e.brokerName, e.registry, opt.Reps,
		map[bool]string{true: ", quick", false: ""}[opt.Quick])
	s := &suite{env: e, opt: opt, p: params(opt.Quick)}
	if err := s.warmUp(ctx); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	for _, id := range scenarioIDs {
		if !slices.Contains(opt.Scenarios, id) {
			continue
		}
		sc := s.scenario(ctx, id)
		rep.Scenarios = append(rep.Scenarios, sc)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	s.analyze(rep)
	rep.Env.LoadAvg[1] = Num(loadAvg())
	high := math.Inf(-1)
	for _, sc := range rep.Scenarios {
		if sc.LoadAvg[1].known() {
			high = math.Max(high, float64(sc.LoadAvg[1]))
		}
	}
	rep.Env.LoadAvg[2] = Num(high)
	rep.Seconds = Num(time.Since(began).Seconds())
	rep.Checks = checks(rep, opt)
	return rep, nil
}

// Failed lists the checks that failed.
func (r *Report) Failed() []Check {
	var out []Check
	for _, c := range r.Checks {
		if !c.OK {
			out = append(out, c)
		}
	}
	return out
}

// suite is one invocation running.
type suite struct {
	env *env
	opt Options
	p   scale
}

// warmUp runs the pipeline and the raw chain once, unmeasured, before
// anything is: a fresh broker creates its internal topics
// (__consumer_offsets) on first use, and a JVM broker compiles its hot
// paths during its first minute; neither belongs to the first scenario's
// first run. Draining a backlog is not enough for the second: the first
// measured run at a steady rate was still the worst of its invocation
// (S2's first probe on a broker started minutes before: 2,253 EXPIRED
// where later probes at the same rate had under 340), so the pipeline
// also runs 15 s at half of X* (not in quick mode).
func (s *suite) warmUp(ctx context.Context) error {
	fmt.Fprintln(s.opt.Progress, "== warm-up (not measured)")
	n := 20_000
	if s.opt.Quick {
		n = 2_000
	}
	m := modelSpec{MaxBatch: maxBatch}
	for _, raw := range []int{0, 3} {
		if _, err := s.env.run(ctx, runSpec{label: "warm-up", config: "warm-up", raw: raw, model: m,
			partitions: partitions, preload: n}); err != nil {
			return err
		}
	}
	if s.opt.Quick {
		return nil
	}
	p := policies()[0]
	_, err := s.env.run(ctx, runSpec{label: "warm-up at 0.5 X*", config: "warm-up", model: p.model, partitions: partitions,
		objective: objective.Seconds(), sched: &Schedule{Phases: []Phase{poisson("warm-up", 0.5*xStar, 15)}, Seed: 1}})
	return err
}

// scenario runs one scenario, and times it; a failed run ends the
// scenario (recorded), not the invocation.
func (s *suite) scenario(ctx context.Context, id string) *Scenario {
	began := time.Now()
	sc := &Scenario{ID: id, Title: titles[id], Figures: map[string]any{}}
	fmt.Fprintf(s.opt.Progress, "== %s %s\n", id, sc.Title)
	var err error
	switch id {
	case "S1":
		err = s.s1(ctx, sc)
	case "S2":
		err = s.s2(ctx, sc)
	case "S3":
		err = s.s3(ctx, sc)
	case "S4":
		err = s.s4(ctx, sc)
	case "S5":
		err = s.s5(ctx, sc)
	case "S6":
		err = s.s6(ctx, sc)
	case "S7":
		err = s.s7(ctx, sc)
	}
	if err != nil {
		sc.Error = err.Error()
		fmt.Fprintf(s.opt.Progress, "%s failed: %v\n", id, err)
	}
	sc.LoadAvg = [2]Num{Num(math.Inf(1)), Num(math.Inf(-1))}
	for _, c := range sc.Configs {
		for _, r := range c.Runs {
			for _, l := range r.LoadAvg {
				sc.LoadAvg[0] = Num(math.Min(float64(sc.LoadAvg[0]), float64(l)))
				sc.LoadAvg[1] = Num(math.Max(float64(sc.LoadAvg[1]), float64(l)))
			}
		}
	}
	sc.Seconds = Num(time.Since(began).Seconds())
	return sc
}

func envInfo(opt Options) EnvInfo {
	ei := EnvInfo{Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), Commit: opt.Commit, Before: beforeName(opt), Go: runtime.Version(),
		CPUs: runtime.NumCPU(), MemoryGB: Num(nan), Quick: opt.Quick, Reps: opt.Reps, Seed: opt.Seed,
		Processes: "each stage and each raw hop in a process of its own (the asyncinfer binary); generator and reader in the benchmark's process",
		LoadAvg:   [3]Num{Num(nan), Num(nan), Num(nan)}}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				ei.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %f kB", &kb); err == nil {
			ei.MemoryGB = Num(kb / 1024 / 1024)
		}
	}
	if out, err := exec.Command("uname", "-r").Output(); err == nil {
		ei.Kernel = strings.TrimSpace(string(out))
	}
	return ei
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// beforeName is how the report names the "before" binary: its commit,
// or its file name.
func beforeName(opt Options) string {
	switch {
	case opt.Before == "":
		return ""
	case opt.BeforeCommit != "":
		return opt.BeforeCommit
	}
	return filepath.Base(opt.Before)
}
