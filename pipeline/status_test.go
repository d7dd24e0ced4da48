package pipeline_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

// gatedRestore is a stage whose partitions restore until release is closed,
// and which keeps every Work for the test to finish.
type gatedRestore struct {
	holder
	release chan struct{}
}

func (g *gatedRestore) Assigned(_ context.Context, r *pipeline.Runner, topic string, p int32) {
	r.Pauses().Pause(pipeline.PauseRestore, topic, p)
	r.Go(func(ctx context.Context) {
		select {
		case <-g.release:
			r.Pauses().Resume(pipeline.PauseRestore, topic, p)
		case <-ctx.Done():
		}
	})
}

func (g *gatedRestore) Revoked(string, int32) {}

// Ready follows the runner's life: not before Run, not while a partition
// restores, ready once every partition restored, not while draining, and
// not after Run returned.
func TestStatusReadiness(t *testing.T) {
	e := kafkatest.New(t, 2)
	e.ProduceRaw(t, e.Topics.Accepted, []byte("k"), []byte("v"))
	g := &gatedRestore{holder: holder{works: map[int64]*pipeline.Work{}}, release: make(chan struct{})}
	r, err := pipeline.New("test", "g", []string{e.Topics.Accepted}, g, e.Conn(), e.DLQ())
	if err != nil {
		t.Fatal(err)
	}
	if st := r.Status(); st.Ready || st.Joined || st.Stage != "test" || st.Group != "g" {
		t.Fatalf("before Run: %+v, want stage test, group g, neither joined nor ready", st)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	kafkatest.Eventually(t, "both partitions assigned", func() bool {
		st := r.Status()
		return st.Joined && len(st.Partitions) == 2
	})
	st := r.Status()
	if st.Ready {
		t.Fatalf("ready while restoring: %+v", st)
	}
	for i, p := range st.Partitions {
		want := pipeline.PartitionStatus{Topic: e.Topics.Accepted, Partition: int32(i), Restoring: true,
			PausedBy: []string{pipeline.PauseRestore}}
		if p.Topic != want.Topic || p.Partition != want.Partition || !p.Restoring || !slices.Equal(p.PausedBy, want.PausedBy) {
			t.Fatalf("partition %d while restoring: %+v, want %+v", i, p, want)
		}
	}

	close(g.release)
	kafkatest.Eventually(t, "ready after the restore", func() bool { return r.Status().Ready })
	kafkatest.Eventually(t, "the record handed out", func() bool { return r.Status().Inflight == 1 })
	for _, p := range r.Status().Partitions {
		if p.Restoring || len(p.PausedBy) != 0 {
			t.Fatalf("partition after the restore: %+v, want neither restoring nor paused", p)
		}
	}

	// The held record keeps the drain, and so Run, going.
	cancel()
	kafkatest.Eventually(t, "not ready while draining", func() bool { return !r.Status().Ready })
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) with a record in flight", err)
	default:
	}
	g.get(0).Finish(pipeline.Output{})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := r.Status(); st.Ready || !st.Joined || st.Inflight != 0 {
		t.Fatalf("after Run: %+v, want joined, not ready, nothing in flight", st)
	}
}

// restoring is a stage that restores a Window with RestoreWindow.
type restoring struct {
	e   *kafkatest.Env
	win *pipeline.Window
}

func (s *restoring) Handle(_ context.Context, w *pipeline.Work) { w.Finish(pipeline.Output{}) }

func (s *restoring) Assigned(_ context.Context, r *pipeline.Runner, topic string, p int32) {
	pipeline.RestoreWindow(r, s.win, s.e.Codec, topic, s.e.Topics.DedupState, p, func() bool { return true })
}

func (s *restoring) Revoked(_ string, p int32) { s.win.Drop(p) }

// A runner is never ready before its window is restored.
func TestStatusReadyAfterRestoreWindow(t *testing.T) {
	e := kafkatest.New(t, 1)
	s := &restoring{e: e, win: pipeline.NewWindow(time.Hour, 100)}
	entry := s.win.Entry("key", "req", schemas.StatusSucceeded)
	v, err := e.Codec.EncodeStateEntry(e.Topics.DedupState, &entry)
	if err != nil {
		t.Fatal(err)
	}
	e.ProduceRaw(t, e.Topics.DedupState, []byte(entry.Key), v) // one partition: it lands on 0
	r, err := pipeline.New("test", "g", []string{e.Topics.Requests}, s, e.Conn(), e.DLQ())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	kafkatest.Eventually(t, "ready", func() bool { return r.Status().Ready })
	if _, ok := s.win.Get(0, entry.Key); !ok {
		t.Fatal("ready before the window was restored")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r.Status().Ready {
		t.Fatal("ready after Run returned")
	}
}
