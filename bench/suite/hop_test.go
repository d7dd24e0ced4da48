package suite

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
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
	if committed != n {
		t.Errorf("committed %d records' offsets, want %d", committed, n)
	}
	if strings.Contains(log.String(), "panic") {
		t.Error(log.String())
	}
}
