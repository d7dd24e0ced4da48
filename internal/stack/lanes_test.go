package stack

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/connectors/sim"
	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/pressure"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/stages/infer"
	"github.com/asyncinfer/asyncinfer/topics"
)

// gated is a model whose calls each wait for a token, and which records
// every call's request ids in order.
type gated struct {
	tokens chan struct{}
	mu     sync.Mutex
	calls  [][]string
}

func (g *gated) Infer(ctx context.Context, batch []*schemas.Request) ([][]schemas.Tensor, error) {
	select {
	case <-g.tokens:
	case <-ctx.Done():
		return nil, pipeline.Transient(ctx.Err())
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var ids []string
	out := make([][]schemas.Tensor, len(batch))
	for i, r := range batch {
		ids = append(ids, r.RequestID)
		out[i] = []schemas.Tensor{{Name: "y", Datatype: "FP64", Shape: []int64{1}, FP64: []float64{1}}}
	}
	g.calls = append(g.calls, ids)
	return out, nil
}

func (g *gated) call(i int) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if i < len(g.calls) {
		return g.calls[i]
	}
	return nil
}

// produceLane writes requests straight to a lane's topic, as dedup would.
func produceLane(t *testing.T, e *kafkatest.Env, topic string, reqs ...*schemas.Request) {
	t.Helper()
	var rs []*kgo.Record
	for _, r := range reqs {
		v, err := e.Codec.EncodeRequest(topic, r)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, &kgo.Record{Topic: topic, Key: []byte(r.Key()), Value: v})
	}
	produce(t, e, rs...)
}

// Infer serves a higher lane first: with low requests queued before high
// ones, the next batch is the high ones; while the high lane alone fills
// more than a batch, the lanes below are paused (their records wait in
// Kafka), and they resume once it drains.
func TestInferServesHigherLanesFirst(t *testing.T) {
	e := kafkatest.New(t, 1)
	high, normal, low := e.Graph.Lanes[0].Topic, e.Graph.Lanes[1].Topic, e.Graph.Lanes[2].Topic
	model := &gated{tokens: make(chan struct{})}
	m := startStage(t, e, topics.Infer, nil, Options{Models: []infer.ModelConfig{{Name: "m", Backend: model, MaxBatchItems: 4}}})
	consumed := func() float64 {
		return testutil.ToFloat64(m.r.Metrics().Consumed.WithLabelValues(topics.Infer))
	}
	reqs := func(prefix string, n int) []*schemas.Request {
		var out []*schemas.Request
		for i := range n {
			out = append(out, kafkatest.Request(fmt.Sprintf("%s%d", prefix, i), "", "m"))
		}
		return out
	}
	// One call in flight, holding the model; then a low backlog.
	produceLane(t, e, normal, reqs("first", 1)...)
	kafkatest.Eventually(t, "the first call started", func() bool { return consumed() == 1 })
	produceLane(t, e, low, reqs("low", 6)...)
	kafkatest.Eventually(t, "the low requests queued", func() bool { return consumed() == 7 })
	// More high requests than a batch: the model is saturated by the high
	// lane, so the lanes below pause.
	produceLane(t, e, high, reqs("high", 6)...)
	kafkatest.Eventually(t, "the high requests queued", func() bool { return consumed() == 13 })
	kafkatest.Eventually(t, "the lower lanes paused", func() bool {
		return slices.Contains(m.r.Pauses().Reasons(low, 0), pipeline.PauseLane) &&
			slices.Contains(m.r.Pauses().Reasons(normal, 0), pipeline.PauseLane) &&
			!m.r.Pauses().Paused(high, 0)
	})

	for range 3 {
		model.tokens <- struct{}{}
	}
	kafkatest.Eventually(t, "three calls", func() bool { return model.call(2) != nil })
	want := [][]string{{"first0"}, {"high0", "high1", "high2", "high3"}, {"high4", "high5", "low0", "low1"}}
	for i, w := range want {
		if got := model.call(i); !slices.Equal(got, w) {
			t.Errorf("call %d: %v, want %v", i, got, w)
		}
	}
	close(model.tokens)
	kafkatest.Eventually(t, "every request answered", func() bool { return len(e.Results(t, e.Topics.Outcomes)) == 13 })
	if m.r.Pauses().Paused(low, 0) || m.r.Pauses().Paused(normal, 0) {
		t.Errorf("lanes still paused once drained: low %v, normal %v", m.r.Pauses().Reasons(low, 0), m.r.Pauses().Reasons(normal, 0))
	}
}

// latestPressure reads the pressure topic and keeps the latest record of
// each key (nil for a tombstone).
func latestPressure(t *testing.T, e *kafkatest.Env) map[string]*schemas.Pressure {
	t.Helper()
	out := map[string]*schemas.Pressure{}
	for _, r := range e.ReadCommitted(t, e.Topics.Pressure) {
		if r.Value == nil {
			out[string(r.Key)] = nil
			continue
		}
		p, err := e.Codec.DecodePressure(context.Background(), r.Value)
		if err != nil {
			t.Fatal(err)
		}
		out[string(r.Key)] = p
	}
	return out
}

// Infer publishes each model's serving state per lane: before any call its
// capacity is unknown; once calls are measured, its capacity within the
// objective, fitted cost and target batch; and a tombstone for each key
// when it stops.
func TestInferPublishesServingState(t *testing.T) {
	e := kafkatest.New(t, 1)
	model, err := sim.New(sim.Config{Fixed: 2 * time.Millisecond, PerItem: 100 * time.Microsecond})
	if err != nil {
		t.Fatal(err)
	}
	m := startStage(t, e, topics.Infer, model, Options{InstanceID: "i0",
		Models: []infer.ModelConfig{{Name: "m", Backend: model, Objective: time.Second}}})
	key := func(lane string) string { return pressure.ServingKey("i0", "m", lane) }
	kafkatest.Eventually(t, "the state before any call", func() bool {
		p := latestPressure(t, e)[key("normal")]
		return p != nil && p.Status == pressure.StatusUnknown
	})
	var reqs []*schemas.Request
	for i := range 50 {
		reqs = append(reqs, kafkatest.Request(fmt.Sprintf("r%d", i), "", "m"))
	}
	produceLane(t, e, e.Topics.Accepted, reqs...)
	kafkatest.Eventually(t, "every request answered", func() bool { return len(e.Results(t, e.Topics.Outcomes)) == 50 })
	var got map[string]*schemas.Pressure
	kafkatest.Eventually(t, "the measured state of every lane", func() bool {
		got = latestPressure(t, e)
		for _, l := range e.Graph.Lanes {
			if p := got[key(l.Name)]; p == nil || p.Status != pressure.StatusOK {
				return false
			}
		}
		return true
	})
	for _, l := range e.Graph.Lanes {
		p := got[key(l.Name)]
		// b* = (L/2 - a)/c, up to the batch limit (64): a batch of 64 takes
		// about 8.4ms, well within half the objective. The limit itself is
		// published as batch_limit.
		if p.Source != schemas.PressureServing || p.Model != "m" || p.Instance != "i0" || p.MinPriority != l.MinPriority ||
			p.Batch != 64 || p.BatchLimit != 64 || p.BatchMeasured < 1 || p.BatchMeasured > 50 || p.FixedMs < 0 || p.PerItemMs < 0 || p.FixedMs+p.PerItemMs <= 0 || p.IntervalMs != 1000 || p.Backlog != 0 {
			t.Errorf("lane %s: %+v", l.Name, p)
		}
		// Capacity is what the published fit says one worker does at the
		// published batch, b / t(b), with no economy of scale beyond the
		// largest call measured (50 requests: no call of 64 was): t(b) =
		// max(a + b·c, t(m)·b/m). (Its value follows the machine's speed,
		// which a unit test does not assert.)
		t64 := pressure.CallCost(p.FixedMs, p.PerItemMs, int(p.BatchMeasured), float64(p.Batch))
		want := float64(p.Batch) / t64 * 1000
		if p.CapacityPerSecond <= 0 || math.Abs(p.CapacityPerSecond-want) > 1e-6*want+1e-9 {
			t.Errorf("lane %s: capacity %.3f/s, want b/t(b) = %.3f/s", l.Name, p.CapacityPerSecond, want)
		}
	}
	m.stop()
	if err := m.wait(); err != nil {
		t.Fatal(err)
	}
	for k, p := range latestPressure(t, e) {
		if p != nil {
			t.Errorf("%s not retired at stop: %+v", k, p)
		}
	}
}
