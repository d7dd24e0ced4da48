package suite

import (
	"math"
	"math/rand/v2"
	"sort"
)

// Cost is a model's cost, t(b) = A + C·b seconds for a batch of b, and its
// batch limit.
type Cost struct {
	A, C float64
	Bmax int
}

// t is the time a batch of b takes.
func (m Cost) t(b int) float64 { return m.A + m.C*float64(b) }

// XStar is the closed-form limit of one worker under a worst-case latency
// objective L: (1 − 2a/L)/c (reference §1), reached with batches of
// b* = (L/2 − a)/c.
func (m Cost) XStar(L float64) float64 {
	if m.C <= 0 {
		return math.Inf(1)
	}
	return (1 - 2*m.A/L) / m.C
}

// policyKind is how the simulated worker forms batches.
type policyKind int

const (
	simGreedy    policyKind = iota // take what is queued, up to Bmax, when the worker frees
	simEarlyDrop                   // greedy, dropping at the head what cannot make its deadline (Nexus)
	simWindow                      // wait until Bmax are queued or the oldest waited Wait (Triton's max_queue_delay)
	simOne                         // one request per call
)

// simPolicy is a batching policy of the simulated worker.
type simPolicy struct {
	kind policyKind
	wait float64 // simWindow: the window
	// budget is the deadline of a request, from its arrival, that
	// simEarlyDrop serves for: the objective less the hops' latency.
	budget float64
}

// simulate runs one model worker over the arrivals (seconds, sorted) and
// returns each request's time from arrival to the model's answer; +Inf for
// a request dropped. It is the simulator of the reference's appendix: the
// queue is FIFO and early drop only drops at its head, so the queue is
// always the arrivals [head, next).
func simulate(arr []float64, m Cost, p simPolicy) []float64 {
	n := len(arr)
	lat := make([]float64, n)
	bmax := max(1, m.Bmax)
	bstar := bmax
	if p.kind == simEarlyDrop && m.C > 0 {
		bstar = max(1, min(bmax, int((p.budget/2-m.A)/m.C)))
	}
	now := 0.0
	head, next := 0, 0
	for head < n {
		if head == next {
			now = math.Max(now, arr[next])
			next++
		}
		for next < n && arr[next] <= now {
			next++
		}
		switch p.kind {
		case simEarlyDrop:
			for head < next && now+m.t(min(next-head, bstar)) > arr[head]+p.budget {
				lat[head] = math.Inf(1)
				head++
			}
			if head == next {
				continue
			}
		case simWindow:
			if next-head < bmax && now < arr[head]+p.wait {
				t := arr[head] + p.wait
				if fill := head + bmax - 1; fill < n && arr[fill] < t {
					t = arr[fill]
				}
				now = t
				continue
			}
		}
		b := min(next-head, bmax)
		switch p.kind {
		case simOne:
			b = 1
		case simEarlyDrop:
			slack := bmax
			if m.C > 0 {
				slack = int((arr[head] + p.budget - now - m.A) / m.C)
			}
			b = max(1, min(b, max(slack, bstar)))
		}
		done := now + m.t(b)
		for j := head; j < head+b; j++ {
			lat[j] = done - arr[j]
		}
		head += b
		now = done
	}
	return lat
}

// Oracle is the best any batching policy could do with this model and these
// Kafka hops: one simulated worker with the measured cost, each request's
// latency the worker's plus a latency drawn from the raw chain's measured
// end-to-end latencies (the hops every request takes whatever the policy).
type Oracle struct {
	Cost Cost
	L    float64   // the objective, seconds
	Hop  []float64 // measured raw-chain latencies, seconds, sorted
}

// hopP99 is the hops' p99 (0 without measurements).
func (o Oracle) hopP99() float64 {
	if len(o.Hop) == 0 {
		return 0
	}
	return percentile(o.Hop, 0.99)
}

// latencies are the end-to-end latencies (seconds) of the arrivals under a
// policy: the worker's plus a hop latency drawn with a fixed seed, so that
// two policies see the same hop draws.
func (o Oracle) latencies(arr []float64, p simPolicy) []float64 {
	if p.kind == simEarlyDrop && p.budget == 0 {
		p.budget = o.L - o.hopP99()
	}
	lat := simulate(arr, o.Cost, p)
	if len(o.Hop) > 0 {
		rng := rand.New(rand.NewPCG(7, 11))
		for i := range lat {
			lat[i] += o.Hop[rng.IntN(len(o.Hop))]
		}
	}
	return lat
}

// p99 of the arrivals under a policy, seconds; drops count as misses.
func (o Oracle) p99(arr []float64, p simPolicy) float64 {
	lat := o.latencies(arr, p)
	sort.Float64s(lat)
	return percentile(lat, 0.99)
}

// capacity is the highest rate (of the arrival process gen draws) whose
// p99 under the policy is within the objective, by bisection between lo
// and hi (req/s), to 0.5%; 0 when not even lo is (the hops alone take more
// than the objective).
func (o Oracle) capacity(p simPolicy, gen func(rate float64) []float64, lo, hi float64) float64 {
	if o.p99(gen(lo), p) > o.L {
		return 0
	}
	for hi/lo > 1.005 {
		mid := math.Sqrt(lo * hi)
		if o.p99(gen(mid), p) <= o.L {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}
