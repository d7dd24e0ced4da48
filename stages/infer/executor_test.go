package infer

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/asyncinfer/asyncinfer/connectors/backend"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

// scripted is a model whose answer to each call is decided by a script from
// the call's number and its request ids; it records the calls.
type scripted struct {
	script func(call int, ids []string) error // nil error: every item succeeds
	cost   time.Duration                      // virtual time per call

	mu    sync.Mutex
	calls [][]string
}

func (m *scripted) Infer(ctx context.Context, batch []*schemas.Request) ([][]schemas.Tensor, error) {
	ids := make([]string, len(batch))
	for i, r := range batch {
		ids[i] = r.RequestID
	}
	m.mu.Lock()
	n := len(m.calls)
	m.calls = append(m.calls, ids)
	m.mu.Unlock()
	if m.cost > 0 {
		select {
		case <-time.After(m.cost):
		case <-ctx.Done():
			return nil, pipeline.Transient(ctx.Err())
		}
	}
	outs := make([][]schemas.Tensor, len(batch))
	for i := range outs {
		outs[i] = []schemas.Tensor{{Name: "y", Datatype: "FP64", Shape: []int64{1}, FP64: []float64{float64(i)}}}
	}
	return outs, m.script(n, ids)
}

// outcome is what the executor answered for one item, and when.
type outcome struct {
	status  schemas.Status
	code    string
	reason  string
	attempt int32
	at      time.Duration // since the start of the run
}

func (o outcome) String() string {
	s := string(o.status)
	if o.code != "" {
		s += " " + o.code
	}
	if o.reason != "" {
		s += " " + o.reason
	}
	return fmt.Sprintf("%s #%d", s, o.attempt)
}

// The executor's retry, split, per-item, breaker, expiry and staleness paths
// with a scripted model, in virtual time: for each script, what every
// request is answered and which calls the model saw.
func TestExecutor(t *testing.T) {
	poison := func(id string) func(int, []string) error {
		return func(_ int, ids []string) error {
			if slices.Contains(ids, id) {
				return errors.New("poison " + id)
			}
			return nil
		}
	}
	type input struct {
		id        string
		deadline  time.Duration // from the start; 0: none
		objective bool
		stale     bool
	}
	items := func(ids ...string) []input {
		var out []input
		for _, id := range ids {
			out = append(out, input{id: id})
		}
		return out
	}
	tests := []struct {
		name      string
		items     []input
		script    func(call int, ids []string) error
		cfg       ModelConfig
		want      map[string]string // id -> outcome.String(); absent: no answer (dropped)
		wantCalls [][]string
	}{
		{
			name:      "one call",
			items:     items("a", "b", "c"),
			script:    func(int, []string) error { return nil },
			want:      map[string]string{"a": "SUCCEEDED #1", "b": "SUCCEEDED #1", "c": "SUCCEEDED #1"},
			wantCalls: [][]string{{"a", "b", "c"}},
		},
		{
			name:  "transient then ok",
			items: items("a", "b"),
			script: func(call int, _ []string) error {
				if call == 0 {
					return pipeline.Transient(errors.New("busy"))
				}
				return nil
			},
			want:      map[string]string{"a": "SUCCEEDED #2", "b": "SUCCEEDED #2"},
			wantCalls: [][]string{{"a", "b"}, {"a", "b"}},
		},
		{
			name:   "a poison input is split out and fails alone",
			items:  items("a", "b", "c", "d"),
			script: poison("c"),
			// The first half succeeds, so the second holds the culprit: it
			// is halved without a call of it whole.
			want: map[string]string{"a": "SUCCEEDED #2", "b": "SUCCEEDED #2",
				"c": "FAILED INFERENCE_FAILED #2", "d": "SUCCEEDED #2"},
			wantCalls: [][]string{{"a", "b", "c", "d"}, {"a", "b"}, {"c"}, {"d"}},
		},
		{
			name:   "a poison input first: the halves that wait are called together at the end",
			items:  items("a", "b", "c", "d", "e", "f", "g", "h"),
			script: poison("a"),
			want: map[string]string{"a": "FAILED INFERENCE_FAILED #4", "b": "SUCCEEDED #4", "c": "SUCCEEDED #3",
				"d": "SUCCEEDED #3", "e": "SUCCEEDED #2", "f": "SUCCEEDED #2", "g": "SUCCEEDED #2", "h": "SUCCEEDED #2"},
			wantCalls: [][]string{{"a", "b", "c", "d", "e", "f", "g", "h"}, {"a", "b", "c", "d"}, {"a", "b"}, {"a"},
				{"b", "c", "d", "e", "f", "g", "h"}},
		},
		{
			name:  "two poison inputs: each fails alone, nothing else does",
			items: items("a", "b", "c", "d"),
			script: func(_ int, ids []string) error {
				if slices.Contains(ids, "a") || slices.Contains(ids, "d") {
					return errors.New("poison")
				}
				return nil
			},
			want: map[string]string{"a": "FAILED INFERENCE_FAILED #3", "b": "SUCCEEDED #4",
				"c": "SUCCEEDED #3", "d": "FAILED INFERENCE_FAILED #3"},
			wantCalls: [][]string{{"a", "b", "c", "d"}, {"a", "b"}, {"a"}, {"b", "c", "d"}, {"b"}, {"c"}, {"d"}},
		},
		{
			// Inputs that fail only together (a backend refusing a batch
			// of mixed shapes): an item fails only when it fails alone.
			name:  "inputs that fail only together each succeed alone",
			items: items("a", "b"),
			script: func(_ int, ids []string) error {
				if len(ids) > 1 {
					return errors.New("shapes differ")
				}
				return nil
			},
			want:      map[string]string{"a": "SUCCEEDED #2", "b": "SUCCEEDED #2"},
			wantCalls: [][]string{{"a", "b"}, {"a"}, {"b"}},
		},
		{
			name:  "per-item errors: no split, the transient item retried alone",
			items: items("a", "b", "c"),
			script: func(call int, ids []string) error {
				if call > 0 {
					return nil
				}
				return backend.NewItemErrors(3).Failed(1, errors.New("bad shape")).Failed(2, pipeline.Transient(errors.New("oom")))
			},
			want:      map[string]string{"a": "SUCCEEDED #1", "b": "FAILED INFERENCE_FAILED #1", "c": "SUCCEEDED #2"},
			wantCalls: [][]string{{"a", "b", "c"}, {"c"}},
		},
		{
			name:  "too large: split until it fits",
			items: items("a", "b", "c", "d"),
			script: func(_ int, ids []string) error {
				if len(ids) > 2 {
					return backend.TooLarge(errors.New("413"))
				}
				return nil
			},
			want:      map[string]string{"a": "SUCCEEDED #2", "b": "SUCCEEDED #2", "c": "SUCCEEDED #2", "d": "SUCCEEDED #2"},
			wantCalls: [][]string{{"a", "b", "c", "d"}, {"a", "b"}, {"c", "d"}},
		},
		{
			name:      "one item too large fails",
			items:     items("a"),
			script:    func(int, []string) error { return backend.TooLarge(errors.New("413 request entity too large")) },
			want:      map[string]string{"a": "FAILED INFERENCE_FAILED #1"},
			wantCalls: [][]string{{"a"}},
		},
		{
			name:      "transient failures up to max_attempts, the breaker never opening",
			items:     items("a"),
			script:    func(int, []string) error { return pipeline.Transient(errors.New("flaky")) },
			cfg:       ModelConfig{MaxAttempts: 3, BreakerThreshold: 100},
			want:      map[string]string{"a": "FAILED MODEL_UNAVAILABLE #3"},
			wantCalls: [][]string{{"a"}, {"a"}, {"a"}},
		},
		{
			name:  "an outage opens the circuit: requests wait, not fail",
			items: items("a"),
			script: func(call int, _ []string) error {
				if call < 8 {
					return pipeline.Transient(errors.New("down"))
				}
				return nil
			},
			cfg:  ModelConfig{MaxAttempts: 5, BreakerThreshold: 3, BreakerCooldown: time.Second},
			want: map[string]string{"a": "SUCCEEDED #9"},
		},
		{
			name: "expired before the call: no model time",
			items: []input{{id: "late", deadline: -time.Millisecond}, {id: "obj", deadline: -time.Millisecond, objective: true},
				{id: "fine"}},
			script:    func(int, []string) error { return nil },
			want:      map[string]string{"late": "EXPIRED deadline_passed #0", "obj": "EXPIRED objective_passed #0", "fine": "SUCCEEDED #1"},
			wantCalls: [][]string{{"fine"}},
		},
		{
			name:      "stale work is dropped without a call",
			items:     []input{{id: "gone", stale: true}, {id: "here"}},
			script:    func(int, []string) error { return nil },
			want:      map[string]string{"here": "SUCCEEDED #1"},
			wantCalls: [][]string{{"here"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				model := &scripted{script: tc.script, cost: time.Millisecond}
				cfg := tc.cfg
				cfg.Name, cfg.Backend = "m", model
				cfg.setDefaults()
				m, _ := NewMetrics(nil)
				start := time.Now()
				got := map[string]string{}
				var dropped []string
				ex := &executor{cfg: cfg, br: newBreaker(cfg.BreakerThreshold, cfg.BreakerCooldown, nil, nil), m: m,
					answer: func(it *item, res *schemas.Result) {
						o := outcome{status: res.Status, code: res.ErrorCode, reason: res.Reason, attempt: res.Attempt, at: time.Since(start)}
						if _, dup := got[it.req.RequestID]; dup {
							t.Errorf("%s answered twice", it.req.RequestID)
						}
						got[it.req.RequestID] = o.String()
					},
					drop: func(it *item) { dropped = append(dropped, it.req.RequestID) },
				}
				var batch []*item
				for _, x := range tc.items {
					done := make(chan struct{})
					if x.stale {
						close(done)
					}
					it := &item{done: done, req: &schemas.Request{RequestID: x.id}, enqueued: start, byObjective: x.objective}
					if x.deadline != 0 {
						it.deadline = start.Add(x.deadline)
					}
					batch = append(batch, it)
				}
				ex.run(t.Context(), batch)
				for id, w := range tc.want {
					if got[id] != w {
						t.Errorf("%s: %q, want %q", id, got[id], w)
					}
				}
				for id := range got {
					if _, ok := tc.want[id]; !ok {
						t.Errorf("%s answered %q, want no answer", id, got[id])
					}
				}
				for _, x := range tc.items {
					if x.stale && !slices.Contains(dropped, x.id) {
						t.Errorf("stale %s not dropped", x.id)
					}
				}
				if tc.wantCalls != nil && !slices.EqualFunc(model.calls, tc.wantCalls, slices.Equal) {
					t.Errorf("calls %v, want %v", model.calls, tc.wantCalls)
				}
			})
		})
	}
}

// Every mix of poison inputs in batches of every size up to 40: each item
// is answered once, a poison input FAILED and every other SUCCEEDED; one
// poison input costs at most ceil(log2 n)+3 calls: the failed one, one a
// halving, one for the last suspect alone when it was inferred, and one
// for the halves that waited (calling both halves of each split took up
// to 2·ceil(log2 n)+1); any number, up to all, at most 2n+ceil(log2 n)+1
// (a search per culprit took about n·log2(n) when all were).
func TestExecutorBisects(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 1; n <= 40; n++ {
		// n poison inputs: a model that refuses every request.
		for _, poisons := range []int{1, 1, 1, 2, 3, n / 2, n} {
			poisons = min(poisons, n)
			bad := map[string]bool{}
			for _, i := range rng.Perm(n)[:poisons] {
				bad[fmt.Sprint(i)] = true
			}
			t.Run(fmt.Sprintf("n=%d,poisons=%d", n, poisons), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					model := &scripted{cost: time.Millisecond, script: func(_ int, ids []string) error {
						for _, id := range ids {
							if bad[id] {
								return errors.New("poison " + id)
							}
						}
						return nil
					}}
					cfg := ModelConfig{Name: "m", Backend: model}
					cfg.setDefaults()
					m, _ := NewMetrics(nil)
					got := map[string]schemas.Status{}
					ex := &executor{cfg: cfg, br: newBreaker(cfg.BreakerThreshold, cfg.BreakerCooldown, nil, nil), m: m,
						answer: func(it *item, res *schemas.Result) {
							if _, dup := got[it.req.RequestID]; dup {
								t.Errorf("n=%d %v: %s answered twice", n, bad, it.req.RequestID)
							}
							got[it.req.RequestID] = res.Status
						},
						drop: func(it *item) { t.Errorf("%s dropped", it.req.RequestID) },
					}
					var batch []*item
					for i := range n {
						batch = append(batch, &item{done: make(chan struct{}), req: &schemas.Request{RequestID: fmt.Sprint(i)}})
					}
					ex.run(t.Context(), batch)
					for i := range n {
						id := fmt.Sprint(i)
						want := schemas.StatusSucceeded
						if bad[id] {
							want = schemas.StatusFailed
						}
						if got[id] != want {
							t.Errorf("n=%d poison %v: %s %q, want %q", n, bad, id, got[id], want)
						}
					}
					if most := bits.Len(uint(n-1)) + 3; poisons == 1 && len(model.calls) > most {
						t.Errorf("n=%d poison %v: %d calls, want at most %d: %v", n, bad, len(model.calls), most, model.calls)
					}
					if most := 2*n + bits.Len(uint(n-1)) + 1; len(model.calls) > most {
						t.Errorf("n=%d poison %v: %d calls, want at most %d", n, bad, len(model.calls), most)
					}
				})
			})
		}
	}
}

// Nothing holds a batch past its last deadline: not a hung model (the call
// is cancelled then, and counted as a failure by the circuit), not an open
// circuit. Its requests are answered EXPIRED then, not after the call's
// timeout or the circuit's cooldown, and the worker is free for the queue.
func TestExecutorEndsAtTheLastDeadline(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script func(call int, ids []string) error
		cost   time.Duration
		// fitted: the model's cost is known (10 ms a call); tight: the
		// deadlines are tighter than it (5 and 8 ms, not 50 and 100).
		fitted, tight bool
	}{
		{name: "a hung model", cost: time.Hour, script: func(int, []string) error { return nil }},
		{name: "a hung model, its cost known", cost: time.Hour, fitted: true, script: func(int, []string) error { return nil }},
		{name: "an open circuit", cost: time.Millisecond, script: func(int, []string) error {
			return pipeline.Transient(errors.New("down"))
		}},
		// Not the model's fault: the circuit stays closed, or a client
		// could open it for everyone.
		{name: "deadlines tighter than the model's cost", cost: 10 * time.Millisecond, fitted: true, tight: true,
			script: func(int, []string) error { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				model := &scripted{script: tc.script, cost: tc.cost}
				cfg := ModelConfig{Name: "m", Backend: model, BreakerThreshold: 1, BreakerCooldown: time.Hour}
				cfg.setDefaults()
				m, _ := NewMetrics(nil)
				br := newBreaker(cfg.BreakerThreshold, cfg.BreakerCooldown, nil, nil)
				start := time.Now()
				cs := newCosts()
				if tc.fitted {
					fit, _ := cs.of(versionLabel(""))
					for _, n := range []int{1, 2, 4, 8, 1, 2, 4, 8} {
						fit.observe(start, n, 10*time.Millisecond)
					}
				}
				got := map[string]outcome{}
				ex := &executor{cfg: cfg, br: br, m: m, costs: cs,
					answer: func(it *item, res *schemas.Result) {
						got[it.req.RequestID] = outcome{status: res.Status, reason: res.Reason, at: time.Since(start)}
					},
					drop: func(*item) {},
				}
				var batch []*item
				deadlines := map[string]time.Duration{"a": 50 * time.Millisecond, "b": 100 * time.Millisecond}
				if tc.tight {
					deadlines = map[string]time.Duration{"a": 5 * time.Millisecond, "b": 8 * time.Millisecond}
				}
				for id, d := range deadlines {
					batch = append(batch, &item{done: make(chan struct{}), req: &schemas.Request{RequestID: id},
						deadline: start.Add(d)})
				}
				ex.run(t.Context(), batch)
				for _, id := range []string{"a", "b"} {
					o := got[id]
					if o.status != schemas.StatusExpired || o.reason != "deadline_passed" || o.at > 200*time.Millisecond {
						t.Errorf("%s: %s at %v, want EXPIRED deadline_passed by 200ms", id, o, o.at)
					}
				}
				if tc.cost == time.Hour || tc.tight {
					if n := testutil.ToFloat64(m.Calls.WithLabelValues("m", "deadline")); n != 1 {
						t.Errorf("calls ended at the deadline: %v, want 1", n)
					}
					if tc.tight && !br.isClosed() {
						t.Error("the circuit counted a call cut by deadlines tighter than the model's cost")
					}
					if !tc.tight && br.isClosed() {
						t.Error("the circuit did not count the call that outlived every deadline")
					}
				}
			})
		})
	}
}

// A batch retried after transient failures does not sleep past its last
// deadline: its requests are answered EXPIRED at it, not at the end of a
// backoff that may reach a second.
func TestExecutorRetriesNotPastTheLastDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Calls take no time: the deadline falls in a backoff.
		model := &scripted{script: func(int, []string) error { return pipeline.Transient(errors.New("flaky")) }}
		cfg := ModelConfig{Name: "m", Backend: model, MaxAttempts: 1000, BreakerThreshold: 1000}
		cfg.setDefaults()
		m, _ := NewMetrics(nil)
		start := time.Now()
		var at time.Duration
		var got *schemas.Result
		ex := &executor{cfg: cfg, br: newBreaker(cfg.BreakerThreshold, cfg.BreakerCooldown, nil, nil), m: m,
			answer: func(_ *item, res *schemas.Result) { got, at = res, time.Since(start) },
			drop:   func(*item) {}}
		deadline := 300 * time.Millisecond
		ex.run(t.Context(), []*item{{done: make(chan struct{}), req: &schemas.Request{RequestID: "a"}, deadline: start.Add(deadline)}})
		if got == nil || got.Status != schemas.StatusExpired || at != deadline {
			t.Errorf("answered %+v at %v after %d calls, want EXPIRED at the deadline, %v", got, at, len(model.calls), deadline)
		}
	})
}

// A call whose every request goes stale while it runs is cancelled: the
// model's time is not spent on answers nobody waits for.
func TestExecutorCancelsACallWhenEveryItemGoesStale(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		model := &scripted{script: func(int, []string) error { return nil }, cost: time.Hour}
		cfg := ModelConfig{Name: "m", Backend: model}
		cfg.setDefaults()
		m, _ := NewMetrics(nil)
		var answered, dropped []string
		ex := &executor{cfg: cfg, br: newBreaker(cfg.BreakerThreshold, cfg.BreakerCooldown, nil, nil), m: m,
			answer: func(it *item, _ *schemas.Result) { answered = append(answered, it.req.RequestID) },
			drop:   func(it *item) { dropped = append(dropped, it.req.RequestID) },
		}
		revoke := make(chan struct{})
		b := []*item{{done: revoke, req: &schemas.Request{RequestID: "a"}}, {done: revoke, req: &schemas.Request{RequestID: "b"}}}
		finished := make(chan struct{})
		start := time.Now()
		go func() { ex.run(t.Context(), b); close(finished) }()
		time.Sleep(time.Minute)
		close(revoke)
		<-finished
		if took := time.Since(start); took != time.Minute {
			t.Errorf("run took %v: the call was not cancelled when its items went stale", took)
		}
		if len(answered) != 0 || strings.Join(dropped, ",") != "a,b" {
			t.Errorf("answered %v, dropped %v; want none answered, both dropped", answered, dropped)
		}
	})
}

// What the calls teach: only a batch's first call, as the batcher formed it,
// measures the model's cost (not a retry, not the halves of a split batch,
// not a batch of several model versions); a too-large answer halves the
// batch limit.
func TestExecutorLearns(t *testing.T) {
	tooLarge := func(_ int, ids []string) error {
		if len(ids) > 2 {
			return backend.TooLarge(errors.New("413"))
		}
		return nil
	}
	tests := []struct {
		name        string
		items       []string
		versions    []string // per item; nil: none
		script      func(call int, ids []string) error
		wantSamples float64
		wantLimit   int
		wantCalls   [][]string
	}{
		{
			name:        "a call that succeeds is measured",
			items:       []string{"a", "b", "c", "d"},
			script:      func(int, []string) error { return nil },
			wantSamples: 1, wantLimit: 64,
		},
		{
			name:  "a partial answer is measured: the model ran the batch",
			items: []string{"a", "b"},
			script: func(call int, _ []string) error {
				if call == 0 {
					return backend.NewItemErrors(2).Failed(1, errors.New("bad"))
				}
				return nil
			},
			wantSamples: 1, wantLimit: 64,
		},
		{
			name:  "a retry is not",
			items: []string{"a", "b"},
			script: func(call int, _ []string) error {
				if call == 0 {
					return pipeline.Transient(errors.New("busy"))
				}
				return nil
			},
			wantSamples: 0, wantLimit: 64,
		},
		{
			name:        "too large: the limit halves, the halves are not measured",
			items:       []string{"a", "b", "c", "d"},
			script:      tooLarge,
			wantSamples: 0, wantLimit: 2,
			wantCalls: [][]string{{"a", "b", "c", "d"}, {"a", "b"}, {"c", "d"}},
		},
		{
			name:        "several versions in one batch are not measured",
			items:       []string{"a", "b"},
			versions:    []string{"1", "2"},
			script:      func(int, []string) error { return nil },
			wantSamples: 0, wantLimit: 64,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				model := &scripted{script: tc.script, cost: time.Millisecond}
				cfg := ModelConfig{Name: "m", Backend: model}
				cfg.setDefaults()
				m, _ := NewMetrics(nil)
				cs, limit := newCosts(), newBatchLimit(cfg.MaxBatchItems)
				ex := &executor{cfg: cfg, br: newBreaker(cfg.BreakerThreshold, cfg.BreakerCooldown, nil, nil), m: m,
					answer: func(*item, *schemas.Result) {}, drop: func(*item) {}, costs: cs, limit: limit}
				var b []*item
				for i, id := range tc.items {
					req := &schemas.Request{RequestID: id}
					if tc.versions != nil {
						req.ModelVersion = tc.versions[i]
					}
					b = append(b, &item{req: req, enqueued: time.Now()})
				}
				ex.run(t.Context(), b)
				samples := 0.0
				for _, fm := range cs.byVersion {
					samples += fm.s0
				}
				if samples != tc.wantSamples {
					t.Errorf("%v cost samples, want %v", samples, tc.wantSamples)
				}
				if got := limit.get(); got != tc.wantLimit {
					t.Errorf("limit %d, want %d", got, tc.wantLimit)
				}
				if tc.wantCalls != nil && !slices.EqualFunc(model.calls, tc.wantCalls, slices.Equal) {
					t.Errorf("calls %v, want %v", model.calls, tc.wantCalls)
				}
				if tc.wantSamples > 0 {
					a := testutil.ToFloat64(m.CostFixed.WithLabelValues("m", defaultVersion))
					c := testutil.ToFloat64(m.CostPerItem.WithLabelValues("m", defaultVersion))
					if a != 0 || c != time.Millisecond.Seconds()/float64(len(tc.items)) {
						t.Errorf("gauges a=%v c=%v after one call of %d items in 1ms: want the line through the origin", a, c, len(tc.items))
					}
				}
			})
		})
	}
}
