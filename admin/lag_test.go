package admin

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// produce writes n records to topic's partition p and returns the offset
// after the last.
func produce(t *testing.T, cl *kgo.Client, topic string, p int32, n int) {
	t.Helper()
	var rs []*kgo.Record
	for i := range n {
		rs = append(rs, &kgo.Record{Topic: topic, Partition: p, Value: fmt.Appendf(nil, "v%d", i)})
	}
	if err := cl.ProduceSync(kafkatest.Ctx(t), rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func commit(t *testing.T, adm *kadm.Client, group, topic string, at map[int32]int64) {
	t.Helper()
	var os kadm.Offsets
	for p, o := range at {
		os.AddOffset(topic, p, o, -1)
	}
	resp, err := adm.CommitOffsets(kafkatest.Ctx(t), group, os)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestLag(t *testing.T) {
	e := kafkatest.New(t, 2)
	ctx := kafkatest.Ctx(t)
	topic := e.Topics.Requests
	cl := e.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produce(t, cl, topic, 0, 10)
	produce(t, cl, topic, 1, 4)

	// An open transaction puts records past the last stable offset: a
	// read_committed group cannot consume them yet, so they are no lag.
	txn := e.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionalID("lag-test-txn"))
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produce(t, txn, topic, 1, 5)
	t.Cleanup(func() { _ = txn.EndTransaction(context.Background(), kgo.TryAbort) })

	// The log now starts at 2 on partition 0: a group without a commit
	// has 8 records left there, not 10.
	var del kadm.Offsets
	del.AddOffset(topic, 0, 2, -1)
	if resp, err := e.Admin.DeleteRecords(ctx, del); err != nil || resp.Error() != nil {
		t.Fatalf("delete records: %v %v", err, resp.Error())
	}

	commit(t, e.Admin, "committed", topic, map[int32]int64{0: 3, 1: 4})

	// A member that joined and has not committed yet.
	e.Client(t, kgo.ConsumerGroup("joined"), kgo.ConsumeTopics(topic), kgo.DisableAutoCommit(),
		kgo.InstanceID("joined-1"), kgo.ClientID("lag-test"))
	kafkatest.Eventually(t, "joined to be assigned both partitions", func() bool {
		d, err := e.Admin.DescribeGroups(ctx, "joined")
		return err == nil && d["joined"].State == "Stable" && len(d.AssignedPartitions()[topic]) == 2
	})

	got, err := Lag(ctx, e.Admin, "committed", "absent", "joined", "committed")
	if err != nil {
		t.Fatal(err)
	}
	want := []PartitionLag{
		{Group: "committed", Topic: topic, Partition: 0, Committed: 3, End: 10, Lag: 7},
		{Group: "committed", Topic: topic, Partition: 1, Committed: 4, End: 4, Lag: 0},
		{Group: "joined", Topic: topic, Partition: 0, Committed: -1, End: 10, Lag: 8, Member: "joined-1", ClientID: "lag-test"},
		{Group: "joined", Topic: topic, Partition: 1, Committed: -1, End: 4, Lag: 4, Member: "joined-1", ClientID: "lag-test"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Lag:\n got %+v\nwant %+v", got, want)
	}

	for _, groups := range [][]string{nil, {"absent"}, {"absent", "also-absent"}} {
		got, err := Lag(ctx, e.Admin, groups...)
		if err != nil || len(got) != 0 {
			t.Errorf("Lag(%q) = %+v, %v; want no rows, no error", groups, got, err)
		}
	}
}

func TestWatcher(t *testing.T) {
	e := kafkatest.New(t, 2)
	topic := e.Topics.Requests
	produce(t, e.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner())), topic, 0, 10)
	commit(t, e.Admin, "g", topic, map[int32]int64{0: 4, 1: 0})

	reg := prometheus.NewPedanticRegistry()
	w, err := NewWatcher(e.Admin, []string{"g", "absent"}, WithRegisterer(reg), Interval(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if s := w.Snapshot(); !s.Updated.IsZero() || s.Lag != nil || s.Err != nil {
		t.Fatalf("snapshot before the first refresh: %+v", s)
	}
	ctx, cancel := context.WithCancel(kafkatest.Ctx(t))
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	kafkatest.Eventually(t, "the first snapshot", func() bool { return !w.Snapshot().Updated.IsZero() })
	s := w.Snapshot()
	if s.Err != nil || len(s.Lag) != 2 || s.Lag[0].Lag != 6 || s.Lag[1].Lag != 0 {
		t.Fatalf("snapshot: %+v", s)
	}
	want := fmt.Sprintf(`
# HELP %[1]s Records a consumer group has yet to consume on a partition, up to its last stable offset.
# TYPE %[1]s gauge
%[1]s{group="g",partition="0",topic=%[2]q} 6
%[1]s{group="g",partition="1",topic=%[2]q} 0
`, LagMetricName, topic)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), LagMetricName); err != nil {
		t.Error(err)
	}

	// A consumer catching up shows in the next refreshes.
	commit(t, e.Admin, "g", topic, map[int32]int64{0: 9})
	kafkatest.Eventually(t, "lag 1", func() bool {
		return testutil.ToFloat64(w.gauge.WithLabelValues("g", topic, "0")) == 1
	})

	// A group that is gone leaves no stale series behind.
	if _, err := e.Admin.DeleteGroup(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	kafkatest.Eventually(t, "the series to go", func() bool {
		n, err := testutil.GatherAndCount(reg, LagMetricName)
		return err == nil && n == 0 && len(w.Snapshot().Lag) == 0
	})
}

func TestNewWatcherErrors(t *testing.T) {
	adm := kadm.NewClient(nil)
	reg := prometheus.NewRegistry()
	if _, err := NewWatcher(adm, nil, WithRegisterer(reg)); err != nil {
		t.Fatal(err)
	}
	for name, opts := range map[string][]WatcherOption{
		"zero interval":     {Interval(0)},
		"registered twice":  {WithRegisterer(reg)},
		"negative interval": {Interval(-time.Second)},
	} {
		if _, err := NewWatcher(adm, nil, opts...); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := NewWatcher(nil, nil); err == nil {
		t.Error("nil client: no error")
	}
}

// A transactional producer's commit leaves a marker after its data: a group
// that consumed everything commits one short of the LSO, and an aborted
// transaction leaves records no read_committed reader receives. Neither is
// work; real records are.
func TestDiscountMarkers(t *testing.T) {
	e := kafkatest.New(t, 3)
	topic := e.Topics.Outcomes
	ends := 0
	end := func(commit kgo.TransactionEndTry, p int32, n int) {
		t.Helper()
		// One producer a transaction: kfake answered a producer's second
		// transaction on a partition OUT_OF_ORDER_SEQUENCE_NUMBER now and
		// then, right after its first committed.
		ends++
		txn := e.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionalID(fmt.Sprintf("markers-%d", ends)))
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		produce(t, txn, topic, p, n)
		if err := txn.EndTransaction(kafkatest.Ctx(t), commit); err != nil {
			t.Fatal(err)
		}
	}
	end(kgo.TryCommit, 0, 5) // partition 0: data 0-4, marker 5, LSO 6
	end(kgo.TryCommit, 1, 5) // partition 1: data 0-4, marker 5; then 3 aborted + marker
	end(kgo.TryAbort, 1, 3)
	end(kgo.TryCommit, 2, 5) // partition 2: data 0-4 and a marker, of which the group consumed 2

	// Everything consumed: the group commits after the last data record.
	commit(t, e.Admin, "g", topic, map[int32]int64{0: 5, 1: 5, 2: 2})
	rows, err := Lag(kafkatest.Ctx(t), e.Admin, "g")
	if err != nil {
		t.Fatal(err)
	}
	raw := map[int32]int64{}
	for _, r := range rows {
		raw[r.Partition] = r.Lag
	}
	if raw[0] != 1 || raw[1] != 5 || raw[2] != 4 {
		t.Fatalf("raw lag %v, want 0:1 (marker) 1:5 (marker, 3 aborted, marker) 2:4", raw)
	}
	if err := DiscountMarkers(kafkatest.Ctx(t), []kgo.Opt{kgo.SeedBrokers(e.Brokers...)}, rows, 64); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		want := map[int32][2]int64{0: {0, 1}, 1: {0, 5}, 2: {3, 1}}[r.Partition]
		if r.Lag != want[0] || r.Markers != want[1] {
			t.Errorf("partition %d: lag %d markers %d, want %d and %d", r.Partition, r.Lag, r.Markers, want[0], want[1])
		}
	}
}
