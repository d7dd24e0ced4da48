package suite

import (
	"context"
	"errors"
	"math"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/stages/emit"
)

// generator produces a run's requests: real encoded requests (the demo's
// shape: one FP32 [1, 4] input, about 100 bytes), keyed by idempotency key
// and partitioned with murmur2 as any client must, request ids tag+index.
type generator struct {
	cl    *kgo.Client
	codec *schemas.Codec
	topic string
	tag   string
	model string
}

func (g *generator) record(i int, a Arrival, created time.Time) (*kgo.Record, error) {
	req := &schemas.Request{
		RequestID:   g.tag + strconv.Itoa(i),
		Model:       g.model,
		Inputs:      []schemas.Tensor{{Name: "x", Datatype: "FP32", Shape: []int64{1, 4}, FP32: []float32{float32(i % 97), 1, 2, 3}}},
		CreatedAtMs: created.UnixMilli(),
	}
	if a.DupOf >= 0 {
		req.IdempotencyKey = g.tag + strconv.Itoa(a.DupOf)
	}
	v, err := g.codec.EncodeRequest(g.topic, req)
	if err != nil {
		return nil, err
	}
	return &kgo.Record{Topic: g.topic, Key: []byte(req.Key()), Value: v}, nil
}

// acks counts the broker's acknowledgements and keeps the first error.
type acks struct {
	wg     sync.WaitGroup
	failed atomic.Value
}

func (a *acks) promise(_ *kgo.Record, err error) {
	if err != nil {
		a.failed.CompareAndSwap(nil, err)
	}
	a.wg.Done()
}

func (a *acks) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { a.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err, _ := a.failed.Load().(error); err != nil {
		return err
	}
	return nil
}

// preload produces n requests as fast as the broker takes them and waits
// for every acknowledgement: the backlog of a throughput run.
func (g *generator) preload(ctx context.Context, n int) error {
	recs := make([]*kgo.Record, n)
	now := time.Now()
	for i := range recs {
		r, err := g.record(i, Arrival{DupOf: -1}, now)
		if err != nil {
			return err
		}
		recs[i] = r
	}
	var a acks
	a.wg.Add(n)
	for _, r := range recs {
		g.cl.Produce(ctx, r, a.promise)
	}
	return a.wait(ctx)
}

// run produces the arrivals open loop: each at its time from start,
// whatever happened to the earlier ones. created_at is when the request
// is actually sent, as a client stamps it: a generator starved of CPU on a
// shared machine then does not charge its own lateness to the pipeline
// (how late it was is reported). It returns when each request was sent
// (unix ns).
func (g *generator) run(ctx context.Context, arrivals []Arrival, start time.Time) ([]int64, error) {
	sent := make([]int64, len(arrivals))
	var a acks
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for i, ar := range arrivals {
		due := start.Add(time.Duration(ar.At * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			t.Reset(d)
			select {
			case <-ctx.Done():
				return sent, ctx.Err()
			case <-t.C:
			}
		}
		now := time.Now()
		rec, err := g.record(i, ar, now)
		if err != nil {
			return sent, err
		}
		if err, _ := a.failed.Load().(error); err != nil {
			return sent, err
		}
		a.wg.Add(1)
		sent[i] = now.UnixNano()
		g.cl.Produce(ctx, rec, a.promise)
	}
	return sent, a.wait(ctx)
}

// Status codes the reader keeps per request (from emit's status header).
const (
	stNone uint8 = iota
	stSucceeded
	stFailed
	stExpired
	stRejected
	stDuplicate
	stForwarded // the raw chain: no header, the record itself
	stOther
)

var statusNames = []string{"", "SUCCEEDED", "FAILED", "EXPIRED", "REJECTED", "DUPLICATE", "FORWARDED", "OTHER"}

func statusOf(h []byte, found bool) uint8 {
	if !found {
		return stForwarded
	}
	switch schemas.Status(h) {
	case schemas.StatusSucceeded:
		return stSucceeded
	case schemas.StatusFailed:
		return stFailed
	case schemas.StatusExpired:
		return stExpired
	case schemas.StatusRejected:
		return stRejected
	case schemas.StatusDuplicate:
		return stDuplicate
	}
	return stOther
}

// reader reads the results topic read_committed, as every client of the
// pipeline must, and keeps for each request the moment its first result
// became visible here, and its status. It reads the key (the request id)
// and the status header only: decoding results would make the reader, not
// the pipeline, what is measured.
type reader struct {
	cl  *kgo.Client
	tag string

	mu          sync.Mutex
	seen        []int64 // unix ns of the first result; 0: none yet
	produced    []int64 // unix ns of its record's timestamp (when the last hop produced it, ms precision)
	status      []uint8
	count       int
	repeats     int
	unrequested int
	last        time.Time
	ready       chan struct{}
}

func newReader(kopts []kgo.Opt, topic, tag string, n int) (*reader, error) {
	cl, err := kgo.NewClient(append(slices.Clone(kopts), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(100*time.Millisecond))...)
	if err != nil {
		return nil, err
	}
	return &reader{cl: cl, tag: tag, seen: make([]int64, n), produced: make([]int64, n), status: make([]uint8, n),
		ready: make(chan struct{})}, nil
}

// run reads until ctx ends. ready closes once a poll has gone out: the
// partitions are assigned and their offsets reset, so a result produced
// from then on is timed when it becomes visible, not when the reader
// finds the topic.
func (r *reader) run(ctx context.Context) {
	defer r.cl.Close()
	announced := false
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		fs := r.cl.PollFetches(pctx)
		cancel()
		now := time.Now()
		if !announced {
			close(r.ready)
			announced = true
		}
		r.mu.Lock()
		fs.EachRecord(func(rec *kgo.Record) {
			id, ok := r.index(rec.Key)
			if !ok {
				r.unrequested++
				return
			}
			if r.seen[id] != 0 {
				r.repeats++
				return
			}
			h, found := header(rec.Headers, emit.HeaderStatus)
			r.seen[id], r.status[id] = now.UnixNano(), statusOf(h, found)
			r.produced[id] = rec.Timestamp.UnixNano()
			r.count++
			r.last = now
		})
		r.mu.Unlock()
	}
}

func (r *reader) index(key []byte) (int, bool) {
	s := string(key)
	if len(s) <= len(r.tag) || s[:len(r.tag)] != r.tag {
		return 0, false
	}
	i, err := strconv.Atoi(s[len(r.tag):])
	if err != nil || i < 0 || i >= len(r.seen) {
		return 0, false
	}
	return i, true
}

func header(hs []kgo.RecordHeader, key string) ([]byte, bool) {
	for _, h := range hs {
		if h.Key == key {
			return h.Value, true
		}
	}
	return nil, false
}

// answered is how many requests have a result so far, and when the last
// arrived.
func (r *reader) answered() (int, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count, r.last
}

// liveP99 is the p99 (ms) so far of the requests scheduled before now:
// answered ones by their latency, the others by how long they have waited.
func (r *reader) liveP99(sched []int64, now time.Time) float64 {
	// A copy under the lock, the work outside it: the reader must not wait
	// for the progress line, or the progress line would add latency.
	r.mu.Lock()
	seen := slices.Clone(r.seen)
	r.mu.Unlock()
	nowNs := now.UnixNano()
	var lat []float64
	for i, s := range sched {
		if s == 0 || s > nowNs {
			continue
		}
		end := seen[i]
		if end == 0 {
			end = nowNs
		}
		lat = append(lat, float64(end-s)/1e6)
	}
	if len(lat) == 0 {
		return math.NaN()
	}
	sort.Float64s(lat)
	return percentile(lat, 0.99)
}

var errIncomplete = errors.New("not every request was answered")
