package pipeline_test

import (
	"context"
	"sync"
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
