package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/admin"
	"github.com/asyncinfer/asyncinfer/config"
	"github.com/asyncinfer/asyncinfer/connectors/sim"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/topics"
)

// demoFlags are the demo's flags: every setting run takes, under the same
// names (a demo is run on a configuration), the traffic, the demo's one
// simulated model, and the report.
type demoFlags struct {
	cfg *config.Flags
	fs  *pflag.FlagSet
	loadSpec
	model  demoModel
	format string
	stall  time.Duration
	quiet  bool
}

// demoModel is the simulated model the demo serves: the first configured
// model (or the default one) with these flags applied.
type demoModel struct {
	name        string
	cost        string
	spin        bool
	maxBatch    int
	maxWait     time.Duration
	concurrency int
	errorRate   float64
	outage      string
	objective   time.Duration
	batching    string
	admission   string
	downstream  time.Duration
}

// demoDefaults are run's defaults except where a demo wants its own: a
// short retention (bounding the embedded broker's memory), quiet logs, no
// admin server unless asked for.
func demoDefaults() config.Config {
	c := config.Defaults()
	c.Topics.Retention = time.Hour
	c.LogLevel = "warn"
	c.AdminAddr = ""
	return c
}

func newDemoCmd() *cobra.Command {
	f := &demoFlags{}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole pipeline on an embedded broker with generated load, and report",
		Long: `demo starts an embedded Kafka broker (kfake) and schema registry (srfake) in
this process, all three stages, the simulated model and a load generator. It
shows live progress on stderr (produced, answered by status, batch size, lag
per stage) and ends with a summary of what happened to every request,
counted per request id: lost and conflicting must be 0.

The pipeline is configured as run configures it: the same settings, flags,
environment variables and --config file ("asyncinfer config reference"). The
--model* flags describe the demo's simulated model.

The simulated model costs a + c*b for a batch of b (--model-cost a,c); the
defaults (5ms + 0.25ms per item, 2,000 requests/s) keep it busy, so batching
is visible: far fewer model calls than requests. Its latency objective
(--model-objective, 100ms) makes the batching adaptive: the batch size of
each second follows the offered rate (--rate 500 vs --rate 3000), and past
what the model can serve within the objective, requests that cannot make
it are answered EXPIRED (deadline_unreachable) at once. --max-wait, or
--batching window, batches as a fixed window instead.`,
		Example: `  asyncinfer demo
  asyncinfer demo --requests 20000 --duplicates 0.1 --malformed 0.01 --report json
  asyncinfer demo --poison-items 0.001 --model-error-rate 0.02 --model-outage 2s@3s
  asyncinfer demo --rate 3000 --batching window
  asyncinfer demo --exactly-once --partitions 8
  asyncinfer demo --data-dir /tmp/ai && asyncinfer verify --data-dir /tmp/ai`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.config()
			if err != nil {
				return err
			}
			rep, err := runDemo(cmd.Context(), cfg, f, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if err := printReport(cmd.OutOrStdout(), rep, f.format); err != nil {
				return err
			}
			if rep.Lost > 0 || rep.Conflicting > 0 || rep.MalformedWithoutDLQ > 0 {
				return fmt.Errorf("demo: lost=%d conflicting=%d malformed_without_dlq=%d", rep.Lost, rep.Conflicting, rep.MalformedWithoutDLQ)
			}
			return nil
		},
	}
	f.register(cmd.Flags())
	return cmd
}

// register defines the demo's flags on fs.
func (f *demoFlags) register(fs *pflag.FlagSet) {
	f.fs = fs
	f.cfg = config.BindFlagsOver(fs, demoDefaults(), nil)
	f.loadSpec.register(fs)
	md := config.ModelDefaults(config.DefaultModel)
	fs.StringVar(&f.model.name, "model", md.Name, "name of the served (simulated) model")
	fs.StringVar(&f.model.cost, "model-cost", md.Sim.Fixed.String()+","+md.Sim.PerItem.String(), "simulated model cost a,c: a call of b items takes a + c*b")
	fs.BoolVar(&f.model.spin, "model-spin", false, "burn CPU for the model cost instead of sleeping")
	fs.IntVar(&f.model.maxBatch, "max-batch-items", md.MaxBatchItems, "most items per model call")
	fs.DurationVar(&f.model.maxWait, "max-wait", 0, "batching window: longest wait for a fuller batch (0: greedy, take what is queued); setting it makes the batching a window")
	fs.IntVar(&f.model.concurrency, "model-concurrency", md.Concurrency, "parallel model calls (workers)")
	fs.Float64Var(&f.model.errorRate, "model-error-rate", 0, "fraction of model calls that fail transiently")
	fs.StringVar(&f.model.outage, "model-outage", "", "model outage D@T: unavailable for D, starting T after the start (e.g. 2s@5s)")
	fs.DurationVar(&f.model.objective, "model-objective", md.LatencyObjective, "the model's latency objective (0: none, and the batching a window)")
	fs.StringVar(&f.model.batching, "batching", "", "how batches form: adaptive (at the latency objective) or window (greedy, or --max-wait); empty: adaptive with an objective and no --max-wait")
	fs.DurationVar(&f.model.downstream, "downstream-latency", md.DownstreamLatency, "the model's downstream_latency: the time from its answer to the client reading it, which the batcher plans each batch to leave (the report's downstream_ms measures it)")
	fs.StringVar(&f.model.admission, "admission", "", "what dedup does when the model is behind: reject (answer REJECTED what cannot make its deadline), pause (pause the input: requests wait in Kafka) or off; empty: reject with an objective")
	fs.StringVar(&f.format, "report", "text", "summary format: json or text")
	fs.DurationVar(&f.stall, "stall-timeout", 30*time.Second, "give up waiting for answers after this long without progress")
	fs.BoolVar(&f.quiet, "quiet", false, "no live progress")
}

// config is the demo's configuration: run's, loaded the same way, with the
// demo model's flags applied to its first model.
func (f *demoFlags) config() (*config.Config, error) {
	errs := f.validate()
	if f.format != "json" && f.format != "text" {
		errs = append(errs, fmt.Errorf("--report %q: want json or text", f.format))
	}
	a, c, err := parseCost(f.model.cost)
	if err != nil {
		errs = append(errs, err)
	}
	if _, err := parseOutage(f.model.outage); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	cfg, _, err := config.LoadOver(demoDefaults(), f.cfg, os.Environ())
	if err != nil {
		return nil, err
	}
	m := config.DefaultModel
	if len(cfg.Models) > 0 {
		m = cfg.Models[0]
	}
	changed := func(name string) bool { return f.fs.Lookup(name).Changed }
	if changed("model") || len(cfg.Models) == 0 {
		m.Name = f.model.name
	}
	if changed("model-cost") || len(cfg.Models) == 0 {
		m.Sim.Fixed, m.Sim.PerItem = a, c
	}
	if changed("model-spin") {
		m.Sim.Spin = f.model.spin
	}
	if changed("max-batch-items") {
		m.MaxBatchItems = f.model.maxBatch
	}
	if changed("max-wait") {
		m.MaxWait = f.model.maxWait
	}
	if changed("model-concurrency") {
		m.Concurrency = f.model.concurrency
	}
	if changed("model-error-rate") {
		m.Sim.ErrorRate = f.model.errorRate
	}
	if changed("model-outage") {
		m.Sim.Outage = f.model.outage
	}
	if changed("model-objective") {
		m.LatencyObjective = f.model.objective
	}
	if changed("batching") {
		m.Batching = f.model.batching
	}
	if changed("admission") {
		m.Admission = f.model.admission
	}
	if changed("downstream-latency") {
		m.DownstreamLatency = f.model.downstream
	}
	cfg.Models = append([]config.Model{m}, cfg.Models[min(1, len(cfg.Models)):]...)
	if cfg.ExactlyOnce && cfg.InstanceID == "" {
		cfg.InstanceID = "demo" // one process, one broker: a fixed id is stable
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	return cfg, nil
}

// watcher follows the results topic as a client would, and records the
// first answer of each request id and when it arrived.
type watcher struct {
	mu       sync.Mutex
	answered map[string]bool
	byStatus map[schemas.Status]int
	lat      []float64
	last     time.Time
	// What the report breaks down: the latencies of SUCCEEDED answers, the
	// retry_after_ms of REJECTED ones, and per priority lane.
	okLat    []float64
	down     []float64 // SUCCEEDED: from the model's answer (completed_at) to here
	retry    []float64
	priority map[string]int32 // by request id, from the load generator
	lanes    map[int32]*laneTally
}

type laneTally struct {
	requests, succeeded, expired, rejected int
	okLat                                  []float64
}

func (w *watcher) sent(id string, p int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.priority[id] = p
	lt := w.lanes[p]
	if lt == nil {
		lt = &laneTally{}
		w.lanes[p] = lt
	}
	lt.requests++
}

// heapLive is the heap the last GC left live: it grows only with what the
// process keeps, not with garbage between collections.
func heapLive() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

func runDemo(ctx context.Context, cfg *config.Config, f *demoFlags, progress io.Writer) (report, error) {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel)) // validated
	log := slog.New(slog.NewTextHandler(progress, &slog.HandlerOptions{Level: lvl}))
	if f.quiet {
		progress = io.Discard
	}
	stagesCtx, stopStages := context.WithCancel(context.WithoutCancel(ctx))
	defer stopStages()
	p, err := startPipeline(stagesCtx, cfg, log, progress)
	if err != nil {
		return report{}, err
	}
	defer p.Close()
	c, t := p.cluster, p.graph.Topics
	stagesErr := make(chan error, 1)
	go func() { stagesErr <- p.set.Run(stagesCtx) }()

	w := &watcher{answered: map[string]bool{}, byStatus: map[schemas.Status]int{}, priority: map[string]int32{},
		lanes: map[int32]*laneTally{}}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watchDone := make(chan error, 1)
	go func() { watchDone <- w.run(watchCtx, c.kopts, p.codec, t.Results) }()

	start, before := time.Now(), costNow()
	var produced, decodable atomic.Int64
	spec := f.loadSpec
	spec.model = cfg.Models[0].Name
	if spec.priorityMix != "" {
		spec.sent = w.sent
	}
	var heap []float64 // live heap each second, MB
	genDone := make(chan error, 1)
	go func() {
		genDone <- generate(ctx, c.kopts, p.codec, t.Requests, spec, &produced, &decodable)
	}()

	adm, err := c.admin()
	if err != nil {
		return report{}, err
	}
	defer adm.Close()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	generating := true
	lastProgress, lastAnswered := time.Now(), 0
	var lastCalls, lastItems int64
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case err := <-stagesErr:
			return report{}, fmt.Errorf("stages stopped: %w", err)
		case err := <-genDone:
			generating = false
			if err != nil {
				return report{}, fmt.Errorf("load generator: %w", err)
			}
		case <-tick.C:
			w.mu.Lock()
			answered := len(w.answered)
			bs := fmt.Sprintf("ok=%d failed=%d expired=%d rejected=%d dup=%d", w.byStatus[schemas.StatusSucceeded],
				w.byStatus[schemas.StatusFailed], w.byStatus[schemas.StatusExpired], w.byStatus[schemas.StatusRejected],
				w.byStatus[schemas.StatusDuplicate])
			w.mu.Unlock()
			// The mean batch of the last second: it follows the offered rate.
			calls, items := simCounts(p.sims)
			mean := 0.0
			if calls > lastCalls {
				mean = float64(items-lastItems) / float64(calls-lastCalls)
			}
			lastCalls, lastItems = calls, items
			live := float64(heapLive()) / (1 << 20)
			heap = append(heap, round2(live))
			fmt.Fprintf(progress, "%5.1fs produced=%d answered=%d [%s] batch=%.1f heap=%.1fMB lag %s\n",
				time.Since(start).Seconds(), produced.Load(), answered, bs, mean, live, lagLine(ctx, adm, c.kopts, p.graph))
			if answered != lastAnswered {
				lastAnswered, lastProgress = answered, time.Now()
			}
			if !generating && int64(answered) >= decodable.Load() {
				break wait
			}
			if !generating && time.Since(lastProgress) > f.stall {
				fmt.Fprintf(progress, "no answer for %v: stopping with %d unanswered\n", f.stall, decodable.Load()-int64(answered))
				break wait
			}
		}
	}
	elapsed, after := w.lastAnswer().Sub(start), costNow()
	stopStages()
	if err := <-stagesErr; err != nil {
		return report{}, fmt.Errorf("stages: %w", err)
	}
	stopWatch()
	if err := <-watchDone; err != nil {
		return report{}, fmt.Errorf("results watcher: %w", err)
	}

	// The final numbers are a recount of the topics, not of the counters
	// above: the same code as verify, in this process.
	rep, err := verify(context.WithoutCancel(ctx), c, cfg.Topics.Prefix, cfg.Emit.ReplyTopics, cfg.CodecOptions(), nil)
	if err != nil {
		return report{}, err
	}
	calls, items := simCounts(p.sims)
	rep.ModelCalls = calls
	if calls > 0 {
		rep.MeanBatchSize = round2(float64(items) / float64(calls))
	}
	w.mu.Lock()
	if elapsed > 0 {
		rep.ThroughputRPS = round2(float64(len(w.answered)) / elapsed.Seconds())
	}
	rep.LatencyMs = percentiles(w.lat)
	if len(w.okLat) > 0 {
		l := percentiles(w.okLat)
		rep.SucceededLatencyMs = &l
	}
	if len(w.retry) > 0 {
		l := percentiles(w.retry)
		rep.RetryAfterMs = &l
	}
	if len(w.down) > 0 {
		l := percentiles(w.down)
		rep.DownstreamMs = &l
	}
	if len(w.lanes) > 0 {
		rep.Lanes = map[string]laneReport{}
		for p, lt := range w.lanes {
			lr := laneReport{Requests: lt.requests, Succeeded: lt.succeeded, Expired: lt.expired, Rejected: lt.rejected}
			if len(lt.okLat) > 0 {
				lr.SucceededLatencyMs = percentiles(lt.okLat)
			}
			rep.Lanes[laneName(p)] = lr
		}
	}
	w.mu.Unlock()
	rep.HeapLiveMB = heap
	cpu, allocs := after.perRequest(before, int(produced.Load()))
	rep.CPUMicrosPerRequest, rep.AllocsPerRequest = round2(cpu), round2(allocs)
	runtime.GC()
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	rep.HeapBytes = mem.HeapAlloc
	return rep, nil
}

// simCounts adds up the calls and items of the simulated models.
func simCounts(ms []*sim.Model) (calls, items int64) {
	for _, m := range ms {
		calls += m.Calls()
		items += m.Items()
	}
	return calls, items
}

func (w *watcher) lastAnswer() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

func (w *watcher) run(ctx context.Context, kopts []kgo.Opt, codec *schemas.Codec, topic string) error {
	cl, err := kgo.NewClient(append(slices.Clone(kopts), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(100*time.Millisecond))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		now := time.Now()
		fs.EachRecord(func(r *kgo.Record) {
			res, err := codec.DecodeResult(ctx, r.Value)
			if err != nil {
				return
			}
			w.mu.Lock()
			if !w.answered[res.RequestID] {
				w.answered[res.RequestID] = true
				w.byStatus[res.Status]++
				lat := -1.0
				if res.CreatedAtMs > 0 {
					lat = float64(now.Sub(time.UnixMilli(res.CreatedAtMs)).Microseconds()) / 1000
					w.lat = append(w.lat, lat)
				}
				var lt *laneTally
				if p, ok := w.priority[res.RequestID]; ok {
					lt = w.lanes[p]
				}
				switch res.Status {
				case schemas.StatusSucceeded:
					if res.CompletedAtMs > 0 {
						w.down = append(w.down, float64(now.Sub(time.UnixMilli(res.CompletedAtMs)).Microseconds())/1000)
					}
					if lat >= 0 {
						w.okLat = append(w.okLat, lat)
						if lt != nil {
							lt.okLat = append(lt.okLat, lat)
						}
					}
					if lt != nil {
						lt.succeeded++
					}
				case schemas.StatusRejected:
					w.retry = append(w.retry, float64(res.RetryAfterMs))
					if lt != nil {
						lt.rejected++
					}
				case schemas.StatusExpired:
					if lt != nil {
						lt.expired++
					}
				}
				w.last = now
			}
			w.mu.Unlock()
		})
	}
}

// generate produces the demo's load: requests keyed by idempotency key (so
// Kafka's default partitioner puts duplicates on their original's
// partition), at the given rate.
// loadSpec is the traffic generate produces.
type loadSpec struct {
	requests                      int
	rate                          float64 // per second; 0: as fast as possible
	duplicates, malformed, poison float64 // fractions
	model                         string
	// priorityMix is the fractions of requests with priority 1, 0 and -1
	// (the default lanes high, normal and low), "" for all 0.
	priorityMix string
	mix         [3]float64
	// sent, when set, is told each request's id and priority.
	sent func(id string, priority int32)
}

// mixPriorities are the priorities of the mix's shares: the default lanes'.
var mixPriorities = [3]int32{1, 0, -1}

// register defines the traffic's flags (demo and load share them).
func (s *loadSpec) register(fs *pflag.FlagSet) {
	fs.IntVar(&s.requests, "requests", 10000, "records to produce (duplicates and malformed included)")
	fs.Float64Var(&s.rate, "rate", 2000, "records per second (0: as fast as possible)")
	fs.Float64Var(&s.duplicates, "duplicates", 0, "fraction re-sent with a new request id and a recent idempotency key")
	fs.Float64Var(&s.malformed, "malformed", 0, "fraction of records that are not a decodable request")
	fs.Float64Var(&s.poison, "poison-items", 0, "fraction of requests the simulated model always fails")
	fs.StringVar(&s.priorityMix, "priority-mix", "", "H,N,L: fractions of requests with priority 1, 0 and -1 (the default lanes high, normal, low), e.g. 0.1,0.6,0.3; empty: all 0")
}

func (s *loadSpec) validate() []error {
	var errs []error
	for _, fr := range []struct {
		name string
		v    float64
	}{{"duplicates", s.duplicates}, {"malformed", s.malformed}, {"poison-items", s.poison}} {
		if fr.v < 0 || fr.v > 1 {
			errs = append(errs, fmt.Errorf("--%s %v: want a fraction in [0, 1]", fr.name, fr.v))
		}
	}
	if s.requests < 1 {
		errs = append(errs, fmt.Errorf("--requests %d: want at least 1", s.requests))
	}
	if s.rate < 0 {
		errs = append(errs, fmt.Errorf("--rate %v: want >= 0", s.rate))
	}
	if s.priorityMix != "" {
		parts := strings.Split(s.priorityMix, ",")
		sum := 0.0
		ok := len(parts) == 3
		for i := 0; ok && i < 3; i++ {
			v, err := strconv.ParseFloat(strings.TrimSpace(parts[i]), 64)
			ok = err == nil && v >= 0
			s.mix[i] = v
			sum += v
		}
		if !ok || sum <= 0 {
			errs = append(errs, fmt.Errorf("--priority-mix %q: want three fractions H,N,L (priority 1, 0, -1), e.g. 0.1,0.6,0.3", s.priorityMix))
		} else {
			for i := range s.mix {
				s.mix[i] /= sum
			}
		}
	}
	return errs
}

// priority draws a request's priority from the mix.
func (s *loadSpec) priority(rng *mrand.Rand) int32 {
	if s.priorityMix == "" {
		return 0
	}
	x := rng.Float64()
	for i, f := range s.mix {
		if x < f {
			return mixPriorities[i]
		}
		x -= f
	}
	return mixPriorities[2]
}

// generate produces a mix of requests, duplicates (a new request id with a
// recent idempotency key), malformed records and poison items (the simulated
// model always fails them).
func generate(ctx context.Context, kopts []kgo.Opt, codec *schemas.Codec, topic string, f loadSpec,
	produced, decodable *atomic.Int64) error {
	cl, err := kgo.NewClient(append(slices.Clone(kopts), kgo.ProducerLinger(time.Millisecond))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	var runID [4]byte
	_, _ = rand.Read(runID[:])
	run := hex.EncodeToString(runID[:])
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 7))
	recent := make([]string, 0, 1024) // keys to duplicate: recent, so inside the window
	var (
		failed atomic.Value
		wg     sync.WaitGroup
	)
	promise := func(_ *kgo.Record, err error) {
		defer wg.Done()
		if err != nil {
			failed.CompareAndSwap(nil, err)
		}
	}
	start := time.Now()
	for i := 0; i < f.requests; i++ {
		if f.rate > 0 {
			due := start.Add(time.Duration(float64(i) / f.rate * float64(time.Second)))
			if d := time.Until(due); d > time.Millisecond {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(d):
				}
			}
		}
		if err, _ := failed.Load().(error); err != nil {
			return err
		}
		rec := &kgo.Record{Topic: topic}
		if rng.Float64() < f.malformed {
			rec.Key = []byte(fmt.Sprintf("junk-%s-%d", run, i))
			rec.Value = make([]byte, 8+rng.IntN(64))
			for j := range rec.Value {
				rec.Value[j] = byte(rng.IntN(256))
			}
			rec.Value[0] = 0xff // never the wire format's magic byte
		} else {
			req := &schemas.Request{
				RequestID:   fmt.Sprintf("req-%s-%d", run, i),
				Model:       f.model,
				Inputs:      []schemas.Tensor{{Name: "x", Datatype: "FP32", Shape: []int64{1, 4}, FP32: []float32{rng.Float32(), rng.Float32(), rng.Float32(), float32(i % 97)}}},
				CreatedAtMs: time.Now().UnixMilli(),
			}
			if len(recent) > 0 && rng.Float64() < f.duplicates {
				req.IdempotencyKey = recent[rng.IntN(len(recent))]
			} else {
				req.IdempotencyKey = fmt.Sprintf("key-%s-%d", run, i)
				if len(recent) < cap(recent) {
					recent = append(recent, req.IdempotencyKey)
				} else {
					recent[rng.IntN(len(recent))] = req.IdempotencyKey
				}
			}
			if rng.Float64() < f.poison {
				req.Parameters = map[string]any{sim.PoisonParam: true}
			}
			req.Priority = f.priority(rng)
			if f.sent != nil {
				f.sent(req.RequestID, req.Priority)
			}
			v, err := codec.EncodeRequest(topic, req)
			if err != nil {
				return err
			}
			rec.Key, rec.Value = []byte(req.Key()), v
			decodable.Add(1)
		}
		wg.Add(1)
		cl.Produce(ctx, rec, promise)
		produced.Add(1)
	}
	// Wait for the acknowledgements, or for the end: a SIGTERM while the
	// broker is down must not wait for answers that will not come (closing
	// the client fails what is still buffered).
	acked := make(chan struct{})
	go func() { wg.Wait(); close(acked) }()
	select {
	case <-acked:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err, _ := failed.Load().(error); err != nil {
		return err
	}
	return nil
}

// lagLine is the records each stage group has not consumed yet, against
// the last stable offset with transaction markers discounted (as asyncinfer
// lag counts them): in exactly-once mode a marker is not work.
func lagLine(ctx context.Context, adm *kadm.Client, kopts []kgo.Opt, g topics.Graph) string {
	rows, err := admin.Lag(ctx, adm, g.Groups()...)
	if err != nil {
		return "?"
	}
	if err := admin.DiscountMarkers(ctx, kopts, rows, admin.MarkerCheckMax); err != nil {
		return "?"
	}
	total := map[string]int64{}
	for _, r := range rows {
		total[r.Group] += r.Lag
	}
	out := ""
	for _, st := range g.Stages {
		out += fmt.Sprintf("%s=%d ", st.Name, total[st.Group])
	}
	return out
}

// laneName names a priority of the mix by its default lane.
func laneName(p int32) string {
	switch {
	case p > 0:
		return "high"
	case p < 0:
		return "low"
	}
	return "normal"
}
