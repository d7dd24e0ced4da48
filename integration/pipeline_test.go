package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The simulated model of the suite: cheap calls that fail transiently now and
// then (retried away), so batching, retries and the breaker are all at work.
const flakyModel = `models:
  - name: sim
    max_batch_items: 32
    sim: {fixed: 2ms, per_item: 100us, error_rate: 0.05}
`

// stages are the pipeline's stages, each run as a process of its own.
var stages = []string{"dedup", "infer", "emit"}

// create creates the deployment's topics with the binary.
func (d *deployment) create(ctx context.Context, t *testing.T) {
	t.Helper()
	if out, errOut, err := d.cli(ctx, "topics", "create"); err != nil {
		t.Fatalf("topics create: %v\n%s%s", err, out, errOut)
	}
}

// startAll starts one process per stage, with instance ids <stage>-<n>.
func (d *deployment) startAll(ctx context.Context, n int) map[string]*proc {
	d.t.Helper()
	ps := map[string]*proc{}
	for _, st := range stages {
		ps[st] = d.start(ctx, st, fmt.Sprintf("%s-%d", st, n))
	}
	return ps
}

// load produces n records at rate with the binary's load command: mixed
// traffic with 10% duplicates, 1% malformed records and 0.5% poison items.
func (d *deployment) load(ctx context.Context, t *testing.T, n, rate int) {
	t.Helper()
	out, errOut, err := d.cli(ctx, "load", "--requests", fmt.Sprint(n), "--rate", fmt.Sprint(rate),
		"--duplicates", "0.1", "--malformed", "0.01", "--poison-items", "0.005")
	if err != nil {
		t.Fatalf("load: %v\n%s%s", err, out, errOut)
	}
}

func checkCounts(t *testing.T, c counts, tr *testReport) {
	t.Helper()
	checkCountsFailing(t, c, tr, 0)
}

// checkCountsFailing is checkCounts for a test that sends, besides poison
// items, failing requests of its own: up to failing more FAILED answers.
func checkCountsFailing(t *testing.T, c counts, tr *testReport, failing int) {
	t.Helper()
	tr.Requests, tr.Lost, tr.Conflicting, tr.Repeated = c.Requests, c.Lost, c.Conflicting, c.Repeated
	t.Logf("%+v", c)
	if c.Lost != 0 || c.Conflicting != 0 || c.Unrequested != 0 || c.MalformedWithoutDLQ != 0 {
		t.Errorf("lost=%d conflicting=%d unrequested=%d malformed_without_dlq=%d, want 0",
			c.Lost, c.Conflicting, c.Unrequested, c.MalformedWithoutDLQ)
	}
	if c.Malformed == 0 || c.DLQ < c.Malformed {
		t.Errorf("malformed=%d dlq=%d: every malformed record needs its dead letter", c.Malformed, c.DLQ)
	}
	if c.Duplicates == 0 || c.Results.Duplicate != c.Duplicates {
		t.Errorf("duplicates=%d answered DUPLICATE=%d, want equal and > 0", c.Duplicates, c.Results.Duplicate)
	}
	if c.Results.Failed > c.Poisoned+failing {
		t.Errorf("failed=%d > poisoned=%d (+%d the test sends to fail): only those may fail", c.Results.Failed, c.Poisoned, failing)
	}
}

// The whole pipeline, one process per stage, on Apache Kafka, with
// duplicates, malformed records, poison items and transient model errors in
// the input: every request id answered, none two ways, counted by verify.
func TestPipelineOneProcessPerStage(t *testing.T) {
	need(t)
	tr := &testReport{}
	record(t, tr)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	d := newDeployment(t, 4, flakyModel)
	d.create(ctx, t)
	d.startAll(ctx, 0)
	const n = 3000
	d.load(ctx, t, n, 1500)
	c := d.settle(ctx, n)
	checkCounts(t, c, tr)
	if c.Repeated != 0 {
		t.Errorf("repeated=%d without any crash or rebalance", c.Repeated)
	}
}

// rebalanceRun runs two instances of every stage of d, produces n requests
// at rate with duplicates, malformed records and poison items, stops one
// instance of each stage with SIGTERM about a second in (it drains and exits
// 0) and restarts it a second later with the same instance id, and returns
// verify's counts once the pipeline settled.
func rebalanceRun(ctx context.Context, t *testing.T, d *deployment, n, rate int) counts {
	t.Helper()
	d.create(ctx, t)
	first := d.startAll(ctx, 0)
	d.startAll(ctx, 1)
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		d.load(ctx, t, n, rate)
	}()
	// Mid-stream, by condition: answers are flowing, the load is not done,
	// and every instance about to stop owns partitions (a stop before any
	// of that would be a clean restart, and the test would prove nothing).
	d.waitMidStream(ctx, t, n, first)
	for _, st := range stages {
		first[st].stop(t, time.Minute)
	}
	d.startAll(ctx, 0) // the same instance ids: they take their partitions back
	<-loadDone
	c := d.settle(ctx, n)
	if c.Lost > 0 {
		d.trace(ctx, t, 20)
	}
	return c
}

// Two instances of every stage, and a rebalance mid-stream: one instance of
// each stage is stopped with SIGTERM (it drains: finishes and commits what it
// holds, and exits 0), later restarted with the same instance id. Every
// request is still answered, none two ways.
func TestRebalanceTwoInstancesPerStage(t *testing.T) {
	need(t)
	tr := &testReport{}
	record(t, tr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := rebalanceRun(ctx, t, newDeployment(t, 4, flakyModel), 6000, 1500)
	checkCounts(t, c, tr)
	// What the README promises: a SIGTERM drains (finishes and commits what
	// the instance holds) before its partitions move, so a clean rebalance
	// repeats nothing.
	if c.Repeated != 0 {
		t.Errorf("repeated=%d after a SIGTERM rebalance, want 0", c.Repeated)
	}
	tr.Notes = "at-least-once; one instance of each stage stopped with SIGTERM mid-stream (answers flowing, load not done, the instance owning partitions), restarted with the same instance id"
}

// Exactly-once mode on Apache Kafka, the same rebalance: every request id
// gets exactly one answer (repeated = 0), read_committed; the restarted
// instance's transactional id fences what it left.
func TestExactlyOnceRebalance(t *testing.T) {
	need(t)
	tr := &testReport{}
	record(t, tr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := rebalanceRun(ctx, t, newDeployment(t, 4, "exactly_once: true\n"+flakyModel), 4000, 1000)
	checkCounts(t, c, tr)
	if c.Repeated != 0 {
		t.Errorf("repeated=%d in exactly-once mode, want 0", c.Repeated)
	}
	tr.Notes = "exactly-once; one instance of each stage stopped with SIGTERM mid-stream (answers flowing, load not done, the instance owning partitions), restarted with the same instance id"
}

// topics create, then topics check, against the real broker: the layout is
// sound; then a changelog whose cleanup policy lost compaction, and one with
// the wrong partition count, are both reported.
func TestTopicsCreateAndCheck(t *testing.T) {
	need(t)
	tr := &testReport{}
	record(t, tr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d := newDeployment(t, 3, "")
	d.create(ctx, t)
	out, errOut, err := d.cli(ctx, "topics", "check")
	if err != nil {
		t.Fatalf("topics check after create: %v\n%s%s", err, out, errOut)
	}
	// The graph's topics, and only those: requests, the three lanes
	// (requests.accepted.high, requests.accepted, requests.accepted.low),
	// outcomes, results, dedup-state, emitted-ids, dlq, pressure.
	if strings.Count(out, " ok") != 10 {
		t.Errorf("want 10 topics ok:\n%s", out)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(env.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	state, emitted := d.prefix+"dedup-state", d.prefix+"emitted-ids"
	policy := "delete"
	if _, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "cleanup.policy", Value: &policy}}, emitted); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.DeleteTopic(ctx, state); err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := adm.CreateTopic(ctx, 2, 1, map[string]*string{"cleanup.policy": ptr("compact,delete")}, state)
		if err == nil && resp.Err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("re-create %s: %v %v", state, err, resp.Err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	for { // until the broker's metadata shows the new topic
		td, err := adm.ListTopics(ctx, state)
		if err == nil && td[state].Err == nil && len(td[state].Partitions) == 2 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never showed 2 partitions", state)
		case <-time.After(100 * time.Millisecond):
		}
	}
	out, _, err = d.cli(ctx, "topics", "check")
	if err == nil {
		t.Fatalf("topics check passed a broken layout:\n%s", out)
	}
	for _, want := range []string{"2 partitions but " + d.prefix + "requests has 3", "cleanup.policy=delete, want compact,delete"} {
		if !strings.Contains(out, want) {
			t.Errorf("topics check does not say %q:\n%s", want, out)
		}
	}
	tr.Notes = "check found: wrong partition count of dedup-state, emitted-ids without compaction"
}

func ptr(s string) *string { return &s }
