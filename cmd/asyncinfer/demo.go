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
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/asyncinfer/asyncinfer/connectors/sim"
	"github.com/asyncinfer/asyncinfer/internal/stack"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

type demoFlags struct {
	pipelineFlags
	loadSpec
	dataDir  string
	format   string
	stall    time.Duration
	quiet    bool
	logLevel string
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

The simulated model costs a + c*b for a batch of b (--model-cost a,c); the
defaults (5ms + 0.25ms per item, 2,000 requests/s) keep it busy, so batching
is visible: far fewer model calls than requests.`,
		Example: `  asyncinfer demo
  asyncinfer demo --requests 20000 --duplicates 0.1 --malformed 0.01 --report json
  asyncinfer demo --poison-items 0.001 --model-error-rate 0.02 --model-outage 2s@3s
  asyncinfer demo --data-dir /tmp/ai && asyncinfer verify --data-dir /tmp/ai`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.validate(); err != nil {
				return err
			}
			rep, err := runDemo(cmd.Context(), f, cmd.ErrOrStderr())
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
	f.pipelineFlags.register(fs)
	f.loadSpec.register(fs)
	fs.StringVar(&f.dataDir, "data-dir", "", "keep the embedded broker's data (and registry) here, for verify --data-dir")
	fs.StringVar(&f.format, "report", "text", "summary format: json or text")
	fs.DurationVar(&f.stall, "stall-timeout", 30*time.Second, "give up waiting for answers after this long without progress")
	fs.BoolVar(&f.quiet, "quiet", false, "no live progress")
	fs.StringVar(&f.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
}

func (f *demoFlags) validate() error {
	errs := f.loadSpec.validate()
	if f.format != "json" && f.format != "text" {
		errs = append(errs, fmt.Errorf("--report %q: want json or text", f.format))
	}
	if f.partitions < 1 {
		errs = append(errs, fmt.Errorf("--partitions %d: want at least 1", f.partitions))
	}
	if _, _, err := parseCost(f.modelCost); err != nil {
		errs = append(errs, err)
	}
	if _, err := parseOutage(f.outage); err != nil {
		errs = append(errs, err)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.logLevel)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level %q: %w", f.logLevel, err))
	}
	return errors.Join(errs...)
}

// watcher follows the results topic as a client would, and records the
// first answer of each request id and when it arrived.
type watcher struct {
	mu       sync.Mutex
	answered map[string]bool
	byStatus map[schemas.Status]int
	lat      []float64
	last     time.Time
}

func runDemo(ctx context.Context, f *demoFlags, progress io.Writer) (report, error) {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(f.logLevel))
	log := slog.New(slog.NewTextHandler(progress, &slog.HandlerOptions{Level: lvl}))
	if f.quiet {
		progress = io.Discard
	}

	e, err := startEmbedded(embeddedConfig{dataDir: f.dataDir})
	if err != nil {
		return report{}, err
	}
	defer e.Close()
	brokers := e.brokers()
	t := f.topics()
	// Retention bounds the embedded broker's memory on a long demo.
	if err := createTopics(ctx, brokers, &f.pipelineFlags, 1); err != nil {
		return report{}, err
	}
	codec, err := newCodec(ctx, e.url, t, f.replyTopics)
	if err != nil {
		return report{}, err
	}
	if err := e.saveRegistry(ctx); err != nil {
		return report{}, err
	}
	model, err := f.newModel()
	if err != nil {
		return report{}, err
	}
	set, err := stack.Build(f.stackOptions(brokers, model, stack.NewMetrics(prometheus.NewRegistry()), log), codec, stack.All)
	if err != nil {
		return report{}, err
	}
	stagesCtx, stopStages := context.WithCancel(context.WithoutCancel(ctx))
	defer stopStages()
	stagesErr := make(chan error, 1)
	go func() { stagesErr <- set.Run(stagesCtx) }()

	w := &watcher{answered: map[string]bool{}, byStatus: map[schemas.Status]int{}}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watchDone := make(chan error, 1)
	go func() { watchDone <- w.run(watchCtx, brokers, codec, t.Results) }()

	start := time.Now()
	var produced, decodable atomic.Int64
	genDone := make(chan error, 1)
	go func() {
		genDone <- generate(ctx, []kgo.Opt{kgo.SeedBrokers(brokers...)}, codec, t.Requests, f.load(), &produced, &decodable)
	}()

	adm, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return report{}, err
	}
	defer adm.Close()
	kadmc := kadm.NewClient(adm)

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	generating := true
	lastProgress, lastAnswered := time.Now(), 0
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
			mean := 0.0
			if c := model.Calls(); c > 0 {
				mean = float64(model.Items()) / float64(c)
			}
			fmt.Fprintf(progress, "%5.1fs produced=%d answered=%d [%s] batch=%.1f lag %s\n",
				time.Since(start).Seconds(), produced.Load(), answered, bs, mean, lagLine(ctx, kadmc, f.prefix))
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
	elapsed := w.lastAnswer().Sub(start)
	stopStages()
	if err := <-stagesErr; err != nil {
		return report{}, fmt.Errorf("stages: %w", err)
	}
	stopWatch()
	<-watchDone

	// The final numbers are a recount of the topics, not of the counters
	// above: the same code as verify, in this process.
	rctx := context.WithoutCancel(ctx)
	srcl, err := sr.NewClient(sr.URLs(e.url))
	if err != nil {
		return report{}, err
	}
	rep, err := verify(rctx, &cluster{kopts: []kgo.Opt{kgo.SeedBrokers(brokers...)}, registry: srcl}, f.prefix, f.replyTopics, nil)
	if err != nil {
		return report{}, err
	}
	rep.ModelCalls = model.Calls()
	if rep.ModelCalls > 0 {
		rep.MeanBatchSize = round2(float64(model.Items()) / float64(rep.ModelCalls))
	}
	w.mu.Lock()
	if elapsed > 0 {
		rep.ThroughputRPS = round2(float64(len(w.answered)) / elapsed.Seconds())
	}
	rep.LatencyMs = percentiles(w.lat)
	w.mu.Unlock()
	runtime.GC()
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	rep.HeapBytes = mem.HeapAlloc
	return rep, nil
}

func (w *watcher) lastAnswer() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

func (w *watcher) run(ctx context.Context, brokers []string, codec *schemas.Codec, topic string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(100*time.Millisecond))
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
				if res.CreatedAtMs > 0 {
					w.lat = append(w.lat, float64(now.Sub(time.UnixMilli(res.CreatedAtMs)).Microseconds())/1000)
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
}

// register defines the traffic's flags (demo and load share them).
func (s *loadSpec) register(fs *pflag.FlagSet) {
	fs.IntVar(&s.requests, "requests", 10000, "records to produce (duplicates and malformed included)")
	fs.Float64Var(&s.rate, "rate", 2000, "records per second (0: as fast as possible)")
	fs.Float64Var(&s.duplicates, "duplicates", 0, "fraction re-sent with a new request id and a recent idempotency key")
	fs.Float64Var(&s.malformed, "malformed", 0, "fraction of records that are not a decodable request")
	fs.Float64Var(&s.poison, "poison-items", 0, "fraction of requests the simulated model always fails")
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
	return errs
}

// load is the traffic the demo generates, for the model it serves.
func (f *demoFlags) load() loadSpec {
	s := f.loadSpec
	s.model = f.pipelineFlags.model
	return s
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
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		return err
	}
	return nil
}

// lagLine is the records each stage group has not consumed yet.
func lagLine(ctx context.Context, adm *kadm.Client, prefix string) string {
	gs := stack.Groups(prefix)
	lags, err := adm.Lag(ctx, gs...)
	if err != nil {
		return "?"
	}
	out := ""
	for i, g := range gs {
		l := lags[g]
		out += fmt.Sprintf("%s=%d ", stack.All[i], l.Lag.Total())
	}
	return out
}

var _ = pipeline.PauseInflight
var _ = os.Stderr
