// Package sim is the simulated model backend: a batch of b items costs
// t(b) = a + c·b (slept, or spun to burn a core like a CPU model), answers
// deterministically, and fails on demand: transient errors at a rate,
// poison inputs that always fail, and outage windows. It is how asyncinfer
// is demonstrated, tested and benchmarked without a model server.
package sim

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

// PoisonParam is the request parameter that makes the simulated model fail
// any batch holding the request (a boolean true).
const PoisonParam = "sim.poison"

// ErrUnavailable is the transient error of an outage or an injected fault.
var ErrUnavailable = errors.New("sim: model unavailable")

// ErrPoison is the permanent error of a batch holding a poison input.
var ErrPoison = errors.New("sim: poison input")

// Outage is a window, relative to the model's start, in which every call
// fails with ErrUnavailable.
type Outage struct {
	Start    time.Duration
	Duration time.Duration
}

// Config is the simulated model.
type Config struct {
	Fixed     time.Duration // a: cost of any call
	PerItem   time.Duration // c: cost of each item
	Spin      bool          // burn CPU for the cost instead of sleeping
	ErrorRate float64       // probability that a call fails transiently
	Outages   []Outage
	Seed      uint64 // for the error draws; 0: fixed default
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Fixed < 0 || c.PerItem < 0 {
		errs = append(errs, fmt.Errorf("cost a=%v c=%v must not be negative", c.Fixed, c.PerItem))
	}
	if !(c.ErrorRate >= 0 && c.ErrorRate < 1) { // also NaN
		errs = append(errs, fmt.Errorf("error rate %v must be in [0, 1)", c.ErrorRate))
	}
	for i, o := range c.Outages {
		if o.Start < 0 || o.Duration <= 0 {
			errs = append(errs, fmt.Errorf("outage %d: start %v, duration %v", i, o.Start, o.Duration))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	return nil
}

// Model is a simulated model. It is safe for concurrent use; concurrent
// calls run in parallel as separate model instances would.
type Model struct {
	cfg   Config
	start time.Time
	mu    sync.Mutex
	rng   *rand.Rand
	calls atomic.Int64
	items atomic.Int64
	// late is how late the model's timers fire lately, in nanoseconds (a
	// moving average): a sleeping model sleeps that much less, so that its
	// calls take t(b) on average instead of t(b) plus the timer's slack
	// (about 1 ms at a batch of one on a loaded 2-core machine).
	late atomic.Int64
}

// New returns a simulated model; its outage windows count from now.
func New(cfg Config) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = 0x5eed
	}
	return &Model{cfg: cfg, start: time.Now(), rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}, nil
}

// Calls and Items count the calls made and the items they carried.
func (m *Model) Calls() int64 { return m.calls.Load() }

// Items counts the items of all calls.
func (m *Model) Items() int64 { return m.items.Load() }

// Cost is t(b) = a + c·b.
func (m *Model) Cost(b int) time.Duration { return m.cfg.Fixed + time.Duration(b)*m.cfg.PerItem }

// Infer runs a batch: one list of output tensors per request, in order.
func (m *Model) Infer(ctx context.Context, batch []*schemas.Request) ([][]schemas.Tensor, error) {
	m.calls.Add(1)
	m.items.Add(int64(len(batch)))
	since := time.Since(m.start)
	for _, o := range m.cfg.Outages {
		if since >= o.Start && since < o.Start+o.Duration {
			return nil, pipeline.Transient(ErrUnavailable)
		}
	}
	if m.cfg.ErrorRate > 0 {
		m.mu.Lock()
		fail := m.rng.Float64() < m.cfg.ErrorRate
		m.mu.Unlock()
		if fail {
			if err := m.burn(ctx, m.cfg.Fixed); err != nil {
				return nil, err
			}
			return nil, pipeline.Transient(ErrUnavailable)
		}
	}
	if err := m.burn(ctx, m.Cost(len(batch))); err != nil {
		return nil, err
	}
	// A call's outputs share their backing arrays (cut with full slice
	// expressions, so that growing one cannot reach the next), and the
	// shape, which nothing writes: three allocations a call, not three an
	// item. The simulation stands for a model's cost, which it spends in
	// burn, not for its allocations.
	out := make([][]schemas.Tensor, len(batch))
	ts := make([]schemas.Tensor, len(batch))
	sums := make([]float64, len(batch))
	shape := []int64{1}
	for i, r := range batch {
		if p, ok := r.Parameters[PoisonParam].(bool); ok && p {
			return nil, fmt.Errorf("%w: request %s", ErrPoison, r.RequestID)
		}
		sums[i] = sum(r.Inputs)
		ts[i] = schemas.Tensor{Name: "sum", Datatype: "FP64", Shape: shape, FP64: sums[i : i+1 : i+1]}
		out[i] = ts[i : i+1 : i+1]
	}
	return out, nil
}

func (m *Model) burn(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	if m.cfg.Spin {
		end := time.Now().Add(d)
		x := 1.0
		for time.Now().Before(end) {
			for i := 0; i < 1000; i++ {
				x = math.Sqrt(x + 1)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		_ = x
		return nil
	}
	sleep := shorten(d, time.Duration(m.late.Load()))
	start := time.Now()
	t := time.NewTimer(sleep)
	defer t.Stop()
	select {
	case <-t.C:
		m.late.Store(int64(lateness(time.Duration(m.late.Load()), time.Since(start)-sleep)))
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// shorten is the sleep for a cost d when timers fire late by about late:
// never under half the cost, so a burst of lateness (a stalled machine)
// cannot make calls free.
func shorten(d, late time.Duration) time.Duration { return max(d/2, d-late) }

// lateness is the moving average of how late timers fire, after one fired
// over late (a weight of 1/8, so it follows the machine's load in a few
// calls).
func lateness(avg, over time.Duration) time.Duration {
	over = max(0, over)
	return avg + (over-avg)/8
}

// sum is the model's deterministic answer: the sum of every numeric element
// of the inputs (raw data read little-endian by datatype).
func sum(ts []schemas.Tensor) float64 {
	var s float64
	for _, t := range ts {
		for _, v := range t.FP32 {
			s += float64(v)
		}
		for _, v := range t.FP64 {
			s += v
		}
		for _, v := range t.Int32 {
			s += float64(v)
		}
		for _, v := range t.Int64 {
			s += float64(v)
		}
		s += rawSum(t.Datatype, t.Raw)
	}
	return s
}

func rawSum(dt string, b []byte) float64 {
	var s float64
	le32 := func(b []byte) uint32 { return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24 }
	le64 := func(b []byte) uint64 { return uint64(le32(b)) | uint64(le32(b[4:]))<<32 }
	switch dt {
	case "FP32":
		for ; len(b) >= 4; b = b[4:] {
			s += float64(math.Float32frombits(le32(b)))
		}
	case "FP64":
		for ; len(b) >= 8; b = b[8:] {
			s += math.Float64frombits(le64(b))
		}
	case "INT32":
		for ; len(b) >= 4; b = b[4:] {
			s += float64(int32(le32(b)))
		}
	case "INT64":
		for ; len(b) >= 8; b = b[8:] {
			s += float64(int64(le64(b)))
		}
	}
	return s
}
