package dedup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/pressure"
	"github.com/asyncinfer/asyncinfer/schemas"
)

// PressureConfig is how dedup reads and writes the pressure topic.
type PressureConfig struct {
	Conn     []kgo.Opt      // reaches the cluster
	Codec    *schemas.Codec // binds Topic to schemas.KindPressure
	Topic    string
	Instance string // this process, in the admission records it publishes
	// Interval is how often the process that owns requests partition 0
	// publishes the admission records (default 500ms).
	Interval time.Duration
	Logger   *slog.Logger
}

// publisher follows the serving records and publishes the admission
// records.
type publisher struct {
	cfg      PressureConfig
	s        *Stage
	follower *pressure.Follower
	cl       *kgo.Client
	dirty    atomic.Bool // a serving record came since the views were set
}

func newPublisher(cfg PressureConfig, s *Stage) (*publisher, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Codec == nil || cfg.Topic == "" {
		return nil, errors.New("dedup: pressure: codec and topic are required")
	}
	p := &publisher{cfg: cfg, s: s}
	f, err := pressure.NewFollower(cfg.Conn, cfg.Topic, cfg.Codec, pressure.WithLogger(cfg.Logger),
		pressure.OnRecord(func(r *schemas.Pressure) {
			if r.Source == schemas.PressureServing {
				p.dirty.Store(true)
			}
		}))
	if err != nil {
		return nil, fmt.Errorf("dedup: %w", err)
	}
	cl, err := kgo.NewClient(append(slices.Clone(cfg.Conn), kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))...)
	if err != nil {
		return nil, fmt.Errorf("dedup: pressure client: %w", err)
	}
	p.follower, p.cl = f, cl
	return p, nil
}

// tickEvery is how often Run refreshes what admission predicts from (the
// serving view, the watcher's lags, the share of partitions) and looks
// whether a paused input may resume.
const tickEvery = 20 * time.Millisecond

// Run follows the pressure topic and publishes the admission records, when
// admission is on, until ctx ends.
func (s *Stage) Run(ctx context.Context) error {
	if len(s.models) == 0 {
		<-ctx.Done()
		return nil
	}
	if s.pub != nil {
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.pub.follower.Run(ctx)
		}()
		defer func() { <-done }()
		defer s.pub.cl.Close()
	}
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	var lastShare, lastServe, lastPublish time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		now := time.Now()
		if now.Sub(lastShare) >= 500*time.Millisecond {
			lastShare = now
			s.refreshShare()
		}
		s.refreshDownstream()
		if s.pub != nil && (s.pub.dirty.Swap(false) || now.Sub(lastServe) >= 250*time.Millisecond) {
			// Also without news: a view whose records went stale is
			// dropped.
			lastServe = now
			for name, ms := range s.models {
				ms.serve(s.pub.follower.Serving(name, now), s.cfg.Lanes)
			}
		}
		for _, ms := range s.models {
			if ms.cfg.Mode == AdmissionPause {
				s.checkPause(ms, now)
			}
		}
		s.checkResume(now)
		every := 500 * time.Millisecond
		if s.pub != nil {
			every = s.pub.cfg.Interval
		}
		if now.Sub(lastPublish) >= every {
			lastPublish = now
			s.publish(ctx, now)
		}
	}
}

// refreshShare sets the share of the requests partitions this process
// owns: its admissions are that share of everybody's.
func (s *Stage) refreshShare() {
	if s.r == nil {
		return
	}
	total := s.r.InputPartitions()
	if total == 0 {
		return
	}
	owned := 0
	for _, p := range s.r.Status().Partitions {
		if p.Topic == s.r.Input() {
			owned++
		}
	}
	if owned > 0 {
		s.share.Store(int64(math.Float64bits(float64(owned) / float64(total))))
	}
}

func (s *Stage) shareNow() float64 { return math.Float64frombits(uint64(s.share.Load())) }

// downstreamSmoothing is the time constant of the watcher's measures as
// admission uses them: the watcher samples every few seconds, and a step
// between two samples must not flip every decision at once.
const downstreamSmoothing = 2 * time.Second

// refreshDownstream takes the watcher's measures, less DownstreamNoise,
// smoothed (exponentially, over downstreamSmoothing; called every tick).
func (s *Stage) refreshDownstream() {
	if s.cfg.Downstream == nil {
		return
	}
	in, em, ok := s.cfg.Downstream.Behind()
	if !ok {
		in, em = 0, 0
	}
	const w = float64(tickEvery) / float64(downstreamSmoothing)
	smooth := func(v *atomic.Int64, x time.Duration) {
		old := float64(v.Load())
		v.Store(int64(old + w*(float64(max(0, x-DownstreamNoise))-old)))
	}
	smooth(&s.inferLag, in)
	smooth(&s.emitLag, em)
}

func (s *Stage) lane(l int) Lane {
	if l < len(s.cfg.Lanes) {
		return s.cfg.Lanes[l]
	}
	return Lane{}
}

// pauseWait is the wait pause mode compares with its bound: that of a
// request of the lowest lane (everything is ahead of it), or the watcher's
// measure of infer when there is no prediction.
func (s *Stage) pauseWait(ms *modelState, now time.Time) (time.Duration, bool) {
	ms.mu.Lock()
	p := ms.predict(len(ms.lanes)-1, now, s.shareNow())
	ms.mu.Unlock()
	if !p.known {
		if lag := time.Duration(s.inferLag.Load()); lag > 0 {
			return lag, true
		}
		return 0, false
	}
	return p.wait, true
}

// checkPause pauses the input when a pause-mode model's predicted wait is
// above its bound (after an admission).
func (s *Stage) checkPause(ms *modelState, now time.Time) {
	w, ok := s.pauseWait(ms, now)
	if !ok || w <= ms.cfg.PauseAbove {
		return
	}
	ms.mu.Lock()
	ms.paused = true
	ms.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.paused && s.r != nil {
		s.paused = true
		s.r.Pauses().PauseAll(pipeline.PauseBackpressure)
	}
}

// checkResume resumes the input once every pause-mode model that paused it
// would wait less than half its bound.
func (s *Stage) checkResume(now time.Time) {
	s.mu.Lock()
	paused := s.paused
	s.mu.Unlock()
	if !paused {
		return
	}
	for _, ms := range s.models {
		ms.mu.Lock()
		held := ms.paused
		ms.mu.Unlock()
		if !held {
			continue
		}
		if w, ok := s.pauseWait(ms, now); ok && w >= ms.cfg.PauseAbove/2 {
			return
		}
		ms.mu.Lock()
		ms.paused = false
		ms.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused && s.r != nil {
		s.paused = false
		s.r.Pauses().ResumeAll(pipeline.PauseBackpressure)
	}
}

var statuses = []string{pressure.StatusOK, pressure.StatusBusy, pressure.StatusShedding, pressure.StatusPaused, pressure.StatusUnknown}

// publish sets the admission gauges and, in the process that owns requests
// partition 0, publishes the admission records.
func (s *Stage) publish(ctx context.Context, now time.Time) {
	owner := s.ownsFirst()
	lanes := max(1, len(s.cfg.Lanes))
	emitLag := time.Duration(s.emitLag.Load())
	var out []*kgo.Record
	for name, ms := range s.models {
		for l := range lanes {
			v := ms.view(l, now, s.shareNow(), emitLag, true)
			lane := s.laneName(l)
			wait := v.wait.Seconds()
			switch {
			case v.status == pressure.StatusUnknown:
				wait = -1
			case v.wait >= noMeasure:
				wait = math.Inf(1)
			}
			s.m.PredictedWait.WithLabelValues(name, lane).Set(wait)
			s.m.ShedFraction.WithLabelValues(name, lane).Set(v.shed)
			for _, st := range statuses {
				s.m.AdmissionStatus.WithLabelValues(name, lane, st).Set(boolFloat(st == v.status))
			}
			if !owner || s.pub == nil {
				continue
			}
			rec := &schemas.Pressure{Source: schemas.PressureAdmission, Model: name, Lane: lane,
				MinPriority: s.lane(l).MinPriority, Instance: s.pub.cfg.Instance, Status: v.status,
				AtMs: now.UnixMilli(), IntervalMs: s.pub.cfg.Interval.Milliseconds(),
				PredictedWaitMs: min(v.wait, time.Hour).Milliseconds(), RetryAfterMs: v.retryAfter.Milliseconds(),
				ShedFraction: v.shed}
			if len(s.cfg.Lanes) == 0 {
				rec.MinPriority = math.MinInt32
			}
			b, err := s.pub.cfg.Codec.EncodePressure(s.pub.cfg.Topic, rec)
			if err != nil {
				s.pub.cfg.Logger.Error("encode admission record", "model", name, "err", err)
				continue
			}
			out = append(out, &kgo.Record{Topic: s.pub.cfg.Topic, Key: []byte(pressure.AdmissionKey(name, lane)), Value: b})
		}
	}
	for _, r := range out {
		s.pub.cl.Produce(ctx, r, func(r *kgo.Record, err error) {
			if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, kgo.ErrClientClosed) {
				s.pub.cfg.Logger.Warn("cannot publish the admission state", "topic", r.Topic, "err", err)
			}
		})
	}
}

// ownsFirst reports whether this process owns requests partition 0: the
// one publisher of the admission records (after a rebalance, two may for
// a moment; the compacted topic keeps the latest, and their views agree
// but for their samples of the traffic).
func (s *Stage) ownsFirst() bool {
	if s.r == nil {
		return false
	}
	for _, p := range s.r.Status().Partitions {
		if p.Topic == s.r.Input() && p.Partition == 0 {
			return true
		}
	}
	return false
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
