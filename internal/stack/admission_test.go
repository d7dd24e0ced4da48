package stack

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/asyncinfer/asyncinfer/connectors/sim"
	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/pressure"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/stages/dedup"
	"github.com/asyncinfer/asyncinfer/stages/infer"
)

// slowModel costs 20ms + 2ms an item, 32 items a call at most: 84ms a full
// batch, about 380 requests a second.
func slowModel(t *testing.T, objective time.Duration) []infer.ModelConfig {
	t.Helper()
	model, err := sim.New(sim.Config{Fixed: 20 * time.Millisecond, PerItem: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return []infer.ModelConfig{{Name: "m", Backend: model, MaxBatchItems: 32, Objective: objective}}
}

// warmUp sends a few requests and waits for their answers and for dedup's
// verdict on the normal lane to rest on a measured model.
func warmUp(t *testing.T, env *kafkatest.Env, m *Metrics) {
	t.Helper()
	var reqs []*schemas.Request
	for i := range 5 {
		reqs = append(reqs, kafkatest.Request(fmt.Sprintf("warm-%d", i), "", "m"))
	}
	env.Produce(t, reqs...)
	kafkatest.Eventually(t, "the warm-up answered and measured", func() bool {
		return len(env.Results(t, env.Topics.Results)) == 5 &&
			testutil.ToFloat64(m.Dedup.AdmissionStatus.WithLabelValues("m", "normal", pressure.StatusUnknown)) == 0 &&
			testutil.ToFloat64(m.Dedup.AdmissionStatus.WithLabelValues("m", "normal", pressure.StatusOK)) == 1
	})
}

// answered waits until every request id has an answer, and checks that it
// has one, once.
func answered(t *testing.T, env *kafkatest.Env, n int) map[string]*schemas.Result {
	t.Helper()
	var got map[string][]*schemas.Result
	kafkatest.Eventually(t, "every request answered", func() bool {
		got = env.Results(t, env.Topics.Results)
		return len(got) >= n
	})
	out := map[string]*schemas.Result{}
	for id, rs := range got {
		if len(rs) != 1 {
			t.Errorf("%s answered %d times", id, len(rs))
		}
		out[id] = rs[0]
	}
	if len(out) != n {
		t.Errorf("%d request ids answered, want %d", len(out), n)
	}
	return out
}

// A burst of about three times what the model serves within its objective
// (about 380 requests in a second), a twentieth of it high priority (50:
// about 130ms of the model's time; the objective leaves room for a slow
// dedup, under the race detector): the high lane is served first and all
// of it SUCCEEDS within the objective, the low lane is shed (REJECTED,
// reason overloaded, with retry_after_ms), and every request is answered
// once. The warm-up measured calls of a few items only: admission must not
// take the fit's line to promise calls of 32 cheaply (a CI run under load
// admitted 873 of the 950 low requests and 571 expired; under CPU hogs here,
// admission did the same on a warm-up fit that priced 32 items near 4).
func TestOverloadShedsTheLowLaneFirst(t *testing.T) {
	const objective = time.Second
	env := kafkatest.New(t, 2)
	m, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, env, Options{Metrics: m, Models: slowModel(t, objective),
		Admission: []dedup.ModelAdmission{{Name: "m", Mode: dedup.AdmissionReject, Objective: objective,
			Downstream: infer.DefaultDownstreamLatency}},
		WaitFractions: map[string]float64{"low": 0.8}})
	warmUp(t, env, m)

	const n = 1000
	var reqs []*schemas.Request
	priority := map[string]int32{}
	for i := range n {
		r := kafkatest.Request(fmt.Sprintf("r%d", i), "", "m")
		if r.Priority = -1; i%20 == 0 {
			r.Priority = 1
		}
		priority[r.RequestID] = r.Priority
		reqs = append(reqs, r)
	}
	env.Produce(t, reqs...)
	got := answered(t, env, n+5)
	count := map[int32]map[schemas.Status]int{1: {}, -1: {}}
	reasons := map[string]int{}
	for id, r := range got {
		p, ok := priority[id]
		if !ok {
			continue // the warm-up
		}
		count[p][r.Status]++
		reasons[fmt.Sprintf("%d %s %s", p, r.Status, r.Reason)]++
		switch {
		case p == 1 && (r.Status != schemas.StatusSucceeded || r.Timings.EndToEndMs > float64(objective/time.Millisecond)):
			t.Errorf("high %s: %s %s after %.0fms, want SUCCEEDED within %v", id, r.Status, r.Reason, r.Timings.EndToEndMs, objective)
		case r.Status == schemas.StatusRejected && (r.Reason != dedup.ReasonOverloaded || r.RetryAfterMs <= 0):
			t.Errorf("%s rejected without reason overloaded or retry_after_ms: %+v", id, r)
		}
	}
	t.Logf("high %v, low %v; by reason %v", count[1], count[-1], reasons)
	// Shed: rejected by admission, or (on a machine so loaded that the
	// requests waited out their objective before dedup or infer got to
	// them) expired; admission must have rejected some.
	low := count[-1]
	if low[schemas.StatusRejected]+low[schemas.StatusExpired] < n/4 || low[schemas.StatusRejected] == 0 ||
		low[schemas.StatusSucceeded] == 0 {
		t.Errorf("low lane %v: want most of it shed (rejected, or expired), some rejected, some served", low)
	}
	if d := testutil.ToFloat64(m.Dedup.Admission.WithLabelValues("m", "high", "rejected")); d != 0 {
		t.Errorf("%v high requests rejected", d)
	}
}

// Pause mode sheds nothing and loses nothing: a burst of a few seconds of
// the model's work (no objective, no deadline) pauses dedup's input while
// the predicted wait is above the bound (the requests wait in Kafka), and
// every request SUCCEEDS in the end.
func TestPauseModeShedsNothing(t *testing.T) {
	env := kafkatest.New(t, 2)
	m, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	runAll(t, env, Options{Metrics: m, Models: slowModel(t, 0),
		Admission: []dedup.ModelAdmission{{Name: "m", Mode: dedup.AdmissionPause, PauseAbove: 100 * time.Millisecond}}})
	warmUp(t, env, m)
	const n = 800
	var reqs []*schemas.Request
	for i := range n {
		reqs = append(reqs, kafkatest.Request(fmt.Sprintf("r%d", i), "", "m"))
	}
	env.Produce(t, reqs...)
	kafkatest.Eventually(t, "dedup paused for backpressure", func() bool {
		return testutil.ToFloat64(m.Pipe.Paused.WithLabelValues("dedup", pipeline.PauseBackpressure)) > 0
	})
	for id, r := range answered(t, env, n+5) {
		if r.Status != schemas.StatusSucceeded {
			t.Errorf("%s: %s %s, want SUCCEEDED: pause mode sheds nothing", id, r.Status, r.Reason)
		}
	}
	kafkatest.Eventually(t, "resumed", func() bool {
		return testutil.ToFloat64(m.Pipe.Paused.WithLabelValues("dedup", pipeline.PauseBackpressure)) == 0
	})
}
