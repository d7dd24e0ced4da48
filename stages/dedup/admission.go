package dedup

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/asyncinfer/asyncinfer/pressure"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/topics"
)

// Admission modes of a model.
const (
	// AdmissionOff admits every request: a backlog waits in Kafka.
	AdmissionOff = "off"
	// AdmissionReject answers REJECTED (reason overloaded, with
	// retry_after_ms) a request whose predicted wait exceeds what is left
	// of its deadline: it could not be served in time anyway.
	AdmissionReject = "reject"
	// AdmissionPause pauses dedup's input while the predicted wait is above
	// a bound, and resumes below half of it: requests wait in Kafka,
	// nothing is shed.
	AdmissionPause = "pause"
)

// ReasonOverloaded is the reason of a REJECTED answer.
const ReasonOverloaded = "overloaded"

// ReasonDeadlineUnreachable: EXPIRED at admission, because what was left
// of the request's budget when it reached dedup is less than even an idle
// model needs (infer's early drop says the same).
const ReasonDeadlineUnreachable = "deadline_unreachable"

// ModelAdmission is how dedup admits one model's requests.
type ModelAdmission struct {
	Name string
	Mode string // AdmissionOff (""), AdmissionReject or AdmissionPause
	// Objective makes a request's effective deadline min(its deadline,
	// created_at + Objective); 0: its deadline alone (none: never
	// rejected).
	Objective time.Duration
	// Downstream is the time from the model's answer to a result the
	// client reads (the model's downstream_latency).
	Downstream time.Duration
	// PauseAbove (pause mode): the input pauses while a request of the
	// lowest lane would wait longer, and resumes once it would wait less
	// than half. Default: the objective, else a second.
	PauseAbove time.Duration
}

// Lane is a priority lane as dedup routes and admits it.
type Lane struct {
	topics.Lane
	// WaitFraction: a request of the lane is admitted while its predicted
	// wait is within this fraction of its remaining budget (0: 1). Below 1,
	// the lane is shed before it would miss, leaving the capacity to the
	// lanes above.
	WaitFraction float64
}

// Hysteresis is how much lower the bar is while a lane is shedding: it
// admits only requests whose predicted wait is within (1 - Hysteresis) of
// their budget, until a second passes without a rejection. Requests right
// at the bar are the likeliest to be late, and the decisions do not flip
// with every small move of the estimate.
const Hysteresis = 0.1

// quietToRecover is how long a shedding lane goes without a rejection
// before it is OK (or BUSY) again.
const quietToRecover = time.Second

// DownstreamNoise is how much of the time lag a lag watcher measures is
// not counted: a group's committed offset moves only at each commit (every
// 200ms) and the watcher samples every few seconds, so below it a lag says
// nothing.
const DownstreamNoise = time.Second

// Downstream is what a lag watcher sees of the stages after dedup, on the
// partitions this process's dedup owns (requests partition p feeds lane
// partition p, whose answers spread over the outcomes).
type Downstream interface {
	// Behind is the time lag (the age of the oldest record not yet
	// consumed) of infer's group on the lanes and of emit's group on the
	// outcomes; ok false when nothing recent was measured.
	Behind() (infer, emit time.Duration, ok bool)
}

// admissionBucket is the width of the buckets that count admissions, and
// admissionBuckets how many are kept: enough to reach back to any serving
// record still fresh.
const (
	admissionBucket  = 10 * time.Millisecond
	admissionBuckets = 512
)

// admissions counts the requests admitted per lane in time buckets.
type admissions struct {
	counts [admissionBuckets][]int32 // by bucket, by lane
	stamps [admissionBuckets]int64   // the bucket number each slot holds
}

func bucketOf(t time.Time) int64 { return t.UnixNano() / int64(admissionBucket) }

func (a *admissions) add(now time.Time, lane, lanes int) {
	b := bucketOf(now)
	i := int(b % admissionBuckets)
	if a.stamps[i] != b || a.counts[i] == nil {
		if a.counts[i] == nil {
			a.counts[i] = make([]int32, lanes)
		}
		clear(a.counts[i])
		a.stamps[i] = b
	}
	a.counts[i][lane]++
}

// since is the requests of lanes 0..lane admitted from t on.
func (a *admissions) since(t, now time.Time, lane int) float64 {
	from, to := bucketOf(t), bucketOf(now)
	from = max(from, to-admissionBuckets+1)
	var n int32
	for b := from; b <= to; b++ {
		i := int(b % admissionBuckets)
		if a.stamps[i] != b || a.counts[i] == nil {
			continue
		}
		for l := 0; l <= lane && l < len(a.counts[i]); l++ {
			n += a.counts[i][l]
		}
	}
	return float64(n)
}

// laneState is one lane's admission state.
type laneState struct {
	shedding   bool
	lastReject time.Time
	// Since the last publication: for the shed fraction clients apply.
	admitted, rejected int
	shed               float64
}

// modelState is what dedup knows of one model's pressure: the serving
// view (the infer processes' capacity and backlog, summed over the fresh
// serving records) and its own admissions since they were measured.
type modelState struct {
	cfg ModelAdmission

	mu          sync.Mutex
	known       bool          // a fresh serving record with a measured capacity
	unavailable bool          // every process's circuit is open
	retryHint   time.Duration // when unavailable: until the next probe
	capacity    float64       // requests per second, every process
	a, c        float64       // seconds
	batch       int
	limit       int       // the most items one call takes (0: unknown, an older infer)
	measured    int       // the largest call the fit rests on (0: unknown, an older infer)
	workers     float64   // calls the model makes at once, every process (capacity × t(batch) / batch)
	running     float64   // requests in calls at `at`, every process
	ahead       []float64 // per lane: requests of that lane and the lanes above it waiting, at `at`
	at          time.Time
	adm         admissions
	lanes       []laneState
	paused      bool // pause mode: the input is paused for this model
}

// prediction is the wait a request of one lane would have if admitted now.
type prediction struct {
	known bool          // from serving records (else: nothing to go by, or the watcher's fallback)
	wait  time.Duration // from now to its answer
	drain time.Duration // until the work ahead of it is served
	// idle is the wait with nothing ahead of it: one call of its own and
	// the hops after (0: not known).
	idle time.Duration
}

// noMeasure is the wait of a model that cannot be served (every circuit
// open): longer than any budget.
const noMeasure = time.Duration(math.MaxInt64 / 4)

// admissionMargin is how far before a serving measurement this process's
// admissions are counted as not in it yet: the hop to the lane topic.
const admissionMargin = 5 * time.Millisecond

// predict is the wait of a request of lane l admitted at now, for a process
// that owns share of the requests partitions (its admissions are that share
// of everybody's). A worker that frees takes everything queued up to the
// batch limit while the deadlines allow (a greedy window does; so does the
// adaptive policy, whose target b* is only its least batch under load): a
// request with fewer than the limit ahead of it rides one call with all of
// them. A longer backlog is served in batches of the target size on the
// model's workers: it waits for the full batches ahead, and then rides the
// batch after them with the rest. Either way it first waits for the calls
// running now (half of one, on average), and last for the hops after the
// model.
func (m *modelState) predict(l int, now time.Time, share float64) prediction {
	if !m.known {
		return prediction{}
	}
	if m.unavailable {
		return prediction{known: true, wait: noMeasure, drain: m.retryHint}
	}
	elapsed := max(0, now.Sub(m.at).Seconds())
	ahead := m.ahead[l] + m.adm.since(m.at.Add(-admissionMargin), now, l)/max(share, 1e-3)
	// What the model served since the measure: the calls running then,
	// then the waiting requests.
	served := m.capacity * elapsed
	running := max(0, m.running-served)
	ahead = max(0, ahead-max(0, served-m.running))
	drain := (ahead + running) / m.capacity
	b := float64(max(1, m.batch))
	if n := ahead + 1; n > b && n <= float64(m.limit) {
		b = n // one call takes them all
	}
	cost := m.cost
	workers := max(1, m.workers)
	residual := 0.0
	if running > 0 {
		residual = cost(running/workers) / 2
	}
	full := math.Floor(ahead / b)
	wait := residual + full*cost(b)/workers + cost(ahead-full*b+1) + m.cfg.Downstream.Seconds()
	return prediction{known: true, wait: seconds(wait), drain: seconds(drain), idle: seconds(cost(1) + m.cfg.Downstream.Seconds())}
}

// cost is what a call of n items costs by the serving records' fit, with
// no economy of scale promised beyond the largest call measured.
func (m *modelState) cost(n float64) float64 { return pressure.CallCost(m.a, m.c, m.measured, n) }

func seconds(s float64) time.Duration {
	if s > noMeasure.Seconds() {
		return noMeasure
	}
	return time.Duration(s * float64(time.Second))
}

// serve sets the serving view from the model's fresh serving records.
func (m *modelState) serve(recs []*schemas.Pressure, lanes []Lane) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.known, m.unavailable, m.capacity, m.retryHint, m.running = false, false, 0, 0, 0
	if len(recs) == 0 {
		return
	}
	backlog := make([]float64, len(lanes))
	var at time.Time
	var best float64
	down, up := 0, 0
	procs := map[string]bool{}
	for _, p := range recs {
		if t := time.UnixMilli(p.AtMs); at.IsZero() || t.Before(at) {
			at = t
		}
		for i, l := range lanes {
			if l.Name == p.Lane {
				backlog[i] += float64(p.Backlog)
			}
		}
		if procs[p.Instance] {
			continue // its capacity is the same on every lane's record
		}
		procs[p.Instance] = true
		m.running += float64(p.Running)
		switch p.Status {
		case pressure.StatusUnavailable:
			down++
			m.retryHint = max(m.retryHint, time.Duration(p.RetryAfterMs)*time.Millisecond)
		case pressure.StatusOK:
			up++
			m.capacity += p.CapacityPerSecond
			if p.CapacityPerSecond > best {
				best = p.CapacityPerSecond
				m.a, m.c, m.batch, m.limit = p.FixedMs/1000, p.PerItemMs/1000, int(p.Batch), int(p.BatchLimit)
				m.measured = int(p.BatchMeasured)
			}
		}
	}
	switch {
	case up > 0 && m.capacity > 0:
		m.known = true
	case down > 0 && up == 0:
		m.known, m.unavailable = true, true
	default:
		return // nothing measured yet: no prediction
	}
	m.at = at
	m.workers = 1
	if t := m.cost(float64(max(1, m.batch))); m.batch > 0 && t > 0 {
		m.workers = m.capacity * t / float64(m.batch)
	}
	for i := range backlog {
		m.ahead[i] = backlog[i]
		if i > 0 {
			m.ahead[i] += m.ahead[i-1]
		}
	}
}

// budget is what is left of a request's effective deadline at now; ok
// false when it has none.
func budget(h *schemas.RequestHead, objective time.Duration, now time.Time) (time.Duration, bool) {
	var due time.Time
	if h.DeadlineMs > 0 {
		due = time.UnixMilli(h.DeadlineMs)
	}
	if objective > 0 && h.CreatedAtMs > 0 {
		if d := time.UnixMilli(h.CreatedAtMs).Add(objective); due.IsZero() || d.Before(due) {
			due = d
		}
	}
	if due.IsZero() {
		return 0, false
	}
	return due.Sub(now), true
}

// verdict is admission's decision about one request.
type verdict struct {
	admit bool
	// expired: its effective deadline passed before it reached dedup (it
	// waited in Kafka), or too little of it is left for even an idle model
	// (ReasonDeadlineUnreachable): answered EXPIRED with this reason, as
	// infer would, not REJECTED: the wait it could not afford was behind
	// it, not ahead.
	expired    string
	lane       int
	wait       time.Duration // predicted
	budget     time.Duration
	bar        time.Duration // budget × the lane's wait fraction
	retryAfter time.Duration
}

// decide admits or rejects a request of lane l at now (reject mode), and
// counts the decision. inferLag and emitLag are the lag watcher's
// measures, less DownstreamNoise (0: not behind, or not measured).
func (m *modelState) decide(h *schemas.RequestHead, l int, lane Lane, now time.Time, share float64, inferLag, emitLag time.Duration) verdict {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := verdict{admit: true, lane: l}
	st := &m.lanes[l]
	if st.shedding && now.Sub(st.lastReject) > quietToRecover {
		st.shedding = false
	}
	b, has := budget(h, m.cfg.Objective, now)
	if m.cfg.Mode != AdmissionReject || !has {
		m.admitLocked(now, l)
		return v
	}
	if b <= 0 {
		v.admit, v.expired = false, "objective_passed"
		if h.DeadlineMs > 0 && !time.UnixMilli(h.DeadlineMs).After(now) {
			v.expired = "deadline_passed"
		}
		return v
	}
	p := m.predict(l, now, share)
	switch {
	case !p.known && inferLag <= 0:
		// Nothing to go by: admitted, as before admission existed.
		m.admitLocked(now, l)
		return v
	case !p.known:
		// No serving record, but infer far behind by the watcher's
		// measure (stopped, cut off from the pressure topic).
		p = prediction{known: true, wait: inferLag + emitLag + m.cfg.Downstream, drain: inferLag}
	case p.wait < noMeasure:
		p.wait += emitLag // emit's backlog is ahead of every answer
	}
	frac := lane.WaitFraction
	if frac <= 0 {
		frac = 1
	}
	limit := time.Duration(float64(b) * frac)
	v.wait, v.budget, v.bar = p.wait, b, limit
	if p.idle > limit {
		// Late, not overloaded: with nothing ahead of it the model would
		// still answer after the bar (it spent its budget before it got
		// here, in Kafka or on its way). Load has nothing to do with it, so
		// the lane does not start shedding, and clients are not told to
		// back off: a lane that shed after one late request rejected the
		// requests after it that would have made it (on Kafka, in the first
		// seconds of a deployment, at 50 requests/s).
		v.admit, v.expired, v.wait = false, ReasonDeadlineUnreachable, p.idle
		return v
	}
	if st.shedding {
		limit = time.Duration(float64(limit) * (1 - Hysteresis))
	}
	if p.wait <= limit {
		m.admitLocked(now, l)
		return v
	}
	v.admit = false
	v.retryAfter = max(p.drain, time.Millisecond)
	st.shedding, st.lastReject = true, now
	st.rejected++
	return v
}

func (m *modelState) admitLocked(now time.Time, l int) {
	m.adm.add(now, l, len(m.lanes))
	m.lanes[l].admitted++
}

// laneView is a lane's state as published and exported.
type laneView struct {
	status     string
	wait       time.Duration // for a request made now (a budget of the whole objective)
	retryAfter time.Duration
	shed       float64
}

// view is the state of lane l at now, for the pressure topic and the
// metrics; publishing (reset) starts a new interval of the shed fraction.
func (m *modelState) view(l int, now time.Time, share float64, emitLag time.Duration, reset bool) laneView {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := &m.lanes[l]
	if st.shedding && now.Sub(st.lastReject) > quietToRecover {
		st.shedding = false
	}
	p := m.predict(l, now, share)
	v := laneView{wait: p.wait, shed: st.shed}
	if p.known && p.wait < noMeasure {
		v.wait += emitLag
	}
	switch {
	case m.cfg.Mode == AdmissionPause && m.paused:
		v.status, v.retryAfter = pressure.StatusPaused, p.drain
	case !p.known:
		v.status = pressure.StatusUnknown
	case st.shedding:
		v.status, v.retryAfter = pressure.StatusShedding, max(p.drain, time.Millisecond)
	case m.cfg.Objective > 0 && v.wait > m.cfg.Objective/2:
		v.status = pressure.StatusBusy
	default:
		v.status = pressure.StatusOK
	}
	if reset {
		st.shed = shedFraction(st.shed, st.admitted, st.rejected, st.shedding)
		st.admitted, st.rejected = 0, 0
		v.shed = st.shed
	}
	return v
}

// shedFraction is the fraction of a lane's requests clients should refuse
// before producing, from the last one published (was) and what dedup
// admitted and rejected since. Clients that honour it refused was of their
// requests, and dedup still rejected the fraction r of what came: of the
// demand, 1 - (1-was)(1-r) is more than can be served, which is the new
// fraction. Once nothing is rejected, it halves at every publication
// (clients may be refusing more than they need to: there is no other way
// to find out), and is 0 below 1%.
func shedFraction(was float64, admitted, rejected int, shedding bool) float64 {
	if rejected > 0 {
		r := float64(rejected) / float64(admitted+rejected)
		return min(1, 1-(1-was)*(1-r))
	}
	if shedding {
		return was
	}
	if was /= 2; was < 0.01 {
		return 0
	}
	return was
}

// overloadMessage says why a request was rejected: the stage, the model,
// the lane, and the numbers.
func overloadMessage(model, lane string, v verdict) string {
	return fmt.Sprintf("dedup: model %s is overloaded: a %s request admitted now would be answered in about %v, after its deadline (%v left); retry after %v",
		model, lane, v.wait.Round(time.Millisecond), max(0, v.budget).Round(time.Millisecond), v.retryAfter.Round(time.Millisecond))
}

// lateMessage says why a request was answered EXPIRED deadline_unreachable
// at admission.
func lateMessage(model, lane string, v verdict) string {
	return fmt.Sprintf("dedup: %v of the request's deadline was left when it arrived (the %s lane's bar: %v), and model %s answers in about %v with nothing queued",
		max(0, v.budget).Round(time.Millisecond), lane, max(0, v.bar).Round(time.Millisecond), model, v.wait.Round(time.Millisecond))
}
