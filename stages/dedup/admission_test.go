package dedup

import (
	"math"
	"testing"
	"time"

	"github.com/asyncinfer/asyncinfer/pressure"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/topics"
)

const ms = time.Millisecond

var t0 = time.UnixMilli(1_700_000_000_000)

var testLanes = []Lane{
	{Lane: topics.Lane{Name: "high", MinPriority: 1}},
	{Lane: topics.Lane{Name: "normal", MinPriority: 0}},
	{Lane: topics.Lane{Name: "low", MinPriority: math.MinInt32}, WaitFraction: 0.5},
}

// serving records of one process measured at `at`: one worker at a =
// 10ms, c = 1ms, a target batch of 40 (50ms), so 800 requests a second;
// running requests in calls, backlog waiting per lane.
func servingRun(at time.Time, running int64, backlog ...int64) []*schemas.Pressure {
	var out []*schemas.Pressure
	for i, l := range testLanes {
		out = append(out, &schemas.Pressure{Source: schemas.PressureServing, Model: "m", Lane: l.Name, Instance: "i",
			Status: pressure.StatusOK, AtMs: at.UnixMilli(), IntervalMs: 1000, CapacityPerSecond: 800,
			FixedMs: 10, PerItemMs: 1, Batch: 40, Backlog: backlog[i], Running: running})
	}
	return out
}

func servingAt(at time.Time, backlog ...int64) []*schemas.Pressure {
	return servingRun(at, 0, backlog...)
}

func newModel(mode string, objective time.Duration) *modelState {
	return &modelState{cfg: ModelAdmission{Name: "m", Mode: mode, Objective: objective, Downstream: 10 * ms, PauseAbove: objective},
		ahead: make([]float64, 3), lanes: make([]laneState, 3)}
}

// A request's predicted wait: the requests ahead of it (its lane and the
// lanes above, less what the model served since the measure, plus what
// this process admitted since, scaled by its share) are served in batches
// of 40: it waits for half of the call running, for the full batches
// ahead, and rides the next with the rest; then the hops after the model.
// With the batch limit known (the last cases: 128 items a call), a request
// with fewer ahead of it than the limit rides one call with all of them,
// as a worker that frees takes everything queued up to the limit; a longer
// backlog goes in batches of the target, as without it (an infer from
// before batch_limit). With the largest call measured known (batch_measured
// 10: the line is trusted to twice that, 20 items, 30ms), a larger call is
// not promised the fit's economy of scale: it costs 30ms × n/20, and the
// capacity infer publishes is then 40/60ms.
func TestPredict(t *testing.T) {
	for _, tc := range []struct {
		name    string
		running int64
		lane    int
		after   time.Duration
		share   float64
		admit   [3]int // admitted per lane at t0 + 1ms, before the prediction
		want    time.Duration
		limit   int32 // the serving records' batch_limit
		// the serving records' batch_measured, and then their capacity
		measured int32
		capacity float64
	}{
		// 50 ahead: a full batch (50ms), then a batch of 11 (21ms), 10ms after.
		{"normal at the measure", 0, 1, 0, 1, [3]int{}, 50*ms + 21*ms + 10*ms, 0, 0, 0},
		{"high sees its lane only", 0, 0, 0, 1, [3]int{}, 21*ms + 10*ms, 0, 0, 0},
		{"low sees everything", 0, 2, 0, 1, [3]int{}, 250*ms + 11*ms + 10*ms, 0, 0, 0},
		// 30ms later 24 were served.
		{"served since", 0, 1, 30 * ms, 1, [3]int{}, 37*ms + 10*ms, 0, 0, 0},
		{"drained to nothing", 0, 1, time.Second, 1, [3]int{}, 11*ms + 10*ms, 0, 0, 0},
		// 10 admitted here since (a low request does not count for a
		// normal one), this process a quarter of the partitions: 40 more
		// everywhere; 1.6 served in 2ms.
		{"admitted since, by share", 0, 1, 2 * ms, 0.25, [3]int{4, 6, 7}, 100*ms + 19400*time.Microsecond + 10*ms, 0, 0, 0},
		// A call of 20 running: half of it (15ms) ahead of everything.
		{"a call running", 20, 1, 0, 1, [3]int{}, 15*ms + 81*ms, 0, 0, 0},
		{"a call running, partly done", 20, 1, 10 * ms, 1, [3]int{}, 11*ms + 81*ms, 0, 0, 0},
		// 50 ahead: one call of 51 (61ms), 10ms after.
		{name: "normal: one call", lane: 1, share: 1, limit: 128, want: 61*ms + 10*ms},
		{name: "normal: a limit below the backlog", lane: 1, share: 1, limit: 50, want: 50*ms + 21*ms + 10*ms},
		{name: "high: fewer than the target", lane: 0, share: 1, limit: 128, want: 21*ms + 10*ms},
		// 200 ahead: more than a call takes.
		{name: "low: longer than the limit", lane: 2, share: 1, limit: 128, want: 250*ms + 11*ms + 10*ms},
		// One call of 51: 76.5ms, not the line's 61ms.
		{name: "normal: one call beyond the calls measured", lane: 1, share: 1, limit: 128, measured: 10,
			capacity: 40 / 0.060, want: 76500*time.Microsecond + 10*ms},
		// Five batches of 40 at 60ms (300ms, not 250ms), then one of 1.
		{name: "low: batches beyond the calls measured", lane: 2, share: 1, limit: 128, measured: 10,
			capacity: 40 / 0.060, want: 300*ms + 11*ms + 10*ms},
		{name: "normal: one call within the line's reach", lane: 1, share: 1, limit: 128, measured: 26,
			want: 61*ms + 10*ms},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newModel(AdmissionReject, 100*ms)
			recs := servingRun(t0, tc.running, 10, 40, 150)
			for _, r := range recs {
				r.BatchLimit, r.BatchMeasured = tc.limit, tc.measured
				if tc.capacity > 0 {
					r.CapacityPerSecond = tc.capacity
				}
			}
			m.serve(recs, testLanes)
			for l, n := range tc.admit {
				for range n {
					m.adm.add(t0.Add(ms), l, 3)
				}
			}
			p := m.predict(tc.lane, t0.Add(tc.after), tc.share)
			if !p.known || absDur(p.wait-tc.want) > time.Microsecond {
				t.Fatalf("wait %v (known %v), want %v", p.wait, p.known, tc.want)
			}
		})
	}
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func request(created time.Time, deadline time.Duration) *schemas.RequestHead {
	h := &schemas.RequestHead{RequestID: "r", Model: "m", CreatedAtMs: created.UnixMilli()}
	if deadline > 0 {
		h.DeadlineMs = created.Add(deadline).UnixMilli()
	}
	return h
}

// Reject mode rejects a request only when its predicted wait exceeds what
// is left of its deadline (times its lane's fraction); one without a
// deadline, or with nothing to predict from, is admitted.
func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mode     string
		serving  []*schemas.Pressure // nil: none
		lane     int
		req      *schemas.RequestHead
		inferLag time.Duration
		emitLag  time.Duration
		admit    bool
		retry    time.Duration
	}{
		{"idle: admitted", AdmissionReject, servingAt(t0, 0, 0, 0), 1, request(t0, 0), 0, 0, true, 0},
		{"keeping up: admitted", AdmissionReject, servingAt(t0, 0, 40, 0), 1, request(t0, 0), 0, 0, true, 0},
		// 80 ahead: two batches (100ms), then 11ms and 10ms: 121ms > 100ms;
		// they drain in 100ms.
		{"cannot make the objective", AdmissionReject, servingAt(t0, 0, 80, 0), 1, request(t0, 0), 0, 0, false, 100 * ms},
		{"a later deadline than the objective does not help", AdmissionReject, servingAt(t0, 0, 80, 0), 1, request(t0, time.Hour), 0, 0, false, 100 * ms},
		// 30 ahead: 41 + 10 = 51ms > 40ms.
		{"an earlier deadline than the objective", AdmissionReject, servingAt(t0, 0, 30, 0), 1, request(t0, 40*ms), 0, 0, false, 37500 * time.Microsecond},
		{"already waited in Kafka", AdmissionReject, servingAt(t0.Add(50*ms), 0, 35, 0), 1, request(t0, 0), 0, 0, false, 43750 * time.Microsecond},
		{"the high lane jumps the queue", AdmissionReject, servingAt(t0, 20, 80, 0), 0, request(t0, 0), 0, 0, true, 0},
		// 60 ahead of low: 50 + 31 + 10 = 91ms, over half its 100ms.
		{"low sheds at its fraction", AdmissionReject, servingAt(t0, 0, 30, 30), 2, request(t0, 0), 0, 0, false, 75 * ms},
		// 40 ahead: 71ms, and emit 50ms behind.
		{"emit behind", AdmissionReject, servingAt(t0, 0, 40, 0), 1, request(t0, 0), 0, 50 * ms, false, 50 * ms},
		{"no serving record: admitted", AdmissionReject, nil, 1, request(t0, 0), 0, 0, true, 0},
		{"no serving record, infer far behind", AdmissionReject, nil, 1, request(t0, 0), 5 * time.Second, 0, false, 5 * time.Second},
		{"every circuit open", AdmissionReject, []*schemas.Pressure{{Source: schemas.PressureServing, Model: "m", Lane: "normal",
			Instance: "i", Status: pressure.StatusUnavailable, AtMs: t0.UnixMilli(), RetryAfterMs: 300}}, 1, request(t0, 0), 0, 0, false, 300 * ms},
		{"no deadline, no objective", AdmissionReject, servingAt(t0, 0, 5000, 0), 1, &schemas.RequestHead{RequestID: "r", Model: "m"}, 0, 0, true, 0},
		{"pause mode never rejects", AdmissionPause, servingAt(t0, 0, 5000, 0), 1, request(t0, 0), 0, 0, true, 0},
		{"past its objective already: expired, not rejected", AdmissionReject, servingAt(t0, 0, 0, 0), 1, request(t0.Add(-time.Second), 0), 0, 0, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newModel(tc.mode, 100*ms)
			m.serve(tc.serving, testLanes)
			now := t0
			if len(tc.serving) > 0 {
				now = time.UnixMilli(tc.serving[0].AtMs)
			}
			v := m.decide(tc.req, tc.lane, testLanes[tc.lane], now, 1, tc.inferLag, tc.emitLag)
			if expired := v.expired != ""; expired != (tc.name == "past its objective already: expired, not rejected") {
				t.Fatalf("expired %q", v.expired)
			}
			if v.admit != tc.admit || absDur(v.retryAfter-tc.retry) > time.Millisecond {
				t.Fatalf("admit %v retry after %v (wait %v, budget %v); want admit %v retry after %v",
					v.admit, v.retryAfter, v.wait, v.budget, tc.admit, tc.retry)
			}
		})
	}
}

// While a lane sheds, the bar is lower by Hysteresis, until a second
// passes without a rejection: a request at 95% of its budget is rejected
// right after a rejection, admitted before the first and after the quiet
// second.
func TestDecideHysteresis(t *testing.T) {
	m := newModel(AdmissionReject, 100*ms)
	// 63 ahead of normal: 50 + 34 + 10 = 94ms of a 100ms budget.
	m.serve(servingAt(t0, 0, 63, 0), testLanes)
	near := request(t0, 0)
	if v := m.decide(near, 1, testLanes[1], t0, 1, 0, 0); !v.admit {
		t.Fatalf("before any rejection: rejected at wait %v of %v", v.wait, v.budget)
	}
	m.serve(servingAt(t0, 0, 63, 0), testLanes) // the admission above did not happen, for the test's sake
	m.adm = admissions{}
	if v := m.decide(request(t0.Add(-20*ms), 0), 1, testLanes[1], t0, 1, 0, 0); v.admit {
		t.Fatal("a request 20ms old was admitted")
	}
	if v := m.decide(near, 1, testLanes[1], t0, 1, 0, 0); v.admit {
		t.Fatalf("right after a rejection: admitted at wait %v of %v (the bar is %v lower)", v.wait, v.budget, Hysteresis)
	}
	later := t0.Add(quietToRecover + ms)
	m.serve(servingAt(later, 0, 63, 0), testLanes)
	if v := m.decide(request(later, 0), 1, testLanes[1], later, 1, 0, 0); !v.admit {
		t.Fatalf("after a quiet second: rejected at wait %v of %v", v.wait, v.budget)
	}
}

// A request with less of its budget left than even an idle model needs
// (it spent it in Kafka: a stall of the broker, a deployment's first
// seconds) is late, not a sign of load: it is answered EXPIRED
// deadline_unreachable, the lane does not start shedding, and the request
// after it, which an idle model serves in time, is admitted. Each one
// counted as a rejection once: at 50 requests/s on Kafka a deployment's
// first seconds answered 3-7 requests REJECTED overloaded, the later ones
// only because the first had set the lane shedding.
func TestDecideLateIsNotOverload(t *testing.T) {
	m := newModel(AdmissionReject, 100*ms)
	m.serve(servingAt(t0, 0, 0, 0), testLanes) // idle: one call of 1 is 11ms, then 10ms of hops
	v := m.decide(request(t0.Add(-85*ms), 0), 1, testLanes[1], t0, 1, 0, 0)
	if v.admit || v.expired != ReasonDeadlineUnreachable {
		t.Fatalf("15ms left, an idle model needs 21ms: admit %v expired %q; want EXPIRED %s", v.admit, v.expired, ReasonDeadlineUnreachable)
	}
	if m.lanes[1].shedding || m.lanes[1].rejected != 0 {
		t.Fatalf("a late request set the lane shedding (%v) or counted as rejected (%d)", m.lanes[1].shedding, m.lanes[1].rejected)
	}
	// 22ms left: the idle model makes it, with less room than the
	// hysteresis takes off a shedding lane's bar.
	if v := m.decide(request(t0.Add(-78*ms), 0), 1, testLanes[1], t0, 1, 0, 0); !v.admit {
		t.Fatalf("22ms left, 21ms needed: rejected (wait %v, budget %v)", v.wait, v.budget)
	}
	// The low lane's bar is half its budget: 30ms left, 21ms needed on an
	// idle model, over 15ms: late for its lane, not overloaded either.
	v = m.decide(request(t0.Add(-70*ms), 0), 2, testLanes[2], t0, 1, 0, 0)
	if v.admit || v.expired != ReasonDeadlineUnreachable {
		t.Fatalf("low lane, 30ms left: admit %v expired %q", v.admit, v.expired)
	}
	want := "dedup: 30ms of the request's deadline was left when it arrived (the low lane's bar: 15ms), and model m answers in about 21ms with nothing queued"
	if msg := lateMessage("m", "low", v); msg != want {
		t.Fatalf("message %q, want %q", msg, want)
	}
}

// Offered twice the model's capacity with no newer serving record, reject
// mode admits what the capacity serves within the objective, not more:
// the first burst fills the budget, then one request per millisecond of
// capacity; a request is rejected only when its predicted wait is beyond
// its budget (less the hysteresis, once shedding).
func TestDecideAdmitsTheCapacity(t *testing.T) {
	m := newModel(AdmissionReject, 100*ms)
	m.serve(servingAt(t0, 0, 0, 0), testLanes)
	admitted, rejected := 0, 0
	for i := range 3200 { // 2 seconds at 1,600 a second
		now := t0.Add(time.Duration(i) * 625 * time.Microsecond)
		v := m.decide(request(now, 0), 1, testLanes[1], now, 1, 0, 0)
		if v.admit {
			admitted++
			continue
		}
		rejected++
		if v.wait <= time.Duration(float64(v.budget)*(1-Hysteresis)) {
			t.Fatalf("request %d rejected with wait %v within its budget %v (less the hysteresis)", i, v.wait, v.budget)
		}
	}
	// 2s at 800/s, and the first 60 or so: the work the budget holds.
	if admitted < 1600 || admitted > 1700 {
		t.Errorf("admitted %d of 3200 at twice the capacity, want about 1,660", admitted)
	}
	if testing.Verbose() {
		t.Logf("admitted %d, rejected %d", admitted, rejected)
	}
	if m.lanes[1].admitted != admitted || m.lanes[1].rejected != rejected {
		t.Errorf("counted %d admitted, %d rejected", m.lanes[1].admitted, m.lanes[1].rejected)
	}
}

func TestShedFraction(t *testing.T) {
	for _, tc := range []struct {
		was                float64
		admitted, rejected int
		shedding           bool
		want               float64
	}{
		{0, 100, 100, true, 0.5},   // half rejected, nobody shed yet
		{0.5, 100, 0, true, 0.5},   // clients shed the excess: kept while shedding
		{0.5, 100, 0, false, 0.25}, // no longer shedding: halves
		{0.5, 50, 50, true, 0.75},  // clients shed half, dedup half of the rest
		{0.015, 10, 0, false, 0},   // below 1%: none
		{0.9, 0, 10, true, 1},      // everything rejected
	} {
		if got := shedFraction(tc.was, tc.admitted, tc.rejected, tc.shedding); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("shedFraction(%v, %d, %d, %v) = %v, want %v", tc.was, tc.admitted, tc.rejected, tc.shedding, got, tc.want)
		}
	}
}

// The published view: OK idle; SHEDDING with a retry-after once it
// rejects; BUSY when an admitted request would wait more than half the
// objective; UNKNOWN with nothing to predict from.
func TestView(t *testing.T) {
	m := newModel(AdmissionReject, 100*ms)
	if v := m.view(1, t0, 1, 0, false); v.status != pressure.StatusUnknown {
		t.Errorf("no serving record: %s", v.status)
	}
	m.serve(servingAt(t0, 0, 0, 0), testLanes)
	if v := m.view(1, t0, 1, 0, false); v.status != pressure.StatusOK || absDur(v.wait-21*ms) > time.Microsecond {
		t.Errorf("idle: %+v", v)
	}
	m.serve(servingAt(t0, 0, 40, 0), testLanes)
	if v := m.view(1, t0, 1, 0, false); v.status != pressure.StatusBusy {
		t.Errorf("60ms of a 100ms objective: %+v", v)
	}
	m.serve(servingAt(t0, 0, 90, 0), testLanes)
	m.decide(request(t0, 0), 1, testLanes[1], t0, 1, 0, 0)
	v := m.view(1, t0, 1, 0, true)
	if v.status != pressure.StatusShedding || v.retryAfter != 112500*time.Microsecond || v.shed != 1 {
		t.Errorf("after a rejection: %+v", v)
	}
}

type fakeDownstream struct {
	infer, emit time.Duration
	ok          bool
}

func (f *fakeDownstream) Behind() (time.Duration, time.Duration, bool) { return f.infer, f.emit, f.ok }

// The watcher's measures count beyond DownstreamNoise, and smoothly: a step
// reaches 63% of its height after downstreamSmoothing (100 ticks), so one
// sample does not flip every decision at once; a watcher with nothing
// recent decays to nothing the same way.
func TestDownstreamSmoothed(t *testing.T) {
	f := &fakeDownstream{infer: 6 * time.Second, emit: 500 * ms, ok: true}
	s, err := New(Config{Downstream: f}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ticks := int(downstreamSmoothing / tickEvery)
	for range ticks {
		s.refreshDownstream()
	}
	in, em := time.Duration(s.inferLag.Load()), time.Duration(s.emitLag.Load())
	if want := time.Duration((1 - math.Pow(1-float64(tickEvery)/float64(downstreamSmoothing), float64(ticks))) * float64(5*time.Second)); absDur(in-want) > time.Millisecond || em != 0 {
		t.Errorf("after %d ticks: infer %v (want %v: 5s beyond the noise, 63%% of the way), emit %v (want 0: within the noise)", ticks, in, want, em)
	}
	f.ok = false
	for range 10 * ticks {
		s.refreshDownstream()
	}
	if in := time.Duration(s.inferLag.Load()); in > 200*ms {
		t.Errorf("nothing measured for 20s: infer still %v", in)
	}
}
