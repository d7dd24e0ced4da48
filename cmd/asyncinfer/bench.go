package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/asyncinfer/asyncinfer/bench/suite"
)

func newBenchCmd() *cobra.Command {
	var (
		opt       suite.Options
		brokers   string
		scenarios string
		out       string
		format    string
		quiet     bool
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Run the benchmark scenarios, each beside its baselines, and report",
		Long: `bench measures the pipeline as docs/benchmarks.md describes: scenarios S1–S7
(overhead, capacity at the objective, bursts and ramp, overload, duplicates,
low load, scale-out), each beside its baselines in the same invocation —
the raw franz-go chain of three consume-produce hops, one request at a time,
fixed batching windows of L/10, L/4 and L/2, and a simulated oracle —
interleaved and repeated (3 times unless --reps), medians with min and max.

Every stage runs as its own process (asyncinfer run --stages X) from this
binary, every raw hop too, and the embedded broker (asyncinfer dev-broker)
unless --brokers names a cluster (the broker of make kafka, say; a schema
registry is then started unless --registry names one). Live progress goes
to stderr; the report to stdout (--report) and, with --out, to a directory:
report.json, report.md and SVG charts.

--quick runs every scenario small: it checks the harness (every scenario
ran with its baselines, every request answered once, counts consistent),
not performance, and is part of make test. --before runs another binary
too, in S1–S4 and S6, interleaved with the rest: a change's before
and after measured on one machine at one time. The full suite takes about
40 minutes on 2 cores. It exits non-zero when a check fails; targets not met
are reported, not failed.`,
		Example: `  asyncinfer bench --quick
  asyncinfer bench --out /tmp/bench
  asyncinfer bench --brokers $(make -s kafka) --out /tmp/bench-kafka
  asyncinfer bench --scenarios S1,S6 --reps 5 --report json
  asyncinfer bench --brokers 127.0.0.1:9092 --scenarios S1,S6 --before /tmp/asyncinfer-old`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "json" && format != "text" {
				return fmt.Errorf("--report %q: want json or text", format)
			}
			bin, err := os.Executable()
			if err != nil {
				return fmt.Errorf("finding this binary to run the stages from: %w", err)
			}
			opt.Bin = bin
			if brokers != "" {
				opt.Brokers = strings.Split(brokers, ",")
			}
			if scenarios != "" {
				opt.Scenarios = strings.Split(strings.ToUpper(scenarios), ",")
			}
			opt.Progress = cmd.ErrOrStderr()
			if quiet {
				opt.Progress = io.Discard
			}
			if opt.Commit == "" {
				opt.Commit = buildCommit()
			}
			rep, err := suite.Run(cmd.Context(), opt)
			if err != nil {
				return err
			}
			if out != "" {
				if err := rep.WriteDir(out); err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "report in %s (report.md, report.json, charts)\n", out)
			}
			if format == "json" {
				err = rep.WriteJSON(cmd.OutOrStdout())
			} else {
				rep.WriteText(cmd.OutOrStdout())
			}
			if err != nil {
				return err
			}
			if failed := rep.Failed(); len(failed) > 0 {
				var names []string
				for _, c := range failed {
					names = append(names, c.Name)
				}
				return fmt.Errorf("bench: %d check(s) failed: %s", len(failed), strings.Join(names, "; "))
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&brokers, "brokers", "", "seed brokers of a cluster to measure on (default: the embedded broker, in a process of its own)")
	fs.StringVar(&opt.Registry, "registry", "", "schema registry URL (default: the embedded one's)")
	fs.IntVar(&opt.BrokerPID, "broker-pid", 0, "the broker's process id, for its CPU (default: make kafka's, when it runs)")
	fs.StringVar(&out, "out", "", "write report.json, report.md and the SVG charts here")
	fs.StringVar(&format, "report", "text", "report on stdout: json or text")
	fs.BoolVar(&opt.Quick, "quick", false, "every scenario small: the harness's correctness, in minutes")
	fs.StringVar(&scenarios, "scenarios", "", "scenarios to run, e.g. S1,S6 (default: all)")
	fs.IntVar(&opt.Reps, "reps", 0, "repetitions of every configuration (default 3; --quick 1)")
	fs.Uint64Var(&opt.Seed, "seed", 1, "seed of the arrivals")
	fs.StringVar(&opt.Commit, "commit", "", "what is measured, for the report (default: the binary's VCS revision)")
	fs.BoolVar(&quiet, "quiet", false, "no live progress")
	fs.StringVar(&opt.Before, "before", "", "another asyncinfer binary (the one before a change): S1–S4 and S6 run it too, interleaved, as \"before\"")
	fs.StringVar(&opt.BeforeCommit, "before-commit", "", "what --before is, for the report (default: its file name)")
	fs.BoolVar(&opt.KeepTopics, "keep-topics", false, "leave each run's topics and groups on the broker (their prefixes are in the progress), to read what every request was answered and why; they are deleted by default. To decode them afterwards, give --registry one that outlives the benchmark (the embedded one stops with it)")
	cmd.AddCommand(newBenchHopCmd())
	return cmd
}

// newBenchHopCmd is one hop of the raw chain, as a process of its own:
// what bench runs three of as the baseline.
func newBenchHopCmd() *cobra.Command {
	var (
		c       suite.HopConfig
		brokers string
	)
	cmd := &cobra.Command{
		Use:    "hop",
		Short:  "One raw consume-produce hop (the benchmark's baseline), until SIGTERM",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c.Brokers = strings.Split(brokers, ",")
			return suite.RunHop(cmd.Context(), c, cmd.ErrOrStderr())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&brokers, "brokers", "", "seed brokers")
	fs.StringVar(&c.From, "from", "", "topic to read")
	fs.StringVar(&c.To, "to", "", "topic to write")
	fs.StringVar(&c.Group, "group", "", "consumer group")
	fs.StringVar(&c.InstanceID, "instance-id", "", "static member id")
	fs.StringVar(&c.AdminAddr, "admin-addr", "127.0.0.1:0", "serve /metrics and /readyz here")
	return cmd
}

// buildCommit is the VCS revision the binary was built from or, when it
// carries none (built with -buildvcs=false), the working directory's git
// HEAD, said as such.
func buildCommit() string {
	rev, dirty := "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if rev == "" {
		out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
		if err != nil {
			return "unknown"
		}
		rev = strings.TrimSpace(string(out))
		st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output()
		if err == nil && len(bytes.TrimSpace(st)) > 0 {
			rev += " with uncommitted changes"
		}
		return rev + " (git HEAD here; the binary has no VCS stamp)"
	}
	if len(rev) > 7 {
		rev = rev[:7]
	}
	if dirty {
		rev += " with uncommitted changes"
	}
	return rev
}
