package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"testing"

	"github.com/spf13/pflag"
)

// demoRun runs the demo with the given flags, as the command would.
func demoRun(t *testing.T, args ...string) (report, error) {
	t.Helper()
	f := &demoFlags{}
	fs := pflag.NewFlagSet("demo", pflag.ContinueOnError)
	f.register(fs)
	// Tests run as fast as possible and print JSON, quietly. As fast as
	// possible is a backlog, so without the default model's latency
	// objective: on a slow machine (-race) every request would be answered
	// EXPIRED before any model call.
	args = append([]string{"--rate", "0", "--report", "json", "--log-level", "error", "--stall-timeout", "20s", "--requests", "2000",
		"--model-objective", "0"}, args...)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	cfg, err := f.config()
	if err != nil {
		t.Fatal(err)
	}
	return runDemo(context.Background(), cfg, f, io.Discard)
}

// The invariant over a mixed stream: every decodable request id gets an
// answer, no two answers for one id disagree, every malformed record has a
// dead letter, every duplicate is answered DUPLICATE and every poison item
// FAILED alone, while transient model errors are retried away and an outage
// makes requests wait (the circuit breaker pauses the input) instead of fail.
func TestDemoInvariantMixedStream(t *testing.T) {
	rep, err := demoRun(t, "--requests", "3000", "--duplicates", "0.1", "--malformed", "0.02",
		"--poison-items", "0.01", "--model-error-rate", "0.05", "--model-cost", "1ms,0.05ms",
		"--model-outage", "300ms@300ms")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", rep)
	if !rep.Settled || rep.Lost != 0 || rep.Pending != 0 || rep.Conflicting != 0 || rep.Unrequested != 0 {
		t.Errorf("settled=%v lost=%d pending=%d conflicting=%d unrequested=%d, want settled and zeros",
			rep.Settled, rep.Lost, rep.Pending, rep.Conflicting, rep.Unrequested)
	}
	if rep.Malformed == 0 || rep.MalformedWithoutDLQ != 0 || rep.DLQ < rep.Malformed {
		t.Errorf("malformed=%d without dlq=%d dlq=%d", rep.Malformed, rep.MalformedWithoutDLQ, rep.DLQ)
	}
	if rep.Duplicates == 0 || rep.Results.Duplicate != rep.Duplicates {
		t.Errorf("duplicates=%d answered DUPLICATE=%d, want equal and > 0", rep.Duplicates, rep.Results.Duplicate)
	}
	if rep.Results.Failed == 0 || rep.Results.Failed > rep.Poisoned {
		t.Errorf("failed=%d poisoned=%d: only poison items may fail, and some must", rep.Results.Failed, rep.Poisoned)
	}
	// Why: every FAILED answer is a poison input's (INFERENCE_FAILED), and
	// the reasons add up to the statuses.
	if n := rep.Why["FAILED INFERENCE_FAILED"]; n != rep.Results.Failed {
		t.Errorf("why %v: FAILED INFERENCE_FAILED %d, want every FAILED answer (%d)", rep.Why, n, rep.Results.Failed)
	}
	sum := 0
	for _, n := range rep.Why {
		sum += n
	}
	if want := rep.Results.Failed + rep.Results.Expired + rep.Results.Rejected; sum != want {
		t.Errorf("why %v adds up to %d, want failed+expired+rejected = %d", rep.Why, sum, want)
	}
	answered := rep.Results.Succeeded + rep.Results.Failed + rep.Results.Duplicate + rep.Results.Expired + rep.Results.Rejected
	if answered != rep.Unique+rep.Duplicates {
		t.Errorf("answered %d request ids, want %d", answered, rep.Unique+rep.Duplicates)
	}
	if rep.ModelCalls == 0 || rep.ModelCalls*2 > int64(rep.Unique) {
		t.Errorf("model calls %d for %d unique requests: batching is not at work", rep.ModelCalls, rep.Unique)
	}
}

// A demo's topics kept with --data-dir recount the same in another process's
// view (verify opens the broker's data and the saved registry afresh).
func TestVerifyDataDirRecountsTheSame(t *testing.T) {
	dir := t.TempDir()
	want, err := demoRun(t, "--requests", "1000", "--duplicates", "0.1", "--malformed", "0.02",
		"--model-cost", "1ms,0.05ms", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := newRoot()
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetArgs([]string{"verify", "--data-dir", dir, "--report", "json"})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("verify: %v\n%s", err, out.String())
	}
	var got report
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("verify output: %v\n%s", err, out.String())
	}
	type counts struct {
		Requests, Unique, Duplicates, Malformed, DLQ, Lost, Conflicting, Repeated int
		Results                                                                   resultCounts
	}
	c := func(r report) counts {
		return counts{r.Requests, r.Unique, r.Duplicates, r.Malformed, r.DLQ, r.Lost, r.Conflicting, r.Repeated, r.Results}
	}
	if c(got) != c(want) {
		t.Errorf("verify --data-dir counted\n %+v\nthe demo counted\n %+v", c(got), c(want))
	}
	if got.Requests != 1000 || !got.Settled {
		t.Errorf("verify saw %d requests (settled=%v), want 1000 and settled", got.Requests, got.Settled)
	}
}
