package pipeline_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/topics"
)

// Every goroutine of a runner (poll loop, commits, restores, holds, produce
// callbacks) must end with Run.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testStage reads the accepted topic as raw bytes and may write them to the
// outcomes topic (edge "out"); with state, it keeps a changelog on the
// dedup-state topic (co-partitioned: every test topic has the same count).
func testStage(e *kafkatest.Env, group string, state bool) topics.Stage {
	st := topics.Stage{
		Name: "test", Group: group, Input: e.Topics.Accepted, InputKind: schemas.KindRequest,
		Outputs:     []topics.Edge{{Name: "out", Topics: []string{e.Topics.Outcomes}, Kind: schemas.KindResult}},
		DeadLetters: e.Topics.DLQ,
	}
	if state {
		st.Changelog = &topics.Changelog{Topic: e.Topics.DedupState, TTL: time.Hour, MaxKeys: 1000}
	}
	return st
}

// holder keeps every Context it is handed, by partition and offset, in the
// order handed out: a record re-delivered after a re-assignment is there
// twice.
type holder struct {
	mu   sync.Mutex
	ctxs map[int32]map[int64][]*pipeline.Context
	// then, when set, is called with each Context as it is handed out (from
	// the poll goroutine).
	then func(c *pipeline.Context, v []byte)
}

func newHolder() *holder { return &holder{ctxs: map[int32]map[int64][]*pipeline.Context{}} }

func (h *holder) Process(c *pipeline.Context, v []byte) {
	h.mu.Lock()
	p := c.Record().Partition
	if h.ctxs[p] == nil {
		h.ctxs[p] = map[int64][]*pipeline.Context{}
	}
	h.ctxs[p][c.Record().Offset] = append(h.ctxs[p][c.Record().Offset], c)
	then := h.then
	h.mu.Unlock()
	if then != nil {
		then(c, v)
	}
}

// get is the i-th copy of p@off, nil if there is none.
func (h *holder) get(p int32, off int64, i int) *pipeline.Context {
	h.mu.Lock()
	defer h.mu.Unlock()
	if cs := h.ctxs[p][off]; i < len(cs) {
		return cs[i]
	}
	return nil
}

// full reports whether every offset below n of p was handed out k times.
func (h *holder) full(p int32, n int64, k int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for off := int64(0); off < n; off++ {
		if len(h.ctxs[p][off]) < k {
			return false
		}
	}
	return true
}

// count is how many Contexts were handed out.
func (h *holder) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.ctxs {
		for _, cs := range m {
			n += len(cs)
		}
	}
	return n
}

func (h *holder) partitions() []int32 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []int32
	for p := range h.ctxs {
		out = append(out, p)
	}
	return out
}

// copyOut finishes c with its input copied to the "out" edge.
func copyOut(t testing.TB, c *pipeline.Context) {
	t.Helper()
	if err := c.Emit("out", []byte{byte(c.Record().Offset)}, c.Record().Value, nil); err != nil {
		t.Error(err)
	}
	c.Finish()
}

// run starts a runner and returns a stop that cancels it and returns Run's
// error (stopped at the end of the test too).
func run(t testing.TB, r *pipeline.Runner) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func newRunner(t testing.TB, e *kafkatest.Env, st topics.Stage, p pipeline.Processor[[]byte], opts ...pipeline.Option) *pipeline.Runner {
	t.Helper()
	r, err := pipeline.New(st, pipeline.Raw, p, e.Opts(opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
