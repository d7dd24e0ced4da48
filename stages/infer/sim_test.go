package infer

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/asyncinfer/asyncinfer/schemas"
)

// The policy against generated arrivals, in virtual time: a queue, its
// policy and the executor in front of a simulated model whose call of b
// items takes exactly a + c·b (the reference's appendix simulator, with the
// stage's own code in the loop instead of a model of it). Every request's
// deadline is its arrival plus the objective L; the time from the model's
// answer to a visible result is taken as 0.

// load is one simulated run.
type load struct {
	a, c      time.Duration
	objective time.Duration
	workers   int
	maxItems  int
	batching  Batching
	maxWait   time.Duration
	// arrivals: Poisson at rate (per second) for duration, or at the rate
	// rateAt gives, read every rateStep, when set.
	rate     float64
	rateAt   func(since time.Duration) float64
	duration time.Duration
	// costAt, when set, is the model's a and c at a moment of the run (a
	// model whose cost drifts).
	costAt func(since time.Duration) (a, c time.Duration)
	seed   uint64
	// hop, when set, draws the time of one Kafka hop: a request's
	// created_at is two hops (client to dedup to infer) before it reaches
	// the queue, and its answer is visible two hops (infer to emit to the
	// client) after the model's; downstream is then the stage's
	// DownstreamLatency. Unset: requests are created as they reach the
	// queue and answered as the model answers.
	hop        func(*rand.Rand) time.Duration
	downstream time.Duration
	// conveyor, when set with hop, is the hop from dedup to the queue as
	// Kafka gives it under load: not each record on its own time but in
	// clumps, each delivery bringing everything produced since the one
	// before; it draws the time to the next delivery. A request is then
	// created one hop (client to dedup) before it is produced, and waits
	// for the next delivery.
	conveyor func(*rand.Rand) time.Duration
}

// kafkaConveyor is deliveries about every millisecond (a consumer polling
// a busy topic), and about four times a second a stall: a poll, a garbage
// collection or a descheduled process holding every record back for 8 ms
// at the median, 25 ms at p99 (log-normal, σ 0.5), as the hops of a
// pipeline sharing 2 cores with its broker do (docs/benchmarks.md: the raw
// chain's three hops at X* had a p99 of 20–44 ms).
func kafkaConveyor(r *rand.Rand) time.Duration {
	gap := time.Duration(r.ExpFloat64() * float64(time.Millisecond))
	if r.Float64() < 0.004 {
		gap += time.Duration(8e6 * math.Exp(0.5*r.NormFloat64()))
	}
	return gap
}

// kafkaHop is one hop as measured on Kafka on the benchmark's machine
// (docs/benchmarks.md, per-hop latency at 1,000/s): about 1 ms at the least,
// 2.5 ms at the median, a tail to 13 ms at p99 (1 ms + a log-normal of
// median 1.5 ms, σ 0.9).
func kafkaHop(r *rand.Rand) time.Duration {
	return time.Millisecond + time.Duration(1.5e6*math.Exp(0.9*r.NormFloat64()))
}

// answer is what happened to one request.
type answer struct {
	arrived time.Duration // since the start
	latency time.Duration // to its answer
	status  schemas.Status
	reason  string
}

// batchRecord is one batch the policy formed.
type batchRecord struct {
	at     time.Duration
	size   int
	reason flushReason
}

// fitRecord is the cost fit after a call.
type fitRecord struct {
	at   time.Duration
	a, c float64
}

type run struct {
	l       load
	answers []answer
	batches []batchRecord
	fits    []fitRecord
}

// simulate runs l in a synctest bubble.
func simulate(t *testing.T, l load) *run {
	t.Helper()
	res := &run{l: l}
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		since := func() time.Duration { return time.Since(start) }
		costOf := func(b int) time.Duration {
			a, c := l.a, l.c
			if l.costAt != nil {
				a, c = l.costAt(since())
			}
			return a + time.Duration(b)*c
		}
		cfg := ModelConfig{Name: "m", Backend: sleeper(costOf), MaxBatchItems: l.maxItems, MaxWait: l.maxWait,
			Batching: l.batching, Concurrency: l.workers, Objective: l.objective, DownstreamLatency: time.Nanosecond}
		if l.hop != nil {
			cfg.DownstreamLatency = l.downstream
		}
		hops := map[*schemas.Request][2]time.Duration{} // up, down; under mu
		cfg.setDefaults()
		m, _ := NewMetrics(nil)
		var mu sync.Mutex
		answered := 0
		record := func(it *item, res0 *schemas.Result) {
			mu.Lock()
			defer mu.Unlock()
			h := hops[it.req]
			res.answers = append(res.answers, answer{arrived: it.enqueued.Sub(start), latency: time.Since(it.enqueued) + h[0] + h[1],
				status: res0.Status, reason: res0.Reason})
			answered++
		}
		cs, limit := newCosts(), newBatchLimit(cfg.MaxBatchItems)
		ex := &executor{cfg: cfg, br: newBreaker(cfg.BreakerThreshold, cfg.BreakerCooldown, nil, nil), m: m,
			answer: record, drop: func(*item) { t.Error("nothing goes stale here") }, costs: cs, limit: limit}
		q := newQueue(1<<16, newPolicy(cfg, limit, cs), nil, ex.unreachable)
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		for range cfg.Concurrency {
			wg.Go(func() {
				for {
					b, why := q.take(ctx)
					if b == nil {
						return
					}
					mu.Lock()
					res.batches = append(res.batches, batchRecord{at: since(), size: len(b), reason: why})
					mu.Unlock()
					ex.run(ctx, b)
					if fm := cs.lookup(defaultVersion); fm != nil {
						a, c, _, _ := fm.estimate()
						mu.Lock()
						res.fits = append(res.fits, fitRecord{at: since(), a: a, c: c})
						mu.Unlock()
					}
				}
			})
		}
		rng := rand.New(rand.NewPCG(l.seed, 0x5eed))
		req := &schemas.Request{Model: "m"}
		offered := 0
		var pending []*item // produced, not yet delivered (conveyor); under mu
		if l.conveyor != nil {
			crng := rand.New(rand.NewPCG(l.seed, 0xc0)) // its own: the arrivals stay the same
			wg.Go(func() {
				for ctx.Err() == nil {
					time.Sleep(l.conveyor(crng))
					now := time.Now()
					mu.Lock()
					clump := pending
					pending = nil
					for _, it := range clump {
						h := hops[it.req]
						h[0] = now.Sub(time.UnixMilli(it.req.CreatedAtMs))
						hops[it.req] = h
						it.enqueued = now
					}
					mu.Unlock()
					for _, it := range clump {
						if !q.push(it) {
							t.Error("queue full")
						}
					}
				}
			})
		}
		for {
			rate := l.rate
			if l.rateAt != nil {
				rate = l.rateAt(since())
			}
			gap := time.Duration(rng.ExpFloat64() / rate * float64(time.Second))
			if l.rateAt != nil && gap > rateStep {
				// The rate may change before the gap is over: arrivals are
				// memoryless, so draw again, at the rate then.
				time.Sleep(rateStep)
				if since() >= l.duration {
					break
				}
				continue
			}
			time.Sleep(gap)
			if since() >= l.duration {
				break
			}
			now := time.Now()
			it := &item{req: req, size: 1, enqueued: now, deadline: now.Add(l.objective), byObjective: true}
			if l.hop != nil {
				up, down := l.hop(rng)+l.hop(rng), l.hop(rng)+l.hop(rng)
				if l.conveyor != nil {
					up = l.hop(rng) // and the conveyor's
				}
				created := now.Add(-up)
				it.req = &schemas.Request{Model: "m", CreatedAtMs: created.UnixMilli()}
				it.deadline = time.UnixMilli(it.req.CreatedAtMs).Add(l.objective)
				mu.Lock()
				hops[it.req] = [2]time.Duration{now.Sub(time.UnixMilli(it.req.CreatedAtMs)), down}
				if l.conveyor != nil {
					pending = append(pending, it)
					offered++
					mu.Unlock()
					continue
				}
				mu.Unlock()
			}
			if !q.push(it) {
				t.Fatal("queue full")
			}
			offered++
		}
		for waited := time.Duration(0); ; waited += time.Millisecond {
			mu.Lock()
			left := offered - answered
			mu.Unlock()
			if left == 0 {
				break
			}
			if waited > time.Minute {
				t.Fatalf("%d of %d requests never answered", left, offered)
			}
			time.Sleep(time.Millisecond)
		}
		cancel()
		wg.Wait()
	})
	return res
}

// rateStep is how often a varying arrival rate is read again.
const rateStep = 10 * time.Millisecond

// sleeper is a model whose call costs cost(b) of virtual time.
type sleeper func(b int) time.Duration

func (s sleeper) Infer(_ context.Context, batch []*schemas.Request) ([][]schemas.Tensor, error) {
	time.Sleep(s(len(batch)))
	return make([][]schemas.Tensor, len(batch)), nil
}

// window is the answers of requests that arrived in [from, to).
func (r *run) window(from, to time.Duration) []answer {
	var out []answer
	for _, a := range r.answers {
		if a.arrived >= from && a.arrived < to {
			out = append(out, a)
		}
	}
	return out
}

// ok: answered SUCCEEDED within the objective.
func (r *run) ok(a answer) bool {
	return a.status == schemas.StatusSucceeded && a.latency <= r.l.objective
}

// p99 of the latency of answers, a request not served counting as a miss
// (infinitely late), as the reference's simulator counts drops.
func (r *run) p99(as []answer) time.Duration {
	lat := make([]time.Duration, 0, len(as))
	for _, a := range as {
		if a.status != schemas.StatusSucceeded {
			lat = append(lat, time.Duration(math.MaxInt64))
			continue
		}
		lat = append(lat, a.latency)
	}
	if len(lat) == 0 {
		return 0
	}
	slices.Sort(lat)
	return lat[int(math.Ceil(0.99*float64(len(lat))))-1]
}

// fmtLatency prints a p99 where more than 1% missed as such.
func fmtLatency(d time.Duration) string {
	if d == time.Duration(math.MaxInt64) {
		return "∞ (over 1% not served)"
	}
	return d.Round(10 * time.Microsecond).String()
}

// goodput is requests answered within the objective per second of arrivals
// in [from, to).
func (r *run) goodput(from, to time.Duration) float64 {
	n := 0
	for _, a := range r.window(from, to) {
		if r.ok(a) {
			n++
		}
	}
	return float64(n) / (to - from).Seconds()
}

func (r *run) count(as []answer, reason string) int {
	n := 0
	for _, a := range as {
		if a.reason == reason {
			n++
		}
	}
	return n
}

// meanBatch is the mean batch size of the batches formed in [from, to).
func (r *run) meanBatch(from, to time.Duration) float64 {
	n, items := 0, 0
	for _, b := range r.batches {
		if b.at >= from && b.at < to {
			n++
			items += b.size
		}
	}
	if n == 0 {
		return 0
	}
	return float64(items) / float64(n)
}

// fitAt is the last cost fit before at.
func (r *run) fitAt(at time.Duration) fitRecord {
	var f fitRecord
	for _, x := range r.fits {
		if x.at > at {
			break
		}
		f = x
	}
	return f
}

func (r *run) reasons() map[string]int {
	out := map[string]int{}
	for _, b := range r.batches {
		out[b.reason.String()]++
	}
	return out
}

// xStar is the reference's bound: the most a worker serves with a p99
// within L, (1 − 2a/L)/c per second.
func xStar(a, c, l time.Duration) float64 {
	return (1 - 2*a.Seconds()/l.Seconds()) / c.Seconds()
}

// The adaptive policy against Poisson arrivals, a = 5ms, c = 0.25ms, L =
// 50ms (X* = (1 − 2a/L)/c = 3,200/s, b* = 80), one worker; every request
// counts, the first one included (the fit starts from nothing).
func TestSimAdaptive(t *testing.T) {
	const ms = time.Millisecond
	a, c, L := 5*ms, 250*time.Microsecond, 50*ms
	x := xStar(a, c, L)
	const d = 20 * time.Second
	t.Run("0.9 X*: p99 within L", func(t *testing.T) {
		r := simulate(t, load{a: a, c: c, objective: L, workers: 1, maxItems: 256, rate: 0.9 * x, duration: d, seed: 1})
		p99 := r.p99(r.answers)
		t.Logf("p99 %s, goodput %.0f/s (%.3f X*), mean batch %.1f, early drops %d of %d, flushes %v",
			fmtLatency(p99), r.goodput(0, d), r.goodput(0, d)/x, r.meanBatch(0, d), r.count(r.answers, ReasonDeadlineUnreachable), len(r.answers), r.reasons())
		if p99 > L {
			t.Errorf("p99 %s > L = %v", fmtLatency(p99), L)
		}
	})
	t.Run("two workers at 0.8 X*: p99 within L", func(t *testing.T) {
		// The reference's fluid approximation for K staggered workers:
		// X*_K = (K/c)(1 − a(K+1)/(K·L)) = 6,800/s.
		xk := 2 / c.Seconds() * (1 - a.Seconds()*3/(2*L.Seconds()))
		r := simulate(t, load{a: a, c: c, objective: L, workers: 2, maxItems: 256, rate: 0.8 * xk, duration: d, seed: 5})
		p99 := r.p99(r.answers)
		t.Logf("p99 %s, goodput %.0f/s (%.3f X*_2), mean batch %.1f, flushes %v", fmtLatency(p99), r.goodput(0, d), r.goodput(0, d)/xk, r.meanBatch(0, d), r.reasons())
		if p99 > L {
			t.Errorf("p99 %s > L = %v", fmtLatency(p99), L)
		}
	})
	t.Run("2 X*: goodput near X*, the rest dropped early", func(t *testing.T) {
		r := simulate(t, load{a: a, c: c, objective: L, workers: 1, maxItems: 256, rate: 2 * x, duration: d, seed: 2})
		good, drops := r.goodput(0, d), r.count(r.answers, ReasonDeadlineUnreachable)
		late := 0
		for _, an := range r.answers {
			if an.status == schemas.StatusSucceeded && an.latency > L {
				late++
			}
		}
		t.Logf("goodput %.0f/s (%.3f X*), early drops %d of %d (%.1f%%), served late %d, mean batch %.1f, flushes %v",
			good, good/x, drops, len(r.answers), 100*float64(drops)/float64(len(r.answers)), late, r.meanBatch(0, d), r.reasons())
		if good < 0.9*x {
			t.Errorf("goodput %.0f/s < 0.9 X* = %.0f/s", good, 0.9*x)
		}
		if drops == 0 {
			t.Error("no early drop at 2 X*")
		}
	})
}

// When batching barely helps (a ≈ c: 1ms + 1ms·b, L = 20ms), the adaptive
// policy is never worse than no batching at all (a window of one item), on
// the same arrivals: not a lower goodput, not a higher p99. (A fixed window
// of L/2 is, in the reference's simulation.)
func TestSimNeverWorseThanNoBatching(t *testing.T) {
	const ms = time.Millisecond
	a, c, L := ms, ms, 20*ms
	const d = 20 * time.Second
	for _, rate := range []float64{100, 300, 450, 600, 800, 1200} {
		adaptive := simulate(t, load{a: a, c: c, objective: L, workers: 1, maxItems: 256, rate: rate, duration: d, seed: 3})
		single := simulate(t, load{a: a, c: c, objective: L, workers: 1, maxItems: 1, batching: BatchingWindow, rate: rate, duration: d, seed: 3})
		ga, gs := adaptive.goodput(0, d), single.goodput(0, d)
		pa, ps := adaptive.p99(adaptive.answers), single.p99(single.answers)
		t.Logf("%4.0f/s: adaptive goodput %.0f/s p99 %s (mean batch %.2f); one at a time %.0f/s p99 %s",
			rate, ga, fmtLatency(pa), adaptive.meanBatch(0, d), gs, fmtLatency(ps))
		if ga < gs || pa > ps {
			t.Errorf("%.0f/s: adaptive goodput %.0f/s p99 %s, worse than one at a time: %.0f/s p99 %s", rate, ga, fmtLatency(pa), gs, fmtLatency(ps))
		}
	}
}

// A model whose cost doubles mid-run (a, c: 5ms, 0.25ms → 10ms, 0.5ms at
// 10 s; 1,000 requests/s, which is 0.31 X* before and 0.83 X* after) is
// followed within a few seconds: the fit, the batch sizes, and the latency
// objective still met.
func TestSimCostDoubles(t *testing.T) {
	const ms = time.Millisecond
	a, c, L := 5*ms, 250*time.Microsecond, 50*ms
	const change, d = 10 * time.Second, 20 * time.Second
	r := simulate(t, load{a: a, c: c, objective: L, workers: 1, maxItems: 256, rate: 1000, duration: d, seed: 4,
		costAt: func(s time.Duration) (time.Duration, time.Duration) {
			if s >= change {
				return 2 * a, 2 * c
			}
			return a, c
		}})
	before, after := r.fitAt(change), r.fitAt(change+time.Second)
	t.Logf("fit before: a %.2fms c %.3fms; 1 s after: a %.2fms c %.3fms", before.a*1e3, before.c*1e3, after.a*1e3, after.c*1e3)
	for _, f := range []struct {
		what      string
		got, want float64
	}{
		{"a before", before.a, a.Seconds()}, {"c before", before.c, c.Seconds()},
		{"a 1 s after", after.a, 2 * a.Seconds()}, {"c 1 s after", after.c, 2 * c.Seconds()},
	} {
		if math.Abs(f.got-f.want) > 0.1*f.want {
			t.Errorf("%s: %.3fms, want %.3fms ±10%%", f.what, f.got*1e3, f.want*1e3)
		}
	}
	bBefore, bAfter := r.meanBatch(change-5*time.Second, change), r.meanBatch(change+time.Second, d)
	p99After := r.p99(r.window(change+time.Second, d))
	t.Logf("mean batch %.1f before, %.1f after; p99 after %s, goodput after %.0f/s", bBefore, bAfter, fmtLatency(p99After), r.goodput(change+time.Second, d))
	// Greedy cycles: T = a/(1 − λc), b = λT: 6.7 before, 20 after.
	if bAfter < 2*bBefore {
		t.Errorf("mean batch %.1f before, %.1f after: want the batches to grow with the cost", bBefore, bAfter)
	}
	if p99After > L {
		t.Errorf("p99 %v after the change > L", p99After)
	}
}

// onOff is the reference's bursty load: on for an exponential 200ms, off for
// an exponential 600ms, peak at 4× mean; the same bursts for every policy.
func onOff(seed uint64, mean float64, d time.Duration) func(time.Duration) float64 {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	var edges []time.Duration
	for s := time.Duration(0); s < d; {
		on := time.Duration(rng.ExpFloat64() * 0.2 * float64(time.Second))
		off := time.Duration(rng.ExpFloat64() * 0.6 * float64(time.Second))
		edges = append(edges, s, s+on)
		s += on + off
	}
	return func(s time.Duration) float64 {
		i, _ := slices.BinarySearch(edges, s+1)
		if i%2 == 1 { // inside [edges[i-1], edges[i])
			return 4 * mean
		}
		return 1e-6
	}
}

// Bursty arrivals (the reference's S3 regimes): the adaptive policy is
// within 5% of the best fixed window in every regime, in the fraction of
// requests answered within L and, where a window keeps p99 within L, in
// p99; fixed windows of 0 (greedy), L/10, L/4 and L/2 on the same bursts.
func TestSimBursts(t *testing.T) {
	const ms = time.Millisecond
	a, c, L := 5*ms, 250*time.Microsecond, 50*ms
	x := xStar(a, c, L)
	const d = 30 * time.Second
	type regime struct {
		mean float64
		hops bool // Kafka's hops around the stage (kafkaHop)
	}
	for _, g := range []regime{{0.1, false}, {0.2, false}, {0.3, false}, {0.5, false}, {0.2, true}, {0.3, true}, {0.5, true}} {
		mean := g.mean
		rateAt := onOff(11, mean*x, d)
		measure := func(batching Batching, wait time.Duration) (time.Duration, float64) {
			l := load{a: a, c: c, objective: L, workers: 1, maxItems: 256, batching: batching, maxWait: wait,
				duration: d, seed: 9, rateAt: rateAt}
			if g.hops {
				l.hop, l.downstream = kafkaHop, 10*ms
			}
			r := simulate(t, l)
			ok := 0
			for _, an := range r.answers {
				if r.ok(an) {
					ok++
				}
			}
			return r.p99(r.answers), float64(ok) / float64(len(r.answers))
		}
		p99, inSLO := measure(BatchingAdaptive, 0)
		bestP99, bestIn, line := time.Duration(math.MaxInt64), 0.0, ""
		for _, w := range []time.Duration{0, L / 10, L / 4, L / 2} {
			wp, wi := measure(BatchingWindow, w)
			bestP99, bestIn = min(bestP99, wp), max(bestIn, wi)
			line += fmt.Sprintf("; W=%v: p99 %s, in-SLO %.3f", w, fmtLatency(wp), wi)
		}
		t.Logf("mean %.1f X*, hops %t: adaptive p99 %s, in-SLO %.3f%s", mean, g.hops, fmtLatency(p99), inSLO, line)
		if inSLO < 0.95*bestIn {
			t.Errorf("mean %.1f X*, hops %t: adaptive answers %.3f within L, the best window %.3f", mean, g.hops, inSLO, bestIn)
		}
		if bestP99 <= L && float64(p99) > 1.05*float64(bestP99) {
			t.Errorf("mean %.1f X*, hops %t: adaptive p99 %s, the best window %s", mean, g.hops, fmtLatency(p99), fmtLatency(bestP99))
		}
	}
}

// The most a policy serves with a p99 within L (drops count as misses),
// found by bisection: the reference's S2 efficiency, in virtual time. Opt
// in (about 10 s of CPU): ASYNCINFER_SIM_SWEEP=1.
func TestSimMaxRate(t *testing.T) {
	if os.Getenv("ASYNCINFER_SIM_SWEEP") == "" {
		t.Skip("set ASYNCINFER_SIM_SWEEP=1 to run the sweep")
	}
	const ms = time.Millisecond
	maxRate := func(l load, hi float64) float64 {
		lo := 0.0
		for range 9 {
			l.rate = (lo + hi) / 2
			r := simulate(t, l)
			if r.p99(r.window(2*time.Second, l.duration)) <= l.objective {
				lo = l.rate
			} else {
				hi = l.rate
			}
		}
		return lo
	}
	for _, m := range []struct {
		a, c, L time.Duration
		want    float64 // adaptive's least share of X*
	}{
		{5 * ms, 250 * time.Microsecond, 50 * ms, 0.95},
		{500 * time.Microsecond, 200 * time.Microsecond, 20 * ms, 0.95},
		{ms, ms, 20 * ms, 0.80}, // the closed form over-estimates when batches are small
	} {
		x := xStar(m.a, m.c, m.L)
		base := load{a: m.a, c: m.c, objective: m.L, workers: 1, maxItems: 256, duration: 15 * time.Second, seed: 7}
		window := func(items int, wait time.Duration) load {
			l := base
			l.batching, l.maxItems, l.maxWait = BatchingWindow, items, wait
			return l
		}
		adaptive := maxRate(base, 1.2*x)
		greedy := maxRate(window(256, 0), 1.2*x)
		quarter := maxRate(window(256, m.L/4), 1.2*x)
		single := maxRate(window(1, 0), 1.2*x)
		t.Logf("a=%v c=%v L=%v, X* %.0f/s: adaptive %.0f (%.3f X*), greedy %.0f (%.3f), window L/4 %.0f (%.3f), one at a time %.0f",
			m.a, m.c, m.L, x, adaptive, adaptive/x, greedy, greedy/x, quarter, quarter/x, single)
		if adaptive < m.want*x || adaptive < greedy || adaptive < quarter || adaptive < single {
			t.Errorf("adaptive %.0f/s: want at least %.2f X* and every fixed policy", adaptive, m.want)
		}
	}
}

// Overload, then relief (the reference's S4): 2 X* for 10 s, then 0.5 X*.
// During the overload the goodput stays at least 0.9 X*; after it, the
// last request to miss L arrived within 2L of its end: the queue early
// drop kept short is served at once.
func TestSimOverloadRecovery(t *testing.T) {
	const ms = time.Millisecond
	a, c, L := 5*ms, 250*time.Microsecond, 50*ms
	x := xStar(a, c, L)
	const end, d = 10 * time.Second, 20 * time.Second
	r := simulate(t, load{a: a, c: c, objective: L, workers: 1, maxItems: 256, duration: d, seed: 6,
		rateAt: func(s time.Duration) float64 { return pick(s < end, 2*x, 0.5*x) }})
	var lastMiss time.Duration
	for _, an := range r.answers {
		if !r.ok(an) && an.arrived > lastMiss {
			lastMiss = an.arrived
		}
	}
	good := r.goodput(0, end)
	t.Logf("goodput during overload %.0f/s (%.3f X*); last miss %v after its end; p99 after it %s",
		good, good/x, lastMiss-end, fmtLatency(r.p99(r.window(end, d))))
	if good < 0.9*x {
		t.Errorf("goodput %.0f/s during the overload, want at least 0.9 X* = %.0f/s", good, 0.9*x)
	}
	if lastMiss-end > 2*L {
		t.Errorf("a request that arrived %v after the overload ended missed L: recovery over 2L", lastMiss-end)
	}
}

// Overload with Kafka's hops around the stage (kafkaHop: two before the
// queue, two after the model, DownstreamLatency 10ms): at 2 X* the
// requests FIFO serves are those at the edge of their deadline, so without
// a margin the hops after the model made 16% of what was served late
// (goodput 0.74 X*). The ceiling here is below X*: the hops take about 13
// ms of L, and the budget left, L − 10ms − the hops before (about 6.5ms),
// serves at most (1 − 2a/33.5ms)/c = 0.88 X*.
func TestSimOverloadWithHops(t *testing.T) {
	const ms = time.Millisecond
	a, c, L := 5*ms, 250*time.Microsecond, 50*ms
	x := xStar(a, c, L)
	const d = 15 * time.Second
	r := simulate(t, load{a: a, c: c, objective: L, workers: 1, maxItems: 128, rate: 2 * x, duration: d, seed: 9,
		hop: kafkaHop, downstream: 10 * ms})
	served, late := 0, 0
	for _, an := range r.window(2*time.Second, d) {
		if an.status == schemas.StatusSucceeded {
			served++
			if an.latency > L {
				late++
			}
		}
	}
	good := r.goodput(2*time.Second, d)
	t.Logf("goodput %.0f/s (%.3f X*), served %d, late %d (%.1f%%), mean batch %.1f, early drops %d of %d",
		good, good/x, served, late, 100*float64(late)/float64(served), r.meanBatch(0, d),
		r.count(r.answers, ReasonDeadlineUnreachable), len(r.answers))
	if good < 0.8*x {
		t.Errorf("goodput %.0f/s with hops at 2 X*, want at least 0.8 X* = %.0f/s", good, 0.8*x)
	}
	if float64(late) > 0.05*float64(served) {
		t.Errorf("%d of %d served late: want at most 5%%", late, served)
	}
}

// The most a policy serves with a p99 within L when Kafka delivers the
// requests in clumps (kafkaConveyor) and the hops after the model take
// kafkaHop twice: S2 as the benchmark meets it. Opt in (about 20 s of
// CPU): ASYNCINFER_SIM_SWEEP=1.
func TestSimMaxRateClumps(t *testing.T) {
	if os.Getenv("ASYNCINFER_SIM_SWEEP") == "" {
		t.Skip("set ASYNCINFER_SIM_SWEEP=1 to run the sweep")
	}
	const ms = time.Millisecond
	a, c, L := 5*ms, 250*time.Microsecond, 50*ms
	x := xStar(a, c, L)
	base := load{a: a, c: c, objective: L, workers: 1, maxItems: 128, duration: 15 * time.Second, seed: 7,
		hop: kafkaHop, downstream: 10 * ms, conveyor: kafkaConveyor}
	maxRate := func(l load) (float64, string) {
		lo, hi, why := 0.0, 1.2*x, ""
		for range 8 {
			l.rate = (lo + hi) / 2
			r := simulate(t, l)
			w := r.window(2*time.Second, l.duration)
			if r.p99(w) <= l.objective {
				lo = l.rate
			} else {
				hi = l.rate
				late := 0
				for _, an := range w {
					if an.status == schemas.StatusSucceeded && an.latency > L {
						late++
					}
				}
				why = fmt.Sprintf("at %.0f/s: %d early drops, %d late of %d", l.rate, r.count(w, ReasonDeadlineUnreachable), late, len(w))
			}
		}
		return lo, why
	}
	window := func(wait time.Duration) load {
		l := base
		l.batching, l.maxWait = BatchingWindow, wait
		return l
	}
	adaptive, wa := maxRate(base)
	tenth, wt := maxRate(window(L / 10))
	greedy, wg := maxRate(window(0))
	t.Logf("X* %.0f/s: adaptive %.0f (%.3f X*; %s), window L/10 %.0f (%.3f; %s), greedy %.0f (%.3f; %s)",
		x, adaptive, adaptive/x, wa, tenth, tenth/x, wt, greedy, greedy/x, wg)
	if adaptive < 0.95*max(tenth, greedy) {
		t.Errorf("adaptive %.0f/s: below 0.95× the best fixed window", adaptive)
	}
}
