// Package pressure is the pipeline's pressure signal: the compacted
// <prefix>pressure topic, where each infer process publishes per model and
// priority lane what it serves and what is ahead of a new request (serving
// records), and dedup publishes its admission verdict (admission records),
// which clients read to shed load before producing. It owns the records'
// keys, what makes a record stale, which lane a priority falls in, and a
// Follower that reads the topic and keeps the latest record of each key.
// It imports no runtime, so that applications get it with the client.
package pressure

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/schemas"
)

// Admission statuses (admission records), and serving statuses.
const (
	StatusOK          = "OK"          // keeping up
	StatusBusy        = "BUSY"        // admitted requests wait more than half the objective
	StatusShedding    = "SHEDDING"    // requests of the lane are answered REJECTED
	StatusPaused      = "PAUSED"      // dedup's input is paused: requests wait in Kafka
	StatusUnknown     = "UNKNOWN"     // nothing to predict from (no serving record, or no call measured yet)
	StatusUnavailable = "UNAVAILABLE" // serving: the model's circuit is open
)

// AdmissionKey is the key of an admission record.
func AdmissionKey(model, lane string) string {
	return schemas.PressureAdmission + "/" + model + "/" + lane
}

// ServingKey is the key of a serving record.
func ServingKey(instance, model, lane string) string {
	return schemas.PressureServing + "/" + instance + "/" + model + "/" + lane
}

// StaleAfter is how many of its intervals a record stays current.
const StaleAfter = 3

// DefaultInterval is the interval of a record that does not say.
const DefaultInterval = time.Second

// Fresh reports whether p was measured within StaleAfter of its intervals
// of now.
func Fresh(p *schemas.Pressure, now time.Time) bool {
	every := time.Duration(p.IntervalMs) * time.Millisecond
	if every <= 0 {
		every = DefaultInterval
	}
	return now.Sub(time.UnixMilli(p.AtMs)) <= StaleAfter*every
}

// CallCost is what a call of n items costs (seconds) by a serving record's
// fit t(n) = a + c·n that rests on calls of up to measured items. The line
// is trusted up to MeasuredReach times the largest call measured, m; beyond
// that no further economy of scale is promised, and a call costs at least
// t(r)·n/r, r = MeasuredReach·m. (A line fitted to calls of 1 to 4 items
// can price a call of 32 near one of 4: a burst after a quiet spell would
// be admitted on the strength of it, and expire.) measured 0 (unknown: an
// older process) takes the line as it is.
func CallCost(a, c float64, measured int, n float64) float64 {
	t := a + c*n
	if r := MeasuredReach * float64(measured); measured > 0 && n > r {
		t = max(t, (a+c*r)*n/r)
	}
	return t
}

// MeasuredReach is how far past the largest call measured CallCost trusts
// a fit's line: a fit over calls of 1 to m items is taken to extrapolate to
// 2m, the batcher's own growth under a rising load, and not to 8m. (Pricing
// every call past m pessimistically looked costly in S4's overload on
// Kafka: goodput 1,714/s against 2,100/s for the binary before, 2
// repetitions; with a reach of 2, 2,128/s against 2,059/s, 3 repetitions.)
const MeasuredReach = 2

// Decoder decodes pressure records (a *schemas.Codec).
type Decoder interface {
	DecodePressure(ctx context.Context, b []byte) (*schemas.Pressure, error)
}

// DefaultMaxKeys bounds the keys a Follower keeps: processes × models ×
// lanes, with room for restarts under new instance ids.
const DefaultMaxKeys = 16384

// Follower reads the pressure topic from its start, read_committed, and
// keeps the latest record of each key (a tombstone deletes it), at most
// DefaultMaxKeys: past the bound, records of new keys are dropped (and
// counted) until some are deleted. Safe for concurrent use.
type Follower struct {
	cl     *kgo.Client
	topic  string
	dec    Decoder
	log    *slog.Logger
	notify func(*schemas.Pressure)

	mu       sync.Mutex
	recs     map[string]*schemas.Pressure
	dropped  int
	caughtUp chan struct{}
	ends     map[int32]int64 // the end offsets at start, until reached
}

// FollowerOption configures a Follower.
type FollowerOption func(*Follower)

// WithLogger sets the logger for records that do not decode. Default:
// discard.
func WithLogger(l *slog.Logger) FollowerOption { return func(f *Follower) { f.log = l } }

// OnRecord has fn called with every record read (not tombstones), from the
// reading goroutine, after it is kept. Default: none.
func OnRecord(fn func(*schemas.Pressure)) FollowerOption {
	return func(f *Follower) { f.notify = fn }
}

// NewFollower makes a Follower of topic on the cluster conn reaches. It
// reads nothing until Run.
func NewFollower(conn []kgo.Opt, topic string, dec Decoder, opts ...FollowerOption) (*Follower, error) {
	if topic == "" || dec == nil {
		return nil, errors.New("pressure: follower needs a topic and a decoder")
	}
	f := &Follower{topic: topic, dec: dec, log: slog.New(slog.DiscardHandler), recs: map[string]*schemas.Pressure{},
		caughtUp: make(chan struct{})}
	for _, o := range opts {
		o(f)
	}
	cl, err := kgo.NewClient(append(slices.Clone(conn), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(500*time.Millisecond))...)
	if err != nil {
		return nil, fmt.Errorf("pressure: follower client: %w", err)
	}
	f.cl = cl
	return f, nil
}

// Run reads until ctx ends, and closes the Follower's client.
func (f *Follower) Run(ctx context.Context) {
	defer f.cl.Close()
	f.startEnds(ctx)
	for {
		fs := f.cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				f.log.Warn("pressure topic fetch failed", "topic", t, "partition", p, "err", err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) { f.handle(ctx, r) })
		f.checkCaughtUp(fs)
	}
}

// startEnds records the topic's end offsets at start, so that CaughtUp says
// when everything published before is read.
func (f *Follower) startEnds(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(f.cl).ListCommittedOffsets(lctx, f.topic)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.log.Warn("cannot list the pressure topic's end offsets", "topic", f.topic, "err", err)
		close(f.caughtUp) // nothing to wait for: the records come when they come
		return
	}
	f.ends = map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil && o.Offset > 0 {
			f.ends[o.Partition] = o.Offset
		}
	})
	if len(f.ends) == 0 {
		close(f.caughtUp)
	}
}

func (f *Follower) checkCaughtUp(fs kgo.Fetches) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.ends) == 0 {
		return
	}
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		end, ok := f.ends[p.Partition]
		if !ok {
			return
		}
		if n := len(p.Records); (n > 0 && p.Records[n-1].Offset+1 >= end) || p.LastStableOffset >= 0 && p.LastStableOffset >= end && n == 0 {
			delete(f.ends, p.Partition)
		}
	})
	if len(f.ends) == 0 {
		close(f.caughtUp)
	}
}

// CaughtUp is closed once every record published before Run started is
// read (or at once when the end offsets could not be listed).
func (f *Follower) CaughtUp() <-chan struct{} { return f.caughtUp }

func (f *Follower) handle(ctx context.Context, r *kgo.Record) {
	key := string(r.Key)
	if r.Value == nil {
		f.mu.Lock()
		delete(f.recs, key)
		f.mu.Unlock()
		return
	}
	p, err := f.dec.DecodePressure(ctx, r.Value)
	if err != nil {
		// A newer record of the key follows within its interval.
		if ctx.Err() == nil {
			f.log.Warn("undecodable pressure record skipped", "partition", r.Partition, "offset", r.Offset, "err", err)
		}
		return
	}
	f.mu.Lock()
	if _, ok := f.recs[key]; !ok && len(f.recs) >= DefaultMaxKeys {
		f.dropped++
		if f.dropped == 1 || f.dropped%1000 == 0 {
			f.log.Warn("too many pressure keys: records of new keys dropped", "max", DefaultMaxKeys, "dropped", f.dropped)
		}
		f.mu.Unlock()
		return
	}
	f.recs[key] = p
	f.mu.Unlock()
	if f.notify != nil {
		f.notify(p)
	}
}

// Get is the latest record of key.
func (f *Follower) Get(key string) (*schemas.Pressure, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.recs[key]
	return p, ok
}

// Serving lists the serving records of model that are fresh at now.
func (f *Follower) Serving(model string, now time.Time) []*schemas.Pressure {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*schemas.Pressure
	for _, p := range f.recs {
		if p.Source == schemas.PressureServing && p.Model == model && Fresh(p, now) {
			out = append(out, p)
		}
	}
	return out
}

// Admission lists the admission records of model, one per lane, from the
// highest lane (the highest MinPriority) down.
func (f *Follower) Admission(model string) []*schemas.Pressure {
	f.mu.Lock()
	var out []*schemas.Pressure
	for _, p := range f.recs {
		if p.Source == schemas.PressureAdmission && p.Model == model {
			out = append(out, p)
		}
	}
	f.mu.Unlock()
	slices.SortFunc(out, func(a, b *schemas.Pressure) int {
		switch {
		case a.MinPriority > b.MinPriority:
			return -1
		case a.MinPriority < b.MinPriority:
			return 1
		}
		return 0
	})
	return out
}

// LaneOf picks, among a model's admission records (from the highest lane
// down, as Admission lists them), the one for a request of priority: the
// first whose MinPriority the priority reaches, else the lowest.
func LaneOf(lanes []*schemas.Pressure, priority int32) *schemas.Pressure {
	for _, p := range lanes {
		if priority >= p.MinPriority {
			return p
		}
	}
	if len(lanes) == 0 {
		return nil
	}
	return lanes[len(lanes)-1]
}
