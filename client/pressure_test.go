package client

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
	"github.com/asyncinfer/asyncinfer/pressure"
	"github.com/asyncinfer/asyncinfer/schemas"
)

// admit publishes dedup's verdict for model m and lane, as the dedup
// process owning partition 0 would, measured at.
func (e *env) admit(t *testing.T, lane string, min int32, status string, shed float64, wait, retry time.Duration, at time.Time) {
	t.Helper()
	p := &schemas.Pressure{Source: schemas.PressureAdmission, Model: "m", Lane: lane, MinPriority: min, Instance: "d0",
		Status: status, AtMs: at.UnixMilli(), IntervalMs: 500, PredictedWaitMs: wait.Milliseconds(),
		RetryAfterMs: retry.Milliseconds(), ShedFraction: shed}
	v, err := e.Codec.EncodePressure(e.Topics.Pressure, p)
	if err != nil {
		t.Fatal(err)
	}
	rec := &kgo.Record{Topic: e.Topics.Pressure, Key: []byte(pressure.AdmissionKey("m", lane)), Value: v}
	if err := e.Client(t).ProduceSync(kafkatest.Ctx(t), rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// With HonourPressure, Submit refuses what the pipeline would reject, with
// an *OverloadError and nothing produced: a SHEDDING lane's shed fraction
// (here all of it), and a request whose deadline is nearer than its lane's
// predicted wait; a request of another lane, a PAUSED lane (requests wait in
// Kafka) or a stale verdict produce as usual. Verdicts published before New
// are read before New returns, later ones as they come.
func TestSubmitHonoursPressure(t *testing.T) {
	e := newEnv(t, 1)
	now := time.Now()
	e.admit(t, "normal", 0, pressure.StatusShedding, 1, 180*time.Millisecond, 120*time.Millisecond, now)
	e.admit(t, "high", 1, pressure.StatusBusy, 0, 10*time.Second, 0, now)
	e.admit(t, "low", math.MinInt32, pressure.StatusShedding, 1, 5*time.Second, time.Second, now.Add(-time.Hour))
	c := e.client(t, Config{HonourPressure: true})

	_, err := c.Submit(kafkatest.Ctx(t), request("k1", "m"))
	var oe *OverloadError
	if !errors.As(err, &oe) || !errors.Is(err, ErrOverloaded) {
		t.Fatalf("normal lane shedding: %v, want an *OverloadError", err)
	}
	if oe.Model != "m" || oe.Lane != "normal" || oe.Status != pressure.StatusShedding ||
		oe.RetryAfter <= 0 || oe.RetryAfter > 120*time.Millisecond || oe.PredictedWait > 180*time.Millisecond {
		t.Errorf("overload error %+v", oe)
	}
	if n := e.endOffsets(t, e.Topics.Requests); n != 0 {
		t.Fatalf("%d requests produced while refusing", n)
	}

	urgent := request("k2", "m")
	urgent.Priority = 3
	if _, err := c.Submit(kafkatest.Ctx(t), urgent); err != nil {
		t.Errorf("high lane, no deadline: %v", err)
	}
	late := request("k3", "m")
	late.Priority = 3
	late.DeadlineMs = time.Now().Add(5 * time.Millisecond).UnixMilli()
	if _, err := c.Submit(kafkatest.Ctx(t), late); !errors.Is(err, ErrOverloaded) {
		t.Errorf("a deadline nearer than the predicted wait: %v, want an overload error", err)
	}
	low := request("k4", "m")
	low.Priority = -5
	if _, err := c.Submit(kafkatest.Ctx(t), low); err != nil {
		t.Errorf("a stale verdict must be ignored: %v", err)
	}
	other := request("k5", "another-model")
	if _, err := c.Submit(kafkatest.Ctx(t), other); err != nil {
		t.Errorf("a model without a verdict: %v", err)
	}

	// A verdict published now replaces the shedding one.
	e.admit(t, "normal", 0, pressure.StatusPaused, 0, 2*time.Second, time.Second, time.Now())
	kafkatest.Eventually(t, "the paused verdict read", func() bool {
		ps := c.pressure.Admission("m")
		return len(ps) == 3 && pressure.LaneOf(ps, 0).Status == pressure.StatusPaused
	})
	if _, err := c.Submit(kafkatest.Ctx(t), request("k6", "m")); err != nil {
		t.Errorf("a paused lane: %v (requests wait in Kafka)", err)
	}
	if n := e.endOffsets(t, e.Topics.Requests); n != 4 {
		t.Errorf("%d requests produced, want 4", n)
	}
}

// A shedding lane refuses its shed fraction of requests, at random.
func TestSubmitShedsTheFraction(t *testing.T) {
	e := newEnv(t, 1)
	e.admit(t, "normal", 0, pressure.StatusShedding, 0.25, 50*time.Millisecond, 30*time.Millisecond, time.Now())
	c := e.client(t, Config{HonourPressure: true})
	draws := []float64{0.1, 0.3, 0.24, 0.9}
	c.rnd = func() float64 { d := draws[0]; draws = draws[1:]; return d }
	var refused []int
	for i := range 4 {
		if _, err := c.Submit(context.Background(), request(fmt.Sprintf("k%d", i), "m")); errors.Is(err, ErrOverloaded) {
			refused = append(refused, i)
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if len(refused) != 2 || refused[0] != 0 || refused[1] != 2 {
		t.Errorf("refused %v, want the draws below 0.25 (0 and 2)", refused)
	}
}
