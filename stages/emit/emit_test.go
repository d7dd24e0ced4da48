package emit_test

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/stages/emit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func produceOutcome(t *testing.T, e *kafkatest.Env, r *schemas.Result) {
	t.Helper()
	v, err := e.Codec.EncodeResult(e.Topics.Outcomes, r)
	if err != nil {
		t.Fatal(err)
	}
	cl := e.Client(t)
	if err := cl.ProduceSync(kafkatest.Ctx(t), &kgo.Record{Topic: e.Topics.Outcomes, Key: []byte(r.RequestID), Value: v}).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// An outcome repeated upstream (a crash between produce and commit) is
// delivered once, also across a restart of emit (the window is restored
// from emitted-ids). A reply topic outside the allow-list falls back to the
// results topic.
func TestEmitOncePerRequestID(t *testing.T) {
	e := kafkatest.New(t, 2, "client-replies")
	run := func() (*emit.Metrics, func()) {
		m, err := emit.NewMetrics(nil)
		if err != nil {
			t.Fatal(err)
		}
		st := emit.New(emit.Config{Results: e.Topics.Results, ReplyTopics: []string{"client-replies"}}, e.Codec, m)
		r, err := pipeline.New(e.Stage(t, "emit"), emit.Decoder(e.Codec), st, e.Opts()...)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		return m, func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}
	ok := &schemas.Result{RequestID: "a", Status: schemas.StatusSucceeded, Model: "m"}
	mine := &schemas.Result{RequestID: "b", Status: schemas.StatusSucceeded, ReplyTopic: "client-replies"}
	sneaky := &schemas.Result{RequestID: "c", Status: schemas.StatusFailed, ReplyTopic: e.Topics.Requests}
	produceOutcome(t, e, ok)
	produceOutcome(t, e, ok) // repeat
	produceOutcome(t, e, sneaky)

	m, stop := run()
	kafkatest.Eventually(t, "first outcomes", func() bool {
		return testutil.ToFloat64(m.Emitted.WithLabelValues("SUCCEEDED"))+testutil.ToFloat64(m.Emitted.WithLabelValues("FAILED")) == 2
	})
	stop()
	if got := testutil.ToFloat64(m.Repeats); got != 1 {
		t.Errorf("repeats dropped %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.ReplyDenied); got != 1 {
		t.Errorf("reply topics denied %v, want 1", got)
	}

	produceOutcome(t, e, ok) // a repeat after the restart
	produceOutcome(t, e, mine)
	m, stop = run()
	kafkatest.Eventually(t, "outcome after restart", func() bool {
		return testutil.ToFloat64(m.Emitted.WithLabelValues("SUCCEEDED")) == 1 && testutil.ToFloat64(m.Repeats) == 1
	})
	stop()

	res := e.Results(t, e.Topics.Results)
	if len(res["a"]) != 1 || len(res["c"]) != 1 || len(res["b"]) != 0 {
		t.Errorf("results topic: a=%d c=%d b=%d, want 1 1 0", len(res["a"]), len(res["c"]), len(res["b"]))
	}
	if got := len(e.ReadAll(t, "client-replies")); got != 1 {
		t.Errorf("client-replies holds %d records, want 1", got)
	}
	if got := len(e.ReadAll(t, e.Topics.Requests)); got != 0 {
		t.Errorf("a result was written to the requests topic (%d records)", got)
	}
}

// An outcome with a 400 KB request id is emitted once: its emitted-ids
// entry (the id twice as key and once more) did not fit the changelog, and
// its input was dead-lettered produce_failed after the result was written
// (in exactly-once mode: the result never came). The state keeps long ids
// as their SHA-256 (pipeline.StateRef), so the entry fits and a repeat of
// the outcome is dropped.
func TestEmitLongRequestID(t *testing.T) {
	e := kafkatest.New(t, 1)
	long := &schemas.Result{RequestID: strings.Repeat("i", 400_000), Status: schemas.StatusSucceeded, Model: "m"}
	produceOutcome(t, e, long)
	produceOutcome(t, e, long) // repeat
	m, err := emit.NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := pipeline.New(e.Stage(t, "emit"), emit.Decoder(e.Codec), emit.New(emit.Config{Results: e.Topics.Results}, e.Codec, m), e.Opts()...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	kafkatest.Eventually(t, "both outcomes handled", func() bool {
		c := e.Committed(t, "asyncinfer.emit", e.Topics.Outcomes)
		return len(c) > 0 && c[0] == 2
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := len(e.Results(t, e.Topics.Results)[long.RequestID]); n != 1 {
		t.Errorf("%d results, want 1", n)
	}
	if n := len(e.ReadCommitted(t, e.Topics.DLQ)); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
	if got := testutil.ToFloat64(m.Repeats); got != 1 {
		t.Errorf("repeats dropped %v, want 1", got)
	}
}
