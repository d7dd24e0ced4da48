package pipeline_test

import (
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

// gateRestore makes the broker hold every ListOffsets request for topic (the
// restore's first request) until the returned release is called.
func gateRestore(e *kafkatest.Env, topic string) (release func()) {
	gate := make(chan struct{})
	e.Cluster.ControlKey(int16(kmsg.ListOffsets), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		e.Cluster.KeepControl()
		req := kreq.(*kmsg.ListOffsetsRequest)
		for _, t := range req.Topics {
			if t.Topic == topic {
				e.Cluster.SleepControl(func() { <-gate })
			}
		}
		return nil, nil, false
	})
	var once sync.Once
	return func() { once.Do(func() { close(gate) }) }
}

// Ready follows the runner's life: not before Run, not while a partition
// restores its state, ready once every partition restored, not while
// draining, and not after Run returned.
func TestStatusReadiness(t *testing.T) {
	e := kafkatest.New(t, 2)
	e.ProduceRaw(t, e.Topics.Accepted, []byte("k"), []byte("v"))
	release := gateRestore(e, e.Topics.DedupState)
	defer release()
	h := newHolder()
	r := newRunner(t, e, testStage(e, "g", true), h)
	if st := r.Status(); st.Ready || st.Joined || st.Stage != "test" || st.Group != "g" {
		t.Fatalf("before Run: %+v, want stage test, group g, neither joined nor ready", st)
	}
	stop := run(t, r)

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

	release()
	kafkatest.Eventually(t, "ready after the restore", func() bool { return r.Status().Ready })
	kafkatest.Eventually(t, "the record handed out", func() bool { return r.Status().Inflight == 1 })
	for _, p := range r.Status().Partitions {
		if p.Restoring || len(p.PausedBy) != 0 {
			t.Fatalf("partition after the restore: %+v, want neither restoring nor paused", p)
		}
	}

	// The held record keeps the drain, and so Run, going.
	done := make(chan error, 1)
	go func() { done <- stop() }()
	kafkatest.Eventually(t, "not ready while draining", func() bool { return !r.Status().Ready })
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) with a record in flight", err)
	default:
	}
	var held *pipeline.Context
	for _, p := range h.partitions() {
		held = h.get(p, 0, 0)
	}
	held.Finish()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := r.Status(); st.Ready || !st.Joined || st.Inflight != 0 {
		t.Fatalf("after Run: %+v, want joined, not ready, nothing in flight", st)
	}
}

// A runner is never ready before its state is restored, and the restored
// state is what the changelog holds.
func TestStatusReadyAfterRestore(t *testing.T) {
	e := kafkatest.New(t, 1)
	entry := schemas.StateEntry{Key: "key", RequestID: "req", Status: schemas.StatusSucceeded, ExpiresAtMs: 1 << 62}
	v, err := e.Codec.EncodeStateEntry(e.Topics.DedupState, &entry)
	if err != nil {
		t.Fatal(err)
	}
	e.ProduceRaw(t, e.Topics.DedupState, []byte(entry.Key), v) // one partition: it lands on 0
	r := newRunner(t, e, testStage(e, "g", true), newHolder())
	stop := run(t, r)
	kafkatest.Eventually(t, "ready", func() bool { return r.Status().Ready })
	if got, ok := r.Window().Get(0, entry.Key); !ok || !reflect.DeepEqual(got, entry) {
		t.Fatalf("ready with the window holding %+v (%v), want %+v", got, ok, entry)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if r.Status().Ready {
		t.Fatal("ready after Run returned")
	}
}
