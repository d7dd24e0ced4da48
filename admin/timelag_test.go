package admin

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
)

// The statuses over a window of samples, Burrow-like.
func TestEvaluate(t *testing.T) {
	at := func(i int) time.Time { return time.Unix(1000+int64(i)*5, 0) }
	// s builds a window from (committed, lag, lagSeconds) triples, end 100
	// and high watermark 100 unless a test changes them.
	s := func(held bool, vals ...[3]float64) []sample {
		var out []sample
		for i, v := range vals {
			out = append(out, sample{at: at(i), committed: int64(v[0]), lag: int64(v[1]), lagSeconds: v[2], end: 100, hwm: 100, held: held})
		}
		return out
	}
	tests := []struct {
		name      string
		window    []sample
		want      GroupStatus
		wantRate  float64
		wantDrain float64
	}{
		{"caught up", s(true, [3]float64{100, 0, 0}, [3]float64{100, 0, 0}, [3]float64{100, 0, 0}), StatusOK, 0, 0},
		{"behind, catching up", s(true, [3]float64{10, 90, 9}, [3]float64{40, 60, 6}, [3]float64{70, 30, 3}), StatusOK, 6, 5},
		{"falling behind", s(true, [3]float64{10, 90, 1}, [3]float64{20, 120, 2}, [3]float64{30, 150, 3}), StatusWarn, 2, 75},
		{"a member holds it, no progress", s(true, [3]float64{10, 90, 1}, [3]float64{10, 90, 6}, [3]float64{10, 90, 11}), StatusStall, 0, -1},
		{"nobody holds it, no progress", s(false, [3]float64{10, 90, 1}, [3]float64{10, 90, 6}, [3]float64{10, 90, 11}), StatusStop, 0, -1},
		{"too few samples to judge", s(false, [3]float64{10, 90, 1}, [3]float64{10, 90, 6}), StatusOK, 0, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := PartitionLag{Lag: tc.window[len(tc.window)-1].lag}
			evaluate(&r, tc.window)
			if r.Status != tc.want || r.Rate != tc.wantRate || r.DrainSeconds != tc.wantDrain {
				t.Errorf("status %s rate %v drain %v, want %s %v %v", r.Status, r.Rate, r.DrainSeconds, tc.want, tc.wantRate, tc.wantDrain)
			}
		})
	}
	// An open transaction holding the LSO at 100 while records are
	// appended past it.
	w := s(true, [3]float64{100, 0, 0}, [3]float64{100, 0, 0}, [3]float64{100, 0, 0})
	for i := range w {
		w[i].hwm = 100 + int64(10*(i+1))
	}
	r := PartitionLag{}
	evaluate(&r, w)
	if r.Status != StatusLSOStuck {
		t.Errorf("LSO held by an open transaction: %s, want %s", r.Status, StatusLSOStuck)
	}
}

// Lag as time is the age of the oldest record the group has yet to consume,
// from the record's timestamp; a group that is not behind has none.
func TestMeasureTimeLag(t *testing.T) {
	e := kafkatest.New(t, 1)
	topic := e.Topics.Requests
	cl := e.Client(t)
	now := time.Now()
	for i := range 10 {
		rec := &kgo.Record{Topic: topic, Value: []byte{byte(i)}, Timestamp: now.Add(-time.Duration(100-i) * time.Second)}
		if err := cl.ProduceSync(kafkatest.Ctx(t), rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	commit(t, e.Admin, "behind", topic, map[int32]int64{0: 4})
	commit(t, e.Admin, "caught-up", topic, map[int32]int64{0: 10})
	rows, err := Lag(kafkatest.Ctx(t), e.Admin, "behind", "caught-up")
	if err != nil {
		t.Fatal(err)
	}
	if err := MeasureTimeLag(kafkatest.Ctx(t), []kgo.Opt{kgo.SeedBrokers(e.Brokers...)}, rows, now); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		want := map[string]float64{"behind": 96, "caught-up": 0}[r.Group]
		if d := r.LagSeconds - want; d < -0.01 || d > 0.01 {
			t.Errorf("%s: %.3f s behind, want %v (the record at its commit, offset 4, is 96 s old)", r.Group, r.LagSeconds, want)
		}
	}
}

// The Watcher of a stage process measures only the partitions the process
// owns, so that a group's processes share the work.
func TestWatcherOnlyPartitions(t *testing.T) {
	e := kafkatest.New(t, 2)
	topic := e.Topics.Requests
	pcl := e.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produce(t, pcl, topic, 0, 3)
	produce(t, pcl, topic, 1, 3)
	commit(t, e.Admin, "g", topic, map[int32]int64{0: 1, 1: 1})
	w, err := NewWatcher(kadm.NewClient(e.Client(t)), []string{"g"},
		OnlyPartitions(func() map[string]map[int32]bool { return map[string]map[int32]bool{topic: {1: true}} }))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Refresh(kafkatest.Ctx(t)); err != nil {
		t.Fatal(err)
	}
	snap := w.Snapshot()
	if len(snap.Lag) != 1 || snap.Lag[0].Partition != 1 {
		t.Fatalf("rows %+v, want partition 1 only", snap.Lag)
	}
	if len(snap.Groups) != 1 || snap.Groups[0].Lag != 2 || snap.Groups[0].Status != StatusOK {
		t.Errorf("groups %+v, want g with 2 records behind, OK (one sample)", snap.Groups)
	}
}
