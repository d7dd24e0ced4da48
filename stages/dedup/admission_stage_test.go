package dedup_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/pressure"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/stages/dedup"
)

// startAdmission runs a dedup member admitting model "m" with the graph's
// lanes, reading serving records from the pressure topic.
func startAdmission(t *testing.T, e *kafkatest.Env, mode string, objective time.Duration) *member {
	t.Helper()
	m, err := dedup.NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	var lanes []dedup.Lane
	for _, l := range e.Graph.Lanes {
		lanes = append(lanes, dedup.Lane{Lane: l})
	}
	st, err := dedup.New(dedup.Config{Lanes: lanes,
		Admission: []dedup.ModelAdmission{{Name: "m", Mode: mode, Objective: objective, Downstream: 10 * time.Millisecond}},
		Pressure: &dedup.PressureConfig{Conn: []kgo.Opt{kgo.SeedBrokers(e.Brokers...)}, Codec: e.Codec,
			Topic: e.Topics.Pressure, Instance: "d0", Interval: 50 * time.Millisecond}}, m)
	if err != nil {
		t.Fatal(err)
	}
	r, err := pipeline.New(e.Stage(t, "dedup"), dedup.Decoder(e.Codec), st, e.Opts()...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	mem := &member{stage: st, r: r, m: m}
	var stopped bool
	mem.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dedup runner: %v", err)
		}
	}
	t.Cleanup(mem.stop)
	return mem
}

// serve publishes what an infer process would: model m served at 110
// requests a second (batches of 10 in 91ms), backlog requests ahead on the
// normal lane.
func serve(t *testing.T, e *kafkatest.Env, backlog int64) {
	t.Helper()
	var rs []*kgo.Record
	for _, l := range e.Graph.Lanes {
		p := &schemas.Pressure{Source: schemas.PressureServing, Model: "m", Lane: l.Name, MinPriority: l.MinPriority,
			Instance: "i0", Status: pressure.StatusOK, AtMs: time.Now().UnixMilli(), IntervalMs: 60_000,
			CapacityPerSecond: 110, FixedMs: 1, PerItemMs: 9, Batch: 10}
		if l.Name == "normal" {
			p.Backlog = backlog
		}
		v, err := e.Codec.EncodePressure(e.Topics.Pressure, p)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, &kgo.Record{Topic: e.Topics.Pressure, Key: []byte(pressure.ServingKey("i0", "m", l.Name)), Value: v})
	}
	if err := e.Client(t).ProduceSync(kafkatest.Ctx(t), rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func admissionRecord(t *testing.T, e *kafkatest.Env, lane string) *schemas.Pressure {
	t.Helper()
	var last *schemas.Pressure
	for _, r := range e.ReadCommitted(t, e.Topics.Pressure) {
		if string(r.Key) != pressure.AdmissionKey("m", lane) {
			continue
		}
		p, err := e.Codec.DecodePressure(context.Background(), r.Value)
		if err != nil {
			t.Fatal(err)
		}
		last = p
	}
	return last
}

// Reject mode on one dedup, with infer's serving records faked: a backlog
// of nine seconds at the model's capacity (less what was served since it
// was measured) rejects a request with a 2s
// objective at once (REJECTED, overloaded, retry_after_ms, the stage and
// model named), publishes SHEDDING for its lane, and leaves the key free:
// the client's retry (a new request id, the same key) is accepted once the
// backlog is gone, while the rejected request id re-sent is a re-delivery.
// The high lane, with nothing ahead, is admitted meanwhile, to its topic.
func TestAdmissionRejectsWhatCannotMakeIt(t *testing.T) {
	e := kafkatest.New(t, 1)
	serve(t, e, 1000)
	// An objective far from both sides of the decision (9s ahead, then
	// none): with 100ms, a retry that spent most of it reaching dedup on a
	// loaded machine (make test runs the packages at once) is rightly not
	// accepted (too little left for even an idle model), and the test
	// waited for an acceptance that never came (once in make test).
	d := startAdmission(t, e, dedup.AdmissionReject, 2*time.Second)
	kafkatest.Eventually(t, "the serving view", func() bool {
		p := admissionRecord(t, e, "normal")
		return p != nil && p.Status != pressure.StatusUnknown
	})

	first := kafkatest.Request("first", "key-1", "m")
	urgent := kafkatest.Request("urgent", "key-2", "m")
	urgent.Priority = 5
	e.Produce(t, first, urgent)
	kafkatest.Eventually(t, "both decided", func() bool { return len(e.Results(t, e.Topics.Outcomes)) == 1 && decisions(d.m, "accepted") == 1 })
	r := e.Results(t, e.Topics.Outcomes)["first"][0]
	if r.Status != schemas.StatusRejected || r.Reason != dedup.ReasonOverloaded || r.RetryAfterMs < 8000 ||
		!containsAll(r.ErrorMessage, "dedup", "model m", "overloaded") {
		t.Fatalf("first: %+v", r)
	}
	if high := e.ReadCommitted(t, e.Graph.Lanes[0].Topic); len(high) != 1 || string(high[0].Key) != "key-2" {
		t.Fatalf("the high lane holds %d records, want the urgent request", len(high))
	}
	kafkatest.Eventually(t, "SHEDDING published", func() bool {
		p := admissionRecord(t, e, "normal")
		return p != nil && p.Status == pressure.StatusShedding && p.RetryAfterMs >= 8000 && p.ShedFraction > 0
	})

	serve(t, e, 0)
	kafkatest.Eventually(t, "the backlog gone", func() bool {
		p := admissionRecord(t, e, "normal")
		return p != nil && p.PredictedWaitMs < 100
	})
	again := kafkatest.Request("first", "key-1", "m") // the same id: a re-delivery
	retry := kafkatest.Request("first-retry", "key-1", "m")
	e.Produce(t, again, retry)
	kafkatest.Eventually(t, "the retry accepted", func() bool { return decisions(d.m, "accepted") == 2 })
	kafkatest.Eventually(t, "the re-sent id dropped", func() bool { return decisions(d.m, "redelivery") == 1 })
	d.stop()
	if got := decisions(d.m, "duplicate"); got != 0 {
		t.Errorf("%d duplicates: a rejected key must be free for a retry", got)
	}
	accepted := e.ReadCommitted(t, e.Topics.Accepted)
	if len(accepted) != 1 {
		t.Fatalf("the normal lane holds %d records, want the retry", len(accepted))
	}
	if outs := e.Results(t, e.Topics.Outcomes); len(outs["first"]) != 1 || len(outs) != 1 {
		t.Errorf("outcomes %v: want the one REJECTED", outs)
	}
}

// An idle pipeline rejects nothing: with nothing ahead, every request
// with a budget above the model's service time is admitted. The five
// requests take one call of 46 ms and 10 ms downstream; the objective is
// 500 ms, not 100, because a request is judged from its created_at: with
// 100 ms, one make test run (the race detector, the integration suite
// beside it) accepted fewer than five, where 13 runs alone passed. The
// likely cause is a request that took longer than the 44 ms left from
// produce to dedup, and was rightly refused; the test did not record
// which decision it got.
func TestAdmissionIdleRejectsNothing(t *testing.T) {
	e := kafkatest.New(t, 2)
	serve(t, e, 0)
	d := startAdmission(t, e, dedup.AdmissionReject, 500*time.Millisecond)
	kafkatest.Eventually(t, "the serving view", func() bool {
		p := admissionRecord(t, e, "normal")
		return p != nil && p.Status == pressure.StatusOK
	})
	e.Produce(t, requests("r", 5)...)
	kafkatest.Eventually(t, "all accepted", func() bool { return decisions(d.m, "accepted") == 5 })
	if n := decisions(d.m, "rejected"); n != 0 {
		t.Errorf("%d rejected by an idle pipeline", n)
	}
}

// Pause mode never rejects: with the backlog above its bound the input
// pauses (reason backpressure; requests wait in Kafka), and resumes once
// it is gone, after which everything is accepted.
func TestAdmissionPauseMode(t *testing.T) {
	e := kafkatest.New(t, 1)
	serve(t, e, 0)
	d := startAdmission(t, e, dedup.AdmissionPause, 2*time.Second) // as above: far from 9s and from none
	kafkatest.Eventually(t, "the serving view", func() bool {
		p := admissionRecord(t, e, "normal")
		return p != nil && p.Status == pressure.StatusOK
	})
	serve(t, e, 1000)
	e.Produce(t, keyed("a", 1)...)
	kafkatest.Eventually(t, "paused for backpressure", func() bool {
		return slices.Contains(d.r.Pauses().Reasons(e.Topics.Requests, 0), pipeline.PauseBackpressure)
	})
	kafkatest.Eventually(t, "PAUSED published", func() bool {
		p := admissionRecord(t, e, "low")
		return p != nil && p.Status == pressure.StatusPaused
	})
	e.Produce(t, keyed("b", 5)...)
	serve(t, e, 0)
	kafkatest.Eventually(t, "resumed, everything accepted", func() bool {
		return !d.r.Pauses().Paused(e.Topics.Requests, 0) && decisions(d.m, "accepted") == 6
	})
	if n := decisions(d.m, "rejected"); n != 0 {
		t.Errorf("pause mode rejected %d", n)
	}
}

// keyed are n requests for model m with keys of their own.
func keyed(prefix string, n int) []*schemas.Request {
	out := make([]*schemas.Request, n)
	for i := range out {
		id := fmt.Sprintf("%s-%d", prefix, i)
		out[i] = kafkatest.Request(id, "key-"+id, "m")
	}
	return out
}

func containsAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}
