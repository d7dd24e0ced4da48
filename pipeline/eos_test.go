package pipeline_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
	"github.com/asyncinfer/asyncinfer/pipeline"
)

// copier copies each input to the outcomes topic, keyed by the input's
// offset, and counts the state it applies and discards per offset. Inputs
// for which hold returns true are finished only when release is closed.
type copier struct {
	topic   string
	hold    func(off int64) bool
	release chan struct{}

	mu      sync.Mutex
	applied map[int64]int
	discard map[int64]int
}

func newCopier(topic string, hold func(int64) bool) *copier {
	return &copier{topic: topic, hold: hold, release: make(chan struct{}), applied: map[int64]int{}, discard: map[int64]int{}}
}

func (c *copier) Handle(_ context.Context, w *pipeline.Work) {
	off := w.Record.Offset
	out := pipeline.Output{
		Records: []*kgo.Record{{Topic: c.topic, Key: []byte{byte(off)}, Value: w.Record.Value}},
		Apply:   func() { c.mu.Lock(); c.applied[off]++; c.mu.Unlock() },
		Discard: func() { c.mu.Lock(); c.discard[off]++; c.mu.Unlock() },
	}
	if c.hold != nil && c.hold(off) {
		go func() { <-c.release; w.Finish(out) }()
		return
	}
	w.Finish(out)
}

func (c *copier) counts(off int64) (applied, discarded int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.applied[off], c.discard[off]
}

func runEOS(t *testing.T, e *kafkatest.Env, h pipeline.Handler, instance string, timeout time.Duration) (*pipeline.Runner, func() error) {
	t.Helper()
	r, err := pipeline.New("test", "eos", []string{e.Topics.Accepted}, h, e.Conn(), e.DLQ(),
		pipeline.InstanceID(instance), pipeline.ExactlyOnce(timeout), pipeline.SessionTimeout(6*time.Second),
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return r, stop
}

// byOffset counts the records of the copy per input offset.
func byOffset(rs []*kgo.Record) map[int64]int {
	out := map[int64]int{}
	for _, r := range rs {
		out[int64(r.Key[0])]++
	}
	return out
}

// A unit that does not finish within the transaction timeout is aborted:
// the outputs its finished records produced are invisible to read_committed
// readers, their state is discarded, and the records are consumed again and
// committed once. read_uncommitted shows the aborted copies were written.
func TestEOSAbortLeavesNoTrace(t *testing.T) {
	e := kafkatest.New(t, 1)
	const n = 10
	for i := range n {
		e.ProduceRaw(t, e.Topics.Accepted, nil, []byte{byte(i)})
	}
	var first sync.Once
	held := false
	c := newCopier(e.Topics.Outcomes, func(off int64) bool {
		// Hold offset 7 the first time only: its unit times out.
		hold := false
		if off == 7 {
			first.Do(func() { hold, held = true, true })
		}
		return hold
	})
	r, stop := runEOS(t, e, c, "a", 500*time.Millisecond)
	kafkatest.Eventually(t, "an abort", func() bool { return testutil.ToFloat64(r.Metrics().Aborts.WithLabelValues("test")) >= 1 })
	kafkatest.Eventually(t, "every input committed once", func() bool { return len(e.ReadCommitted(t, e.Topics.Outcomes)) == n })
	close(c.release) // the held work of the aborted unit finishes late: stale
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if !held {
		t.Fatal("offset 7 was never held")
	}
	for off, k := range byOffset(e.ReadCommitted(t, e.Topics.Outcomes)) {
		if k != 1 {
			t.Errorf("offset %d copied %d times in committed output, want 1", off, k)
		}
	}
	if got := len(e.ReadAll(t, e.Topics.Outcomes)); got <= n {
		t.Errorf("read_uncommitted holds %d records: the aborted unit's copies should be there, hidden from read_committed", got)
	}
	for off := range int64(n) {
		applied, discarded := c.counts(off)
		if applied != 1 {
			t.Errorf("offset %d: state applied %d times, want 1", off, applied)
		}
		if off != 7 && discarded != 1 {
			t.Errorf("offset %d: state discarded %d times, want 1 (the aborted unit)", off, discarded)
		}
	}
}

// A zombie is fenced: while instance "x" holds a unit open (some outputs
// produced, others not), a new process with the same instance id takes over.
// It fences the old producer (its open transaction is aborted) and commits
// every input once; the old one, released, cannot commit and stops with the
// fencing error.
func TestEOSZombieIsFenced(t *testing.T) {
	e := kafkatest.New(t, 1)
	const n = 10
	for i := range n {
		e.ProduceRaw(t, e.Topics.Accepted, nil, []byte{byte(i)})
	}
	old := newCopier(e.Topics.Outcomes, func(off int64) bool { return off >= 5 })
	_, stopOld := runEOS(t, e, old, "x", time.Minute)
	kafkatest.Eventually(t, "the old instance wrote its first outputs", func() bool {
		return len(e.ReadAll(t, e.Topics.Outcomes)) >= 5
	})
	if got := len(e.ReadCommitted(t, e.Topics.Outcomes)); got != 0 {
		t.Fatalf("%d outputs committed while the unit is open", got)
	}

	fresh := newCopier(e.Topics.Outcomes, nil)
	_, stopNew := runEOS(t, e, fresh, "x", time.Minute)
	kafkatest.Eventually(t, "the new instance committed every input", func() bool {
		return len(e.ReadCommitted(t, e.Topics.Outcomes)) >= n
	})
	close(old.release) // the zombie wakes up and tries to finish its unit
	errOld := stopOld()
	if errOld == nil || !strings.Contains(strings.ToLower(errOld.Error()), "fenced") {
		t.Errorf("the zombie's run ended with %v, want a fencing error", errOld)
	}
	if err := stopNew(); err != nil {
		t.Fatal(err)
	}
	for off, k := range byOffset(e.ReadCommitted(t, e.Topics.Outcomes)) {
		if k != 1 {
			t.Errorf("offset %d copied %d times in committed output, want 1", off, k)
		}
	}
	if got := len(e.ReadCommitted(t, e.Topics.Outcomes)); got != n {
		t.Errorf("%d committed outputs, want %d", got, n)
	}
	for off := range int64(n) {
		if applied, _ := old.counts(off); applied != 0 {
			t.Errorf("offset %d: the zombie applied state", off)
		}
	}
}
