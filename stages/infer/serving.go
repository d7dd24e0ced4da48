package infer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/pressure"
	"github.com/asyncinfer/asyncinfer/schemas"
)

// PressureConfig is how the stage publishes its serving state to the
// pressure topic: per model and lane, what this process serves (its
// capacity within the objective, its fitted cost, its target batch) and
// what is ahead of a new request (the backlog: queued for the model and
// waiting in Kafka on the lane partitions it owns; and the requests in
// calls now).
// Dedup reads these records to decide admission.
type PressureConfig struct {
	Conn     []kgo.Opt      // reaches the cluster
	Codec    *schemas.Codec // binds Topic to schemas.KindPressure
	Topic    string
	Instance string // this process, in the records' keys (the instance id, or a random one)
	// Interval is how often the state is measured, and published when it
	// changed (default 100ms); Heartbeat how often it is published anyway
	// (default 1s: the records say so, and are stale after three).
	Interval, Heartbeat time.Duration
	Logger              *slog.Logger
}

func (p *PressureConfig) setDefaults() {
	if p.Interval <= 0 {
		p.Interval = 100 * time.Millisecond
	}
	if p.Heartbeat < p.Interval {
		p.Heartbeat = max(p.Interval, time.Second)
	}
	if p.Logger == nil {
		p.Logger = slog.New(slog.DiscardHandler)
	}
}

// arrivalWeight is the weight of each interval's arrivals in the share of
// a lane's Kafka backlog a model is charged with.
const arrivalWeight = 0.2

// serving measures and publishes the serving state.
type serving struct {
	s       *Stage
	cfg     PressureConfig
	cl      *kgo.Client
	adm     *kadm.Client
	last    map[string]*schemas.Pressure // by key: what was published
	lastAt  time.Time
	shares  map[string][]float64 // per model, per lane: its share of the lane's arrivals
	arrived map[string][]int64   // per model, per lane: arrivals counted at the last tick
	// The last backlog asked of the broker, when, and the arrivals then:
	// a quiet stage does not ask again (quiet).
	backlog   []int64
	askedAt   time.Time
	askedSeen int64
}

// ServingState is what a serving record carries, for one model and lane.
func (s *Stage) servingState(sv *served, lane int, kafka []int64, shares []float64, now time.Time) *schemas.Pressure {
	l := s.lanes[lane]
	p := &schemas.Pressure{Source: schemas.PressureServing, Model: sv.cfg.Name, Lane: l.Name, MinPriority: l.MinPriority,
		AtMs: now.UnixMilli(), Status: pressure.StatusOK}
	target, a, c, measured, fitted := sv.q.target(sv.costs)
	sv.target.Store(int64(target))
	queued := sv.q.lanes(nil)
	backlog := float64(queued[lane])
	p.Running = sv.running.Load()
	if lane < len(kafka) && lane < len(shares) {
		backlog += float64(kafka[lane]) * shares[lane]
	}
	p.Backlog = int64(math.Round(backlog))
	p.Batch = int32(target)
	p.BatchLimit = int32(sv.q.pol.batchLimit())
	down, retry := sv.ex.br.down()
	switch {
	case down:
		p.Status, p.RetryAfterMs = pressure.StatusUnavailable, max(1, retry.Milliseconds())
	case !fitted:
		p.Status = pressure.StatusUnknown
	default:
		p.FixedMs, p.PerItemMs, p.BatchMeasured = a*1000, c*1000, int32(measured)
		if t := pressure.CallCost(a, c, measured, float64(target)); t > 0 {
			p.CapacityPerSecond = float64(sv.cfg.Concurrency) * float64(target) / t
		}
	}
	return p
}

func (sv *serving) run(ctx context.Context) {
	defer sv.cl.Close()
	t := time.NewTicker(sv.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			sv.retire()
			return
		case <-t.C:
		}
		sv.tick(ctx, time.Now())
	}
}

// tick measures every model's state and publishes what changed (everything
// at the heartbeat).
func (sv *serving) tick(ctx context.Context, now time.Time) {
	kafka := sv.kafkaBacklog(ctx)
	heartbeat := now.Sub(sv.lastAt) >= sv.cfg.Heartbeat
	var out []*kgo.Record
	for name, m := range sv.s.models {
		shares := sv.share(name, m)
		sv.s.m.Capacity.WithLabelValues(name).Set(0)
		for l := range sv.s.lanes {
			p := sv.s.servingState(m, l, kafka, shares, now)
			p.Instance, p.IntervalMs = sv.cfg.Instance, sv.cfg.Heartbeat.Milliseconds()
			if l == 0 {
				sv.s.m.Capacity.WithLabelValues(name).Set(p.CapacityPerSecond)
			}
			key := pressure.ServingKey(sv.cfg.Instance, name, p.Lane)
			if !heartbeat && !changed(sv.last[key], p) {
				continue
			}
			v, err := sv.cfg.Codec.EncodePressure(sv.cfg.Topic, p)
			if err != nil {
				sv.cfg.Logger.Error("encode serving state", "model", name, "err", err)
				continue
			}
			sv.last[key] = p
			out = append(out, &kgo.Record{Topic: sv.cfg.Topic, Key: []byte(key), Value: v})
		}
	}
	if heartbeat {
		sv.lastAt = now
	}
	for _, r := range out {
		sv.cl.Produce(ctx, r, sv.produced)
	}
}

func (sv *serving) produced(r *kgo.Record, err error) {
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, kgo.ErrClientClosed) {
		sv.cfg.Logger.Warn("cannot publish the serving state", "topic", r.Topic, "err", err)
	}
}

// changed reports whether p says something other than was: the backlog,
// the status, or the capacity by more than 5%.
func changed(was, p *schemas.Pressure) bool {
	if was == nil {
		return true
	}
	return was.Backlog != p.Backlog || was.Running != p.Running || was.Status != p.Status || was.Batch != p.Batch ||
		math.Abs(was.CapacityPerSecond-p.CapacityPerSecond) > 0.05*max(was.CapacityPerSecond, 1)
}

// share is each lane's share of arrivals the model had lately, which is the
// share of the lane's Kafka backlog it is charged with (one model: all of
// it; a lane nobody sent anything to lately: an equal share).
func (sv *serving) share(name string, m *served) []float64 {
	n := len(sv.s.lanes)
	if len(sv.s.models) == 1 {
		return slices.Repeat([]float64{1}, n)
	}
	if sv.shares[name] == nil {
		sv.shares[name] = slices.Repeat([]float64{1 / float64(len(sv.s.models))}, n)
		sv.arrived[name] = make([]int64, n)
	}
	out := sv.shares[name]
	for l := range n {
		var all, mine int64
		for other, o := range sv.s.models {
			d := o.arrivals[l].Load()
			if sv.arrived[other] != nil {
				d -= sv.arrived[other][l]
			}
			all += d
			if other == name {
				mine = d
			}
		}
		if all > 0 {
			out[l] += arrivalWeight * (float64(mine)/float64(all) - out[l])
		}
	}
	return out
}

// kafkaBacklog is, per lane, the records waiting in Kafka on the lane
// partitions this process owns: each partition's last stable offset less
// the position the consumer reached (nil when unknown).
func (sv *serving) kafkaBacklog(ctx context.Context) []int64 {
	defer func() {
		// The arrivals counted at this tick, for the next share.
		for name, m := range sv.s.models {
			if sv.arrived[name] == nil {
				sv.arrived[name] = make([]int64, len(sv.s.lanes))
			}
			for l := range sv.s.lanes {
				sv.arrived[name][l] = m.arrivals[l].Load()
			}
		}
	}()
	r := sv.s.r
	if r == nil {
		return nil
	}
	owned := map[string][]int32{}
	paused := false
	for _, p := range r.Status().Partitions {
		owned[p.Topic] = append(owned[p.Topic], p.Partition)
		paused = paused || p.Restoring || len(p.PausedBy) > 0
	}
	if len(owned) == 0 {
		return nil
	}
	now, seen := time.Now(), sv.seen()
	if sv.quiet(now, seen, paused) {
		return slices.Clone(sv.backlog)
	}
	lctx, cancel := context.WithTimeout(ctx, sv.cfg.Interval)
	defer cancel()
	ends, err := sv.adm.ListCommittedOffsets(lctx, sv.s.laneTopics...)
	if err != nil {
		sv.backlog = nil
		return nil
	}
	defer func() { sv.askedAt, sv.askedSeen = now, seen }()
	pos := r.Client().UncommittedOffsets()
	committed := r.Client().CommittedOffsets()
	out := make([]int64, len(sv.s.lanes))
	for l, topic := range sv.s.laneTopics {
		for _, p := range owned[topic] {
			end, ok := ends.Lookup(topic, p)
			if !ok || end.Err != nil {
				continue
			}
			at, ok := pos[topic][p]
			if !ok {
				if at, ok = committed[topic][p]; !ok {
					continue
				}
			}
			out[l] += max(0, end.Offset-at.Offset)
		}
	}
	sv.backlog = slices.Clone(out)
	return out
}

// seen is every request handed to the stage so far, over models and lanes.
func (sv *serving) seen() int64 {
	var n int64
	for _, m := range sv.s.models {
		for l := range m.arrivals {
			n += m.arrivals[l].Load()
		}
	}
	return n
}

// quiet reports whether the backlog last asked of the broker still holds
// without asking again: it was empty, nothing arrived since, nothing is
// queued or in a call, no lane partition is paused or restoring (so the
// consumer fetches, and a record that arrives is handed out at once and
// counted), and it is younger than the heartbeat. An idle infer process
// asked ten times a second (ListOffsets), about half of what three idle
// stages cost the broker; now it asks once per heartbeat.
func (sv *serving) quiet(now time.Time, seen int64, paused bool) bool {
	if sv.backlog == nil || paused || seen != sv.askedSeen || now.Sub(sv.askedAt) >= sv.cfg.Heartbeat {
		return false
	}
	for _, n := range sv.backlog {
		if n != 0 {
			return false
		}
	}
	for _, m := range sv.s.models {
		if m.q.len() > 0 || m.running.Load() > 0 {
			return false
		}
	}
	return true
}

// retire publishes a tombstone for every key this process published, so
// that readers forget it at once instead of when it goes stale.
func (sv *serving) retire() {
	if len(sv.last) == 0 {
		return
	}
	var rs []*kgo.Record
	for key := range sv.last {
		rs = append(rs, &kgo.Record{Topic: sv.cfg.Topic, Key: []byte(key)})
	}
	// Bounded by a timer, not the produce's context: a record waiting for
	// a broker that is gone is not failed by its context, only by closing
	// the client (run's deferred Close, which this goroutine waits for).
	done := make(chan error, 1)
	go func() { done <- sv.cl.ProduceSync(context.Background(), rs...).FirstErr() }()
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	select {
	case err := <-done:
		if err != nil {
			sv.cfg.Logger.Warn("cannot retire the serving state; readers drop it once stale", "err", err)
		}
	case <-t.C:
		sv.cfg.Logger.Warn("cannot retire the serving state in time; readers drop it once stale")
	}
}

// newServing makes the publisher, with a client of its own: the runner's
// is transactional in exactly-once mode, and the serving state is no part
// of any unit of work.
func (s *Stage) newServing() (*serving, error) {
	p := *s.cfg.Pressure
	p.setDefaults()
	if p.Codec == nil || p.Topic == "" || p.Instance == "" {
		return nil, errors.New("infer: pressure: codec, topic and instance are required")
	}
	cl, err := kgo.NewClient(append(slices.Clone(p.Conn), kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))...)
	if err != nil {
		return nil, fmt.Errorf("infer: pressure client: %w", err)
	}
	return &serving{s: s, cfg: p, cl: cl, adm: kadm.NewClient(cl), last: map[string]*schemas.Pressure{},
		shares: map[string][]float64{}, arrived: map[string][]int64{}}, nil
}

// laneOf is the lane index of an input topic (0 for a stage without lanes).
func (s *Stage) laneOf(topic string) int {
	for i, t := range s.laneTopics {
		if t == topic {
			return i
		}
	}
	return 0
}
