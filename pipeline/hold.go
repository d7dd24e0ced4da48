package pipeline

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/schemas"
)

// PauseRegistry holds a partition whose next record cannot be decoded
// because the schema registry cannot be reached.
const PauseRegistry = "registry"

// holds are the partitions whose next record waits on a dependency: it was
// not handed out, the partition is paused (PauseRegistry) and rewound to
// it, and a goroutine retries decoding it until it succeeds. A registry
// outage makes requests wait in Kafka; it never dead-letters them, and the
// stage never exits for it.
type holds struct {
	mu sync.Mutex
	m  map[tp]*held
}

type held struct {
	offset int64
	since  time.Time
	err    error
}

func newHolds() *holds { return &holds{m: make(map[tp]*held)} }

func (h *holds) has(t tp) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m[t] != nil
}

func (h *holds) is(t tp, x *held) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m[t] == x
}

func (h *holds) drop(t tp) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.m, t)
}

func (h *holds) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.m)
}

// oldest is the longest hold's start and error; ok is false when none.
func (h *holds) oldest() (since time.Time, err error, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, x := range h.m {
		if !ok || x.since.Before(since) {
			since, err, ok = x.since, x.err, true
		}
	}
	return since, err, ok
}

// holdRetry is how often a held record's decoding is retried.
var holdRetry = Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second}

// holdWarnEvery is how often a hold that lasts says so.
const holdWarnEvery = 30 * time.Second

// hold stops handing out rec's partition at rec: it is paused and rewound
// to rec (so nothing after it is handed out, nor committed), and a
// goroutine retries decoding rec until it succeeds (or turns out
// malformed), then resumes it. Called from the poll goroutine before
// AllowRebalance, as SetOffsets requires.
func (r *Runner) hold(rec *kgo.Record, err error) {
	t := tp{rec.Topic, rec.Partition}
	if _, ok := r.tr.generation(t); !ok {
		return // not ours any more
	}
	h := &held{offset: rec.Offset, since: time.Now(), err: err}
	r.holds.mu.Lock()
	r.holds.m[t] = h
	r.holds.mu.Unlock()
	r.pause.Pause(PauseRegistry, rec.Topic, rec.Partition)
	r.client().SetOffsets(map[string]map[int32]kgo.EpochOffset{rec.Topic: {rec.Partition: {Epoch: rec.LeaderEpoch, Offset: rec.Offset}}})
	r.m.Held.WithLabelValues(r.stage).Inc()
	r.log.Warn("cannot decode: the schema registry is unreachable; the partition waits and decoding is retried",
		"topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", err)
	value := rec.Value
	r.Go(func(ctx context.Context) {
		start, lastWarn, attempts := time.Now(), time.Now(), 0
		// The hold ends when the partition is revoked (forget drops it);
		// an aborted transaction rewinds the partition but keeps it.
		current := func() bool { return r.holds.is(t, h) }
		err := Retry(ctx, holdRetry, func() error {
			if !current() {
				return nil
			}
			attempts++
			_, err := r.decode(ctx, value)
			if err != nil && !errors.Is(err, schemas.ErrMalformed) && time.Since(lastWarn) > holdWarnEvery {
				lastWarn = time.Now()
				r.log.Warn("still waiting for the schema registry", "topic", t.topic, "partition", t.partition,
					"for", time.Since(start).Round(time.Second), "attempts", attempts, "err", err)
			}
			return err
		}, func(err error) bool { return !errors.Is(err, schemas.ErrMalformed) })
		if ctx.Err() != nil && err != nil && !errors.Is(err, schemas.ErrMalformed) {
			return // shutting down
		}
		r.assignMu.RLock()
		defer r.assignMu.RUnlock()
		if !current() {
			return
		}
		r.holds.drop(t)
		r.pause.Resume(PauseRegistry, t.topic, t.partition)
		r.log.Info("schema registry reachable again; partition resumed", "topic", t.topic, "partition", t.partition,
			"waited", time.Since(start).Round(time.Millisecond))
	})
}
