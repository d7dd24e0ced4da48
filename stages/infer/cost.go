package infer

import (
	"math"
	"sync"
	"time"
)

// costModel is the online fit of what a call of b items costs a model,
// t(b) = a + c·b, from the calls the model made: a weighted least-squares
// fit over exponentially decaying sums. The adaptive batcher sizes batches
// and decides whom to drop from it.
//
//   - It decays: every sample's weight halves every costHalfLife (but never
//     faster than about costMinMemory calls, so a model called rarely is
//     not fitted to its last call alone): a drifting cost is followed.
//   - It notices a change of regime (a model whose cost doubled: a new
//     version, a neighbour on the GPU): when the recent calls are off the
//     fit on one side (an exponentially weighted mean of their relative
//     residuals beyond costShift), the old samples are dropped and the fit
//     starts over from the new calls. Decay alone would take many
//     half-lives: old samples at other batch sizes have leverage.
//   - It is robust: once it rests on costRobustAfter calls, a sample far
//     from the fit (a GC pause, a slow network call) weighs less, in
//     proportion to how far it is beyond max(3·scale, t̂/2) of the fit
//     (Huber), scale being the mean absolute residual.
//   - It is regularized: when every call had about the same size, c is not
//     identifiable; it is pulled towards the cost per item of a line through
//     the origin (a = 0: the whole cost scales with the batch), the pessimistic
//     reading, so a surge explores larger batches carefully instead of
//     sending one that cannot make anybody's deadline. At the size the calls
//     had, that line is the measured cost, which is what the batcher's
//     decisions near it need.
//   - Before its first sample it knows nothing (ok false): the batcher is
//     then greedy, drops nobody and waits for nothing.
//
// Callers leave out what does not measure the model at the batch's size:
// calls made by splitting a failing batch, retries, cancelled calls, errors.
type costModel struct {
	mu                       sync.Mutex
	last                     time.Time // newest sample
	s0, s1, s2, sy, sby, sab float64   // decayed Σw, Σw·b, Σw·b², Σw·t, Σw·b·t, Σw·|residual|
	bias                     float64   // recent relative residuals, signed
	a, c                     float64   // the fit, seconds
	top                      int       // the largest call measured since the last restart
	restarts                 int       // changes of regime noticed
}

const (
	costHalfLife    = 2 * time.Second
	costMinMemory   = 8
	costRobustAfter = 8
	// costShift is the mean relative residual, on one side, of the recent
	// calls (weighted 1−costShiftAlpha per call back) that says the cost
	// changed: a cost 1.5× or more is noticed within 3 to 6 calls, a
	// noise of 20% (sd) crosses it about once in a million calls.
	costShift      = 0.35
	costShiftAlpha = 0.15
	// costRidge (items²) weighs the prior on c against the variance of the
	// batch sizes: sizes that vary by a few items outweigh it.
	costRidge = 0.1
)

// observe adds a call of b items that took took, ended at now.
func (m *costModel) observe(now time.Time, b int, took time.Duration) {
	if b <= 0 || took < 0 {
		return
	}
	x, y := float64(b), took.Seconds()
	m.mu.Lock()
	defer m.mu.Unlock()
	r, w := 0.0, 1.0
	if m.s0 > 0 {
		f := math.Exp2(-now.Sub(m.last).Seconds() / costHalfLife.Seconds())
		f = min(1, max(f, 1-1.0/costMinMemory))
		m.s0, m.s1, m.s2, m.sy, m.sby, m.sab = f*m.s0, f*m.s1, f*m.s2, f*m.sy, f*m.sby, f*m.sab
		pred := m.a + m.c*x
		r = y - pred
		if m.s0 >= costRobustAfter && pred > 0 {
			m.bias += costShiftAlpha * (max(-1, min(1, r/pred)) - m.bias)
			if math.Abs(m.bias) > costShift {
				// A new regime: start over.
				m.s0, m.s1, m.s2, m.sy, m.sby, m.sab, m.bias, r = 0, 0, 0, 0, 0, 0, 0, 0
				m.top = 0
				m.restarts++
			} else if bound := max(3*m.sab/m.s0, pred/2); math.Abs(r) > bound {
				w = bound / math.Abs(r)
			}
		}
	}
	if now.After(m.last) {
		m.last = now
	}
	m.top = max(m.top, b)
	m.s0 += w
	m.s1 += w * x
	m.s2 += w * x * x
	m.sy += w * y
	m.sby += w * x * y
	m.sab += w * math.Abs(r)
	m.fit()
}

func (m *costModel) fit() {
	mb, mt := m.s1/m.s0, m.sy/m.s0
	varb := max(0, m.s2/m.s0-mb*mb)
	cov := m.sby/m.s0 - mb*mt
	c0 := mt / mb
	c := (cov + costRidge*c0) / (varb + costRidge)
	a := mt - c*mb
	switch {
	case c < 0:
		a, c = mt, 0
	case a < 0:
		a, c = 0, m.sby/m.s2
	}
	m.a, m.c = a, c
}

// estimate is the fit (seconds) and when its newest sample was taken; ok is
// false before the first.
func (m *costModel) estimate() (a, c float64, last time.Time, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.a, m.c, m.last, m.s0 > 0
}

// measured is the largest call the fit rests on (0 before the first).
func (m *costModel) measured() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.top
}

// Version labels of the cost fits: a request's model_version is the
// client's, so only the first maxVersions seen get a fit of their own.
const (
	defaultVersion = "_default" // requests that name no version
	otherVersion   = "_other"
	maxVersions    = 8
)

// costs are a model's cost fits, one per model version (a version is
// another model, whose cost may differ).
type costs struct {
	mu        sync.Mutex
	byVersion map[string]*costModel
}

func newCosts() *costs { return &costs{byVersion: map[string]*costModel{}} }

// versionLabel is the label of a request's model version.
func versionLabel(v string) string {
	if v == "" {
		return defaultVersion
	}
	return v
}

// of is the fit of version v (a label from versionLabel), created on first
// use; beyond maxVersions, versions share one.
func (cs *costs) of(v string) (*costModel, string) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if m, ok := cs.byVersion[v]; ok {
		return m, v
	}
	if len(cs.byVersion) >= maxVersions {
		v = otherVersion
		if m, ok := cs.byVersion[v]; ok {
			return m, v
		}
	}
	m := &costModel{}
	cs.byVersion[v] = m
	return m, v
}

// lookup is the fit of version v if it exists (nothing is created: the
// batcher asks for every queued request's version).
func (cs *costs) lookup(v string) *costModel {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if m, ok := cs.byVersion[v]; ok {
		return m
	}
	if len(cs.byVersion) >= maxVersions {
		return cs.byVersion[otherVersion]
	}
	return nil
}

// current is the fit the serving state reports: the default version's,
// else the one measured most recently; nil before any.
func (cs *costs) current() *costModel {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if m, ok := cs.byVersion[defaultVersion]; ok {
		return m
	}
	var best *costModel
	var last time.Time
	for _, m := range cs.byVersion {
		m.mu.Lock()
		l := m.last
		m.mu.Unlock()
		if best == nil || l.After(last) {
			best, last = m, l
		}
	}
	return best
}

// rateMeter measures a rate of events: an exponentially decaying count,
// whose steady value is rate × half-life / ln 2. Not safe for concurrent
// use (the queue's lock guards it).
type rateMeter struct {
	halfLife time.Duration
	last     time.Time
	v        float64
}

func (r *rateMeter) add(now time.Time) {
	r.v = r.decayed(now) + 1
	if now.After(r.last) {
		r.last = now
	}
}

func (r *rateMeter) decayed(now time.Time) float64 {
	if r.v == 0 {
		return 0
	}
	return r.v * math.Exp2(-max(0, now.Sub(r.last).Seconds())/r.halfLife.Seconds())
}

// rate is events per second.
func (r *rateMeter) rate(now time.Time) float64 {
	return r.decayed(now) * math.Ln2 / r.halfLife.Seconds()
}
