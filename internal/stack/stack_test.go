package stack

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/connectors/sim"
	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/stages/infer"
)

// A model's latency objective makes created_at + objective the effective
// deadline: a request already past it is answered EXPIRED (objective_passed)
// without a model call; a fresh one succeeds; a request for a model nobody
// serves is FAILED with UNKNOWN_MODEL.
func TestObjectiveAndUnknownModel(t *testing.T) {
	env := kafkatest.New(t, 2)
	model, err := sim.New(sim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, env, Options{Models: []infer.ModelConfig{{Name: "m", Backend: model, Objective: time.Minute}}})

	old := kafkatest.Request("old", "", "m")
	old.CreatedAtMs = time.Now().Add(-time.Hour).UnixMilli()
	fresh := kafkatest.Request("fresh", "", "m")
	fresh.CreatedAtMs = time.Now().UnixMilli()
	unknown := kafkatest.Request("unknown", "", "nobody-serves-this")
	env.Produce(t, old, fresh, unknown)

	var got map[string][]*schemas.Result
	kafkatest.Eventually(t, "three answers", func() bool {
		got = env.Results(t, env.Topics.Results)
		return len(got) == 3
	})
	check := func(id string, st schemas.Status, detail string) {
		t.Helper()
		r := got[id][0]
		if r.Status != st || (r.Reason != detail && r.ErrorCode != detail) {
			t.Errorf("%s: %s reason=%q code=%q, want %s %s", id, r.Status, r.Reason, r.ErrorCode, st, detail)
		}
	}
	check("old", schemas.StatusExpired, "objective_passed")
	check("fresh", schemas.StatusSucceeded, "")
	check("unknown", schemas.StatusFailed, infer.CodeUnknownModel)
}

// Hostile requests do not grow what the pipeline keeps: 300 invented model
// names share one label value of the outcome metric, and a 100 KB name is
// cut in the error message. Headers in the pipeline's namespace are the
// pipeline's: a client's "asyncinfer-status: SUCCEEDED" on a request that
// fails is gone, and the result carries one status header, FAILED.
func TestHostileNamesAndHeaders(t *testing.T) {
	env := kafkatest.New(t, 2)
	metrics, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, env, Options{Metrics: metrics})
	var reqs []*schemas.Request
	for i := range 300 {
		reqs = append(reqs, kafkatest.Request(fmt.Sprintf("bogus-%d", i), "", fmt.Sprintf("model-%d", i)))
	}
	reqs = append(reqs, kafkatest.Request("huge-name", "", strings.Repeat("n", 100_000)))
	env.Produce(t, reqs...)
	spoof := kafkatest.Request("spoofed", "", "nobody-serves-this")
	v, err := env.Codec.EncodeRequest(env.Topics.Requests, spoof)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Client(t).ProduceSync(kafkatest.Ctx(t), &kgo.Record{Topic: env.Topics.Requests, Key: []byte(spoof.Key()), Value: v,
		Headers: []kgo.RecordHeader{{Key: "asyncinfer-status", Value: []byte("SUCCEEDED")}, {Key: "traceparent", Value: []byte("00-x")}}}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	kafkatest.Eventually(t, "every request answered", func() bool { return len(env.Results(t, env.Topics.Results)) == len(reqs)+1 })
	if n := testutil.CollectAndCount(metrics.Infer.Outcomes); n > 5 {
		t.Errorf("%d outcome series after 301 invented model names, want the configured model's and %s only", n, infer.UnknownModelLabel)
	}
	got := env.Results(t, env.Topics.Results)
	if msg := got["huge-name"][0].ErrorMessage; len(msg) > 2048 {
		t.Errorf("error message of %d bytes for a 100 KB model name", len(msg))
	}
	for _, rec := range env.ReadCommitted(t, env.Topics.Results) {
		if string(rec.Key) != "spoofed" {
			continue
		}
		var statuses []string
		trace := false
		for _, h := range rec.Headers {
			if h.Key == "asyncinfer-status" {
				statuses = append(statuses, string(h.Value))
			}
			trace = trace || h.Key == "traceparent"
		}
		if len(statuses) != 1 || statuses[0] != "FAILED" {
			t.Errorf("status headers %v, want one, FAILED", statuses)
		}
		if !trace {
			t.Error("the client's own header (traceparent) was dropped")
		}
	}
}

// An operator's copy of a FAILED request (dlq_failed) names the request and
// points at it: request_id set, source coordinates those of the request the
// client produced (not of an intermediate record), the payload its bytes.
func TestFailedCopiesPointAtTheRequest(t *testing.T) {
	env := kafkatest.New(t, 1)
	runAll(t, env, Options{CopyFailedToDLQ: true})
	ok := kafkatest.Request("ok", "", "m")
	poison := kafkatest.Request("poison", "", "m")
	poison.Parameters = map[string]any{sim.PoisonParam: true}
	invalid := kafkatest.Request("invalid", "", "m")
	invalid.Inputs[0].Shape = []int64{5}
	env.Produce(t, ok, poison, invalid) // offsets 0, 1, 2 of the one partition
	kafkatest.Eventually(t, "two copies", func() bool { return len(env.ReadCommitted(t, env.Topics.DLQ)) == 2 })
	want := map[string]int64{"poison": 1, "invalid": 2}
	for _, rec := range env.ReadCommitted(t, env.Topics.DLQ) {
		d, err := env.Codec.DecodeDeadLetter(context.Background(), rec.Value)
		if err != nil {
			t.Fatal(err)
		}
		off, ok := want[d.RequestID]
		if !ok || !d.Answered || d.SourceTopic != env.Topics.Requests || d.SourceOffset != off {
			t.Errorf("copy %+v: want request_id poison or invalid, answered, source %s@%d", d, env.Topics.Requests, off)
		}
		if req, err := env.Codec.DecodeRequest(context.Background(), d.Payload); err != nil || req.RequestID != d.RequestID {
			t.Errorf("payload of %s is not its request: %v", d.RequestID, err)
		}
	}
}

// runAll runs every stage of env's graph with o (a simulated model "m"
// unless o names models) until the end of the test.
func runAll(t *testing.T, env *kafkatest.Env, o Options) {
	t.Helper()
	if o.Models == nil {
		model, err := sim.New(sim.Config{})
		if err != nil {
			t.Fatal(err)
		}
		o.Models = []infer.ModelConfig{{Name: "m", Backend: model}}
	}
	o.Conn = []kgo.Opt{kgo.SeedBrokers(env.Brokers...)}
	set, err := Build(o, env.Codec, env.Graph.StageNames())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- set.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}
