package stack

import (
	"context"
	"testing"
	"time"

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
	set, err := Build(Options{Conn: []kgo.Opt{kgo.SeedBrokers(env.Brokers...)},
		Models: []infer.ModelConfig{{Name: "m", Backend: model, Objective: time.Minute}}}, env.Codec, env.Graph.StageNames())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(kafkatest.Ctx(t))
	done := make(chan error, 1)
	go func() { done <- set.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

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
