package suite

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The raw hop, the baseline every overhead figure divides by, forwards
// every record as it is (key and value) to the partition of its key,
// serves /readyz and /metrics as a stage does, and commits what it
// forwarded before it stops.
func TestHopForwards(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "in", "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	seeds := c.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const n = 500
	want := map[string]string{}
	for i := range n {
		k, v := fmt.Sprintf("key-%d", i), fmt.Sprintf("value-%d", i)
		want[k] = v
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "in", Key: []byte(k), Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	hctx, stop := context.WithCancel(ctx)
	log := &syncBuf{}
	done := make(chan error, 1)
	go func() {
		done <- RunHop(hctx, HopConfig{Brokers: seeds, From: "in", To: "out", Group: "g", InstanceID: "hop1",
			AdminAddr: "127.0.0.1:0"}, log)
	}()

	rd, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics("out"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	got := map[string]string{}
	for len(got) < n && ctx.Err() == nil {
		rd.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			got[string(r.Key)] = string(r.Value)
			wantP := int32(kgo.StickyKeyPartitioner(nil).ForTopic("out").Partition(r, 4))
			if r.Partition != wantP {
				t.Errorf("%s on partition %d, murmur2 says %d", r.Key, r.Partition, wantP)
			}
		})
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s: forwarded %q, want %q", k, got[k], v)
		}
	}

	m := adminRE.FindStringSubmatch(log.String())
	if m == nil {
		t.Fatalf("no admin address printed: %q", log.String())
	}
	if !httpOK(ctx, "http://"+m[1]+"/readyz") {
		t.Error("/readyz not ready while forwarding")
	}
	page, err := scrape(ctx, m[1])
	if err != nil {
		t.Fatal(err)
	}
	if v := page.sum("go_memstats_mallocs_total"); !(v > 0) {
		t.Errorf("go_memstats_mallocs_total %v: the allocation count S1 needs is missing", v)
	}
	if v := page.sum("asyncinfer_records_consumed_total"); v != n {
		t.Errorf("asyncinfer_records_consumed_total %v, want %d: S1 divides by it", v, n)
	}

	if committed := stopAndCount(ctx, t, stop, done, cl); committed != n {
		t.Errorf("committed %d records' offsets, want %d", committed, n)
	}
	if strings.Contains(log.String(), "panic") {
		t.Error(log.String())
	}
}

// The hop counts an offset committed only once the broker accepted it: a
// commit refused (a rebalance, say) is sent again. Clearing the offsets
// before the answer lost them, and a hop stopped after its commits were
// refused left the group with nothing committed (TestHopForwards failed so
// in make test, committing 0 of 500).
func TestHopCommitsWhatTheBrokerRefused(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "in", "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var refuse atomic.Bool
	var refused atomic.Int32
	refuse.Store(true)
	c.ControlKey(int16(kmsg.OffsetCommit), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if !refuse.Load() {
			return nil, nil, false
		}
		refused.Add(1)
		req := kreq.(*kmsg.OffsetCommitRequest)
		resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetCommitResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.RebalanceInProgress.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	seeds := c.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const n = 200
	for i := range n {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "in", Key: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	hctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- RunHop(hctx, HopConfig{Brokers: seeds, From: "in", To: "out", Group: "g"}, io.Discard) }()

	// Every record forwarded, and then the periodic commits refused.
	var out int64
	for out < n && ctx.Err() == nil {
		ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, "out")
		if err != nil {
			t.Fatal(err)
		}
		out = 0
		ends.Each(func(o kadm.ListedOffset) { out += o.Offset })
		time.Sleep(20 * time.Millisecond)
	}
	// Two more refusals (the hop commits every 200 ms; one that forgot
	// what was refused has nothing left to send, so the wait is bounded).
	for at, until := refused.Load(), time.Now().Add(5*time.Second); refused.Load() < at+2 && time.Now().Before(until); {
		time.Sleep(20 * time.Millisecond)
	}
	refuse.Store(false)
	if committed := stopAndCount(ctx, t, stop, done, cl); committed != n {
		t.Errorf("committed %d records' offsets after %d refused commits, want %d", committed, refused.Load(), n)
	}
}

// stopAndCount stops a hop, waits for RunHop to return, and counts the
// offsets group "g" committed, over all partitions.
func stopAndCount(ctx context.Context, t *testing.T, stop context.CancelFunc, done <-chan error, cl *kgo.Client) int64 {
	t.Helper()
	stop()
	if err := <-done; err != nil {
		t.Fatalf("RunHop: %v", err)
	}
	offs, err := kadm.NewClient(cl).FetchOffsets(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	var committed int64
	offs.Each(func(o kadm.OffsetResponse) { committed += o.At })
	return committed
}
