package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/admin"
)

// lagTopic creates a topic of one partition for a lag test and returns its
// name, with a client and an admin client of the broker.
func lagTopic(ctx context.Context, t *testing.T, name string) (string, *kgo.Client, *kadm.Client) {
	t.Helper()
	deployments++
	topic := fmt.Sprintf("it%d-%d.%s", time.Now().Unix()%100000, deployments, name)
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.brokers...), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	return topic, cl, adm
}

// refresh measures three times, the samples a status other than OK needs,
// and returns the group's summary and its one partition's row.
func refresh(ctx context.Context, t *testing.T, w *admin.Watcher) (admin.GroupLag, admin.PartitionLag) {
	t.Helper()
	for range 3 {
		if err := w.Refresh(ctx); err != nil {
			t.Fatalf("refresh: %v", err)
		}
	}
	snap := w.Snapshot()
	if len(snap.Groups) != 1 || len(snap.Lag) != 1 {
		t.Fatalf("groups %+v, rows %+v: want one of each", snap.Groups, snap.Lag)
	}
	return snap.Groups[0], snap.Lag[0]
}

// The lag watcher on Apache Kafka: a group behind on records written ten
// seconds ago is ten seconds behind (the age of its oldest unconsumed
// record, from the record's timestamp) and its time to drain is unknown
// while it does not move; behind with nobody consuming is STOP, with a
// member that holds the partition and commits nothing STALL, and caught up
// OK.
func TestWatcherTimeLagOnKafka(t *testing.T) {
	need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topic, cl, adm := lagTopic(ctx, t, "timelag")
	written := time.Now().Add(-10 * time.Second)
	for i := range 10 {
		r := &kgo.Record{Topic: topic, Value: []byte{byte(i)}, Timestamp: written.Add(time.Duration(i) * time.Millisecond)}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	group := topic + ".group"
	commit := func(at int64) {
		t.Helper()
		offs := kadm.Offsets{}
		offs.AddOffset(topic, 0, at, -1)
		if err := adm.CommitAllOffsets(ctx, group, offs); err != nil {
			t.Fatal(err)
		}
	}
	commit(4)
	kopts := []kgo.Opt{kgo.SeedBrokers(env.brokers...)}
	w, err := admin.NewWatcher(adm, []string{group}, admin.WithMarkerCheck(kopts), admin.Interval(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}

	g, row := refresh(ctx, t, w)
	if row.Lag != 6 || row.LagSeconds < 9.9 || row.LagSeconds > 30 || row.DrainSeconds != -1 || g.Status != admin.StatusStop {
		t.Errorf("behind, nobody consuming: %+v (group %+v): want 6 records, about 10s, drain unknown, STOP", row, g)
	}

	// A member holds the partition and commits nothing: STALL.
	member, err := kgo.NewClient(kgo.SeedBrokers(env.brokers...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit())
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	for {
		fs := member.PollFetches(ctx)
		if fs.NumRecords() > 0 || ctx.Err() != nil {
			break
		}
	}
	if g, row = refresh(ctx, t, w); g.Status != admin.StatusStall || row.Member == "" {
		t.Errorf("behind, held, no progress: %+v (group %+v): want STALL with its member", row, g)
	}

	// Caught up.
	member.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{topic: {0: {Epoch: -1, Offset: 10}}}, nil)
	if g, row = refresh(ctx, t, w); row.Lag != 0 || row.LagSeconds != 0 || g.Status != admin.StatusOK {
		t.Errorf("caught up: %+v (group %+v): want no lag, OK", row, g)
	}
}

// LSO_STUCK on Apache Kafka: a transaction left open (a frozen instance's)
// holds the last stable offset; a read_committed group that consumed
// everything before it is not behind by the records, but stuck behind the
// transaction, and the watcher says so; once the transaction ends, OK.
func TestWatcherLSOStuckOnKafka(t *testing.T) {
	need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topic, cl, adm := lagTopic(ctx, t, "lsostuck")
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("before")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	txn, err := kgo.NewClient(kgo.SeedBrokers(env.brokers...), kgo.TransactionalID(topic+".txn"),
		kgo.TransactionTimeout(time.Minute), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := txn.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("open")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	group := topic + ".group"
	offs := kadm.Offsets{}
	offs.AddOffset(topic, 0, 1, -1) // everything before the transaction
	if err := adm.CommitAllOffsets(ctx, group, offs); err != nil {
		t.Fatal(err)
	}
	w, err := admin.NewWatcher(adm, []string{group}, admin.WithMarkerCheck([]kgo.Opt{kgo.SeedBrokers(env.brokers...)}),
		admin.Interval(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	g, row := refresh(ctx, t, w)
	if g.Status != admin.StatusLSOStuck || row.End != 1 || row.HighWatermark != 2 || row.Lag != 0 {
		t.Errorf("a transaction open: %+v (group %+v): want LSO_STUCK, the LSO at 1 below the high watermark 2, no lag", row, g)
	}
	if err := txn.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	// The abort's marker is past the LSO now: one offset that is not work.
	if g, row = refresh(ctx, t, w); g.Status != admin.StatusOK || row.Lag != 0 {
		t.Errorf("the transaction aborted: %+v (group %+v): want OK, no lag (the markers discounted)", row, g)
	}
}

// admissionModel is a model slow enough to overload with little traffic:
// 50ms + 5ms an item, 64 items a call (370ms), so about 170 requests a
// second; its objective of 5 seconds is far above a busy machine's hiccups
// (the test machine runs other suites at a load of 10 to 20 on 2 cores):
// only a real backlog makes a request miss it.
const admissionModel = `models:
  - name: sim
    latency_objective: 5s
    max_batch_items: 64
    sim: {fixed: 50ms, per_item: 5ms}
`

// Admission on Apache Kafka, one process per stage: twice the model's
// capacity for ten seconds (a backlog of five seconds of work builds after
// five) is answered in part REJECTED (reason overloaded, with
// retry_after_ms), the rest served; every request id is answered once, none
// lost.
func TestAdmissionOnKafka(t *testing.T) {
	need(t)
	tr := &testReport{}
	record(t, tr)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := newDeployment(t, 2, admissionModel)
	d.create(ctx, t)
	d.startAll(ctx, 0)
	// A few requests first, at an easy rate: the model is measured (its
	// capacity published) and nothing is rejected (the first few may expire
	// while the groups settle and the model warms up: waits in Kafka that
	// admission, which has nothing measured yet, does not predict).
	const warm, n = 200, 3500
	if out, errOut, err := d.cli(ctx, "load", "--requests", fmt.Sprint(warm), "--rate", "40"); err != nil {
		t.Fatalf("load: %v\n%s%s", err, out, errOut)
	}
	if c := d.settle(ctx, warm); c.Results.Rejected != 0 || c.Results.Succeeded < warm*9/10 {
		t.Fatalf("at a quarter of the capacity: %+v, want nothing rejected, nearly everything SUCCEEDED", c)
	}
	if out, errOut, err := d.cli(ctx, "load", "--requests", fmt.Sprint(n), "--rate", "350"); err != nil {
		t.Fatalf("load: %v\n%s%s", err, out, errOut)
	}
	c := d.settle(ctx, warm+n)
	tr.Requests, tr.Lost, tr.Conflicting, tr.Repeated = c.Requests, c.Lost, c.Conflicting, c.Repeated
	tr.Notes = fmt.Sprintf("succeeded %d, rejected %d, expired %d", c.Results.Succeeded, c.Results.Rejected, c.Results.Expired)
	t.Logf("%+v", c)
	if c.Lost != 0 || c.Conflicting != 0 || c.Unrequested != 0 {
		t.Errorf("lost=%d conflicting=%d unrequested=%d, want 0", c.Lost, c.Conflicting, c.Unrequested)
	}
	if c.Results.Rejected == 0 || c.Results.Succeeded <= warm*9/10 {
		t.Errorf("at twice the capacity: %d rejected, %d succeeded: want both", c.Results.Rejected, c.Results.Succeeded)
	}
	r := c.Results
	total := r.Succeeded + r.Failed + r.Expired + r.Rejected + r.Duplicate + c.Repeated
	out, errOut, err := d.cli(ctx, "results", "--from", "beginning", "--count", fmt.Sprint(total))
	if err != nil {
		t.Fatalf("results: %v\n%s", err, errOut)
	}
	rejected := 0
	for _, line := range strings.Split(out, "\n") {
		var res struct {
			Status       string `json:"status"`
			Reason       string `json:"reason"`
			RetryAfterMs int64  `json:"retry_after_ms"`
		}
		if line == "" || json.Unmarshal([]byte(line), &res) != nil || res.Status != "REJECTED" {
			continue
		}
		rejected++
		if res.Reason != "overloaded" || res.RetryAfterMs <= 0 {
			t.Fatalf("a REJECTED answer without reason overloaded and retry_after_ms: %s", line)
		}
	}
	if rejected != r.Rejected {
		t.Errorf("results printed %d REJECTED answers, verify counted %d", rejected, r.Rejected)
	}
}
