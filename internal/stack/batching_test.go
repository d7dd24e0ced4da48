package stack

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/asyncinfer/asyncinfer/connectors/backend"
	"github.com/asyncinfer/asyncinfer/connectors/sim"
	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/stages/infer"
)

// A burst the model cannot serve within the objective: the adaptive
// batcher serves what can make it and answers the rest EXPIRED
// (deadline_unreachable) at once; every request gets exactly one answer.
// The model costs 100ms + 5ms an item, the objective is 1s: a batch of 64
// takes 420ms, so of 400 requests made at once, two or three batches'
// worth can be served in time.
func TestEarlyDropsAreAnswered(t *testing.T) {
	env := kafkatest.New(t, 2)
	model, err := sim.New(sim.Config{Fixed: 100 * time.Millisecond, PerItem: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, env, Options{Metrics: metrics, Models: []infer.ModelConfig{{Name: "m", Backend: model, Objective: time.Second}}})
	// One request first: the pipeline is up (the groups joined) and the
	// model was measured once.
	env.Produce(t, kafkatest.Request("warm-up", "", "m"))
	kafkatest.Eventually(t, "the first answer", func() bool { return len(env.Results(t, env.Topics.Results)) == 1 })

	const n = 400
	var reqs []*schemas.Request
	for i := range n {
		reqs = append(reqs, kafkatest.Request(fmt.Sprintf("r%d", i), "", "m"))
	}
	env.Produce(t, reqs...)
	var got map[string][]*schemas.Result
	kafkatest.Eventually(t, "every request answered", func() bool {
		got = env.Results(t, env.Topics.Results)
		return len(got) == n+1
	})
	count := map[string]int{}
	for id, rs := range got {
		if len(rs) != 1 {
			t.Errorf("%s: %d answers, want 1", id, len(rs))
		}
		r := rs[0]
		switch {
		case r.Status == schemas.StatusSucceeded:
			count["succeeded"]++
		case r.Status == schemas.StatusExpired && (r.Reason == infer.ReasonDeadlineUnreachable || r.Reason == "objective_passed"):
			count[r.Reason]++
		default:
			t.Errorf("%s: %s %s %s", id, r.Status, r.Reason, r.ErrorCode)
		}
	}
	drops := testutil.ToFloat64(metrics.Infer.EarlyDrops.WithLabelValues("m"))
	t.Logf("answers %v; early drops counted %v; model calls %d", count, drops, model.Calls())
	if count[infer.ReasonDeadlineUnreachable] == 0 || drops != float64(count[infer.ReasonDeadlineUnreachable]) {
		t.Errorf("%d answered deadline_unreachable, %v early drops counted: want some, the same number", count[infer.ReasonDeadlineUnreachable], drops)
	}
	if count["succeeded"] < 2 {
		t.Errorf("%d served: the batcher dropped what could make it", count["succeeded"])
	}
}

// sized is a model that refuses, as too large, any batch of more than max
// items, and records the size of every call.
type sized struct {
	max int

	mu    sync.Mutex
	calls []int
}

func (m *sized) Infer(ctx context.Context, batch []*schemas.Request) ([][]schemas.Tensor, error) {
	m.mu.Lock()
	m.calls = append(m.calls, len(batch))
	m.mu.Unlock()
	if len(batch) > m.max {
		return nil, backend.TooLarge(errors.New("413 request entity too large"))
	}
	select {
	case <-time.After(5 * time.Millisecond):
	case <-ctx.Done():
	}
	out := make([][]schemas.Tensor, len(batch))
	for i := range out {
		out[i] = []schemas.Tensor{{Name: "y", Datatype: "FP64", Shape: []int64{1}, FP64: []float64{1}}}
	}
	return out, nil
}

// A backend that says a batch is too large: the model's batch limit falls
// to half of it, the batch is retried in parts of the limit, and the next
// batches are formed smaller instead of being refused one after another.
func TestTooLargeLowersTheLimit(t *testing.T) {
	env := kafkatest.New(t, 1)
	model := &sized{max: 4}
	metrics, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, env, Options{Metrics: metrics, Models: []infer.ModelConfig{{Name: "m", Backend: model, MaxBatchItems: 64}}})
	const n = 300
	var reqs []*schemas.Request
	for i := range n {
		reqs = append(reqs, kafkatest.Request(fmt.Sprintf("r%d", i), "", "m"))
	}
	env.Produce(t, reqs...)
	var got map[string][]*schemas.Result
	kafkatest.Eventually(t, "every request answered", func() bool {
		got = env.Results(t, env.Topics.Results)
		return len(got) == n
	})
	for id, rs := range got {
		if len(rs) != 1 || rs[0].Status != schemas.StatusSucceeded {
			t.Errorf("%s: %d answers, first %s %s", id, len(rs), rs[0].Status, rs[0].ErrorMessage)
		}
	}
	model.mu.Lock()
	calls := append([]int(nil), model.calls...)
	model.mu.Unlock()
	refused, items := 0, 0
	for i, c := range calls {
		if c <= model.max {
			items += c
			continue
		}
		refused++
		// One worker: the next call is the first part of the refused
		// batch, at the limit (half of it).
		if i+1 >= len(calls) || calls[i+1] != c/2 {
			t.Errorf("call %d: %d items refused, then a call of %v: want the batch retried smaller, %d", i, c, calls[i+1:min(i+2, len(calls))], c/2)
		}
	}
	limit := testutil.ToFloat64(metrics.Infer.BatchLimit.WithLabelValues("m"))
	t.Logf("%d calls, %d refused as too large; limit now %v; sizes %v", len(calls), refused, limit, calls)
	if items != n {
		t.Errorf("%d items in successful calls, want %d", items, n)
	}
	// Without a learnt limit every batch of more than 4 (the first, and
	// every later one the backlog fills) would be refused, and each split in
	// halves, refusals all the way down: 15 for the first batch of 64 alone.
	// With it, the limit halves from 64 to 4 in four refusals (the rest of
	// the first batch is run in parts of the limit), grows to 5 and is
	// refused once more, and then probes 5 only once in a while (every 64
	// calls at 4).
	if limit > float64(model.max+1) {
		t.Errorf("limit %v after the refusals, want at most %d", limit, model.max+1)
	}
	if refused == 0 || refused > 5+len(calls)/32 {
		t.Errorf("%d of %d calls refused as too large", refused, len(calls))
	}
}
