package pipeline_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
	"github.com/asyncinfer/asyncinfer/pipeline"
)

// holder keeps every Work it is handed, for the test to finish in any order.
type holder struct {
	mu    sync.Mutex
	works map[int64]*pipeline.Work
}

func (h *holder) Handle(_ context.Context, w *pipeline.Work) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.works[w.Record.Offset] = w
}

func (h *holder) get(off int64) *pipeline.Work {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.works[off]
}

func (h *holder) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.works)
}

// Work finished out of order never moves the commit past an unfinished
// record: with record 0 held back, nothing is committed however many later
// records finish; once it finishes, the commit jumps past all of them.
func TestOutOfOrderCompletionCommitsLowWaterMark(t *testing.T) {
	e := kafkatest.New(t, 1)
	const n = 20
	for i := 0; i < n; i++ {
		e.ProduceRaw(t, e.Topics.Accepted, nil, []byte{byte(i)})
	}
	h := &holder{works: map[int64]*pipeline.Work{}}
	r, err := pipeline.New("test", "g", []string{e.Topics.Accepted}, h, e.Conn(), e.DLQ(),
		pipeline.CommitInterval(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	kafkatest.Eventually(t, "all records handed over", func() bool { return h.len() == n })

	// Finish 1..n-1, in reverse, each producing an output record.
	for off := int64(n - 1); off >= 1; off-- {
		h.get(off).Finish(pipeline.Output{Records: []*kgo.Record{{Topic: e.Topics.Outcomes, Value: []byte("x")}}})
	}
	kafkatest.Eventually(t, "outputs acknowledged", func() bool { return len(e.ReadAll(t, e.Topics.Outcomes)) == n-1 })
	// Give the committer many intervals to (wrongly) commit.
	for i := 0; i < 10; i++ {
		time.Sleep(20 * time.Millisecond)
		if c, ok := e.Committed(t, "g", e.Topics.Accepted)[0]; ok && c > 0 {
			t.Fatalf("committed %d while offset 0 is unfinished", c)
		}
	}
	h.get(0).Finish(pipeline.Output{})
	kafkatest.Eventually(t, "commit past everything", func() bool {
		return e.Committed(t, "g", e.Topics.Accepted)[0] == n
	})
}

// At the in-flight bound the runner stops handing out records until half of
// them finish.
func TestInflightBound(t *testing.T) {
	e := kafkatest.New(t, 1)
	const n, bound = 40, 8
	for i := 0; i < n; i++ {
		e.ProduceRaw(t, e.Topics.Accepted, nil, []byte{byte(i)})
	}
	h := &holder{works: map[int64]*pipeline.Work{}}
	r, err := pipeline.New("test", "g", []string{e.Topics.Accepted}, h, e.Conn(), e.DLQ(), pipeline.MaxInFlight(bound),
		pipeline.DrainTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	kafkatest.Eventually(t, "the first window", func() bool { return h.len() == bound })
	time.Sleep(100 * time.Millisecond)
	if got := h.len(); got != bound {
		t.Fatalf("handed out %d records with %d unfinished, bound %d", got, got, bound)
	}
	if !r.Pauses().Paused(e.Topics.Accepted, 0) {
		t.Error("partition not paused at the bound")
	}
	for off := int64(0); off < bound/2; off++ {
		h.get(off).Finish(pipeline.Output{})
	}
	kafkatest.Eventually(t, "more records after half finished", func() bool { return h.len() > bound })
	if got := h.len(); got > bound+bound/2 {
		t.Errorf("handed out %d records with the bound at %d", got, bound)
	}
}

// copies keeps every Work it is handed, by partition and offset, in the
// order handed out: a record re-delivered after a re-assignment is there
// twice.
type copies struct {
	mu    sync.Mutex
	works map[int32]map[int64][]*pipeline.Work
}

func newCopies() *copies { return &copies{works: map[int32]map[int64][]*pipeline.Work{}} }

func (c *copies) Handle(_ context.Context, w *pipeline.Work) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := w.Record.Partition
	if c.works[p] == nil {
		c.works[p] = map[int64][]*pipeline.Work{}
	}
	c.works[p][w.Record.Offset] = append(c.works[p][w.Record.Offset], w)
}

// get is the i-th copy of p@off, nil if there is none.
func (c *copies) get(p int32, off int64, i int) *pipeline.Work {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ws := c.works[p][off]; i < len(ws) {
		return ws[i]
	}
	return nil
}

// full reports whether every offset below n of p was handed out k times.
func (c *copies) full(p int32, n int64, k int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for off := int64(0); off < n; off++ {
		if len(c.works[p][off]) < k {
			return false
		}
	}
	return true
}

func (c *copies) partitions() []int32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int32
	for p := range c.works {
		out = append(out, p)
	}
	return out
}

// A Work handed out before its partition was revoked and then assigned back
// to the same member is stale: finishing it must neither mark the new copy
// of its offset finished (the commit would pass a record still in flight)
// nor apply its state.
func TestStaleWorkAfterReassignIsIgnored(t *testing.T) {
	e := kafkatest.New(t, 2)
	const n = 5
	pcl := e.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for p := int32(0); p < 2; p++ {
		for i := 0; i < n; i++ {
			if err := pcl.ProduceSync(kafkatest.Ctx(t), &kgo.Record{Topic: e.Topics.Accepted, Partition: p, Value: []byte{byte(i)}}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	start := func(h pipeline.Handler) (*pipeline.Runner, func()) {
		t.Helper()
		r, err := pipeline.New("test", "g", []string{e.Topics.Accepted}, h, e.Conn(), e.DLQ(),
			pipeline.ConnOpts(kgo.HeartbeatInterval(50*time.Millisecond)),
			pipeline.CommitInterval(10*time.Millisecond), pipeline.DrainTimeout(50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		var once sync.Once
		stop := func() {
			once.Do(func() {
				cancel()
				if err := <-done; err != nil {
					t.Error(err)
				}
			})
		}
		t.Cleanup(stop)
		return r, stop
	}

	a := newCopies()
	_, stopA := start(a)
	kafkatest.Eventually(t, "first member handed every record", func() bool { return a.full(0, n, 1) && a.full(1, n, 1) })

	// A second member takes one partition (its copies stay unfinished, so
	// the revoke gives up waiting), then leaves, and it comes back.
	b := newCopies()
	_, stopB := start(b)
	kafkatest.Eventually(t, "second member handed a partition", func() bool { return len(b.partitions()) == 1 })
	moved := b.partitions()[0]
	kept := 1 - moved
	stopB()
	kafkatest.Eventually(t, "partition handed out again", func() bool { return a.full(moved, n, 2) })

	var applied, discarded atomic.Int32
	for off := int64(0); off < n; off++ {
		a.get(moved, off, 0).Finish(pipeline.Output{
			Apply:   func() { applied.Add(1) },
			Discard: func() { discarded.Add(1) },
		})
	}
	kafkatest.Eventually(t, "stale work settled", func() bool { return applied.Load()+discarded.Load() == n })
	if got := applied.Load(); got != 0 {
		t.Errorf("applied the state of %d stale works", got)
	}

	// Once the kept partition's commit lands, a commit round ran after the
	// stale work settled: the moved partition must not be past its first
	// (unfinished) record.
	for off := int64(0); off < n; off++ {
		a.get(kept, off, 0).Finish(pipeline.Output{})
	}
	for off := int64(1); off < n; off++ {
		a.get(moved, off, 1).Finish(pipeline.Output{})
	}
	kafkatest.Eventually(t, "kept partition committed", func() bool { return e.Committed(t, "g", e.Topics.Accepted)[kept] == n })
	if c := e.Committed(t, "g", e.Topics.Accepted)[moved]; c > 0 {
		t.Fatalf("moved partition committed at %d while its record 0 is in flight", c)
	}
	a.get(moved, 0, 1).Finish(pipeline.Output{})
	kafkatest.Eventually(t, "moved partition committed", func() bool { return e.Committed(t, "g", e.Topics.Accepted)[moved] == n })
	stopA()
}
