package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/asyncinfer/asyncinfer/connectors/sim"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/stages/dedup"
	"github.com/asyncinfer/asyncinfer/stages/emit"
	"github.com/asyncinfer/asyncinfer/stages/infer"
)

// Stage names, as --stages takes them.
const (
	stageDedup = "dedup"
	stageInfer = "infer"
	stageEmit  = "emit"
)

var allStages = []string{stageDedup, stageInfer, stageEmit}

// pipelineFlags are the settings shared by run and demo.
type pipelineFlags struct {
	prefix        string
	partitions    int32
	instanceID    string
	maxInflight   int
	linger        time.Duration
	window        time.Duration
	replyTopics   []string
	copyFailed    bool
	model         string
	modelCost     string
	modelSpin     bool
	maxBatch      int
	maxWait       time.Duration
	concurrency   int
	errorRate     float64
	outage        string
	retention     time.Duration
	retentionSize int64
}

func (f *pipelineFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.prefix, "topic-prefix", pipeline.DefaultTopicPrefix, "prefix of every topic name")
	fs.Int32Var(&f.partitions, "partitions", 4, "partitions of each topic, when the pipeline creates them")
	fs.StringVar(&f.instanceID, "instance-id", "", "static group membership id of this process (stable across restarts)")
	fs.IntVar(&f.maxInflight, "max-inflight", 2048, "records a stage holds unfinished before it pauses its input")
	fs.DurationVar(&f.linger, "producer-linger", 0, "how long producers wait to fill a batch (franz-go's 10ms default adds 10ms per hop)")
	fs.DurationVar(&f.window, "dedup-window", 10*time.Minute, "how long idempotency keys and emitted ids are remembered")
	fs.StringSliceVar(&f.replyTopics, "reply-topics", nil, "topics requests may name as reply_topic (besides the results topic)")
	fs.BoolVar(&f.copyFailed, "dlq-failed", false, "also copy FAILED results to the dlq topic, marked answered")
	fs.StringVar(&f.model, "model", "sim", "name of the served (simulated) model")
	fs.StringVar(&f.modelCost, "model-cost", "5ms,0.25ms", "simulated model cost a,c: a call of b items takes a + c*b")
	fs.BoolVar(&f.modelSpin, "model-spin", false, "burn CPU for the model cost instead of sleeping")
	fs.IntVar(&f.maxBatch, "max-batch", 64, "most items per model call")
	fs.DurationVar(&f.maxWait, "max-wait", 0, "longest wait for a fuller batch (0: greedy, take what is queued)")
	fs.IntVar(&f.concurrency, "model-concurrency", 1, "parallel model calls (workers)")
	fs.Float64Var(&f.errorRate, "model-error-rate", 0, "fraction of model calls that fail transiently")
	fs.StringVar(&f.outage, "model-outage", "", "model outage D@T: unavailable for D, starting T after the start (e.g. 2s@5s)")
	fs.DurationVar(&f.retention, "retention", time.Hour, "retention.ms of data topics the pipeline creates")
}

func (f *pipelineFlags) topics() pipeline.Topics { return pipeline.NewTopics(f.prefix) }

// parseCost parses "a,c" durations; bare numbers are milliseconds.
func parseCost(s string) (a, c time.Duration, err error) {
	parts := strings.Split(s, ",")
	if len(parts) != 2 {
		return 0, 0, fmt.Errorf("--model-cost %q: want a,c (e.g. 5ms,0.25ms)", s)
	}
	d := make([]time.Duration, 2)
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if v, perr := strconv.ParseFloat(p, 64); perr == nil {
			d[i] = time.Duration(v * float64(time.Millisecond))
		} else if d[i], err = time.ParseDuration(p); err != nil {
			return 0, 0, fmt.Errorf("--model-cost %q: %w", s, err)
		}
		if d[i] < 0 {
			return 0, 0, fmt.Errorf("--model-cost %q: negative cost", s)
		}
	}
	return d[0], d[1], nil
}

// parseOutage parses D@T.
func parseOutage(s string) ([]sim.Outage, error) {
	if s == "" {
		return nil, nil
	}
	d, t, ok := strings.Cut(s, "@")
	if !ok {
		return nil, fmt.Errorf("--model-outage %q: want D@T (e.g. 2s@5s)", s)
	}
	dur, err := time.ParseDuration(d)
	if err != nil {
		return nil, fmt.Errorf("--model-outage %q: %w", s, err)
	}
	at, err := time.ParseDuration(t)
	if err != nil {
		return nil, fmt.Errorf("--model-outage %q: %w", s, err)
	}
	return []sim.Outage{{Start: at, Duration: dur}}, nil
}

func (f *pipelineFlags) newModel() (*sim.Model, error) {
	a, c, err := parseCost(f.modelCost)
	if err != nil {
		return nil, err
	}
	outages, err := parseOutage(f.outage)
	if err != nil {
		return nil, err
	}
	return sim.New(sim.Config{Fixed: a, PerItem: c, Spin: f.modelSpin, ErrorRate: f.errorRate, Outages: outages})
}

// parseStages validates --stages.
func parseStages(s []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, st := range s {
		st = strings.TrimSpace(st)
		switch st {
		case stageDedup, stageInfer, stageEmit:
		default:
			return nil, fmt.Errorf("--stages: unknown stage %q (want some of %s)", st, strings.Join(allStages, ","))
		}
		if !seen[st] {
			seen[st] = true
			out = append(out, st)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("--stages: no stage given")
	}
	return out, nil
}

// newCodec binds every topic the process writes or reads.
func newCodec(ctx context.Context, registryURL string, t pipeline.Topics, replyTopics []string) (*schemas.Codec, error) {
	cl, err := sr.NewClient(sr.URLs(registryURL))
	if err != nil {
		return nil, fmt.Errorf("schema registry %s: %w", registryURL, err)
	}
	bind := map[string]schemas.Kind{
		t.Requests:   schemas.KindRequest,
		t.Accepted:   schemas.KindRequest,
		t.Outcomes:   schemas.KindResult,
		t.Results:    schemas.KindResult,
		t.DLQ:        schemas.KindDeadLetter,
		t.DedupState: schemas.KindStateEntry,
		t.EmittedIDs: schemas.KindStateEntry,
	}
	for _, r := range replyTopics {
		bind[r] = schemas.KindResult
	}
	c, err := schemas.NewCodec(ctx, cl, bind)
	if err != nil {
		return nil, fmt.Errorf("schema registry %s: %w", registryURL, err)
	}
	return c, nil
}

// createTopics creates the pipeline's topics (and reply topics) if missing.
func createTopics(ctx context.Context, brokers []string, f *pipelineFlags, replication int16) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	layout := pipeline.TopicLayout{Topics: f.topics(), Partitions: f.partitions, Retention: f.retention}
	if err := pipeline.CreateTopics(ctx, adm, layout, replication); err != nil {
		return err
	}
	for _, r := range f.replyTopics {
		if _, err := adm.CreateTopic(ctx, f.partitions, replication, nil, r); err != nil {
			return fmt.Errorf("create reply topic %s: %w", r, err)
		}
	}
	return nil
}

// stageSet is the runners of one process.
type stageSet struct {
	runners []*pipeline.Runner
	names   []string
	dedup   *dedup.Stage
	emit    *emit.Stage
	infer   *infer.Stage
}

type metricSet struct {
	pipe  *pipeline.Metrics
	dedup *dedup.Metrics
	infer *infer.Metrics
	emit  *emit.Metrics
}

func newMetricSet(reg prometheus.Registerer) *metricSet {
	return &metricSet{
		pipe:  pipeline.NewMetrics(reg),
		dedup: dedup.NewMetrics(reg),
		infer: infer.NewMetrics(reg),
		emit:  emit.NewMetrics(reg),
	}
}

// buildStages creates the runners of the given stages.
func buildStages(brokers []string, f *pipelineFlags, codec *schemas.Codec, model infer.Model, names []string,
	ms *metricSet, log *slog.Logger) (*stageSet, error) {
	t := f.topics()
	common := []pipeline.Option{
		pipeline.ConnOpts(kgo.SeedBrokers(brokers...)),
		pipeline.MaxInFlight(f.maxInflight),
		pipeline.ProducerLinger(f.linger),
		pipeline.DeadLetters(t.DLQ, pipeline.NewDeadLetterEncoder(codec, t.DLQ)),
		pipeline.WithLogger(log),
		pipeline.WithMetrics(ms.pipe),
	}
	set := &stageSet{}
	for _, name := range names {
		opts := append([]pipeline.Option(nil), common...)
		if f.instanceID != "" {
			opts = append(opts, pipeline.InstanceID(f.instanceID+"-"+name))
		}
		var (
			h     pipeline.Handler
			input string
			group = f.prefix + name
			err   error
		)
		switch name {
		case stageDedup:
			set.dedup, err = dedup.New(dedup.Config{Topics: t, Window: f.window}, codec, ms.dedup)
			h, input = set.dedup, t.Requests
			opts = append(opts, pipeline.ManualPartitions(t.DedupState))
		case stageInfer:
			set.infer, err = infer.New(t, codec, []infer.ModelConfig{{
				Name: f.model, Backend: model, MaxBatch: f.maxBatch, MaxWait: f.maxWait, Concurrency: f.concurrency,
			}}, f.maxInflight, ms.infer)
			h, input = set.infer, t.Accepted
		case stageEmit:
			set.emit, err = emit.New(emit.Config{Topics: t, ReplyTopics: f.replyTopics, Window: f.window,
				CopyFailedToDLQ: f.copyFailed}, codec, ms.emit)
			h, input = set.emit, t.Outcomes
			opts = append(opts, pipeline.ManualPartitions(t.EmittedIDs))
		}
		if err != nil {
			return nil, err
		}
		r, err := pipeline.New(name, group, []string{input}, h, opts...)
		if err != nil {
			return nil, err
		}
		set.runners = append(set.runners, r)
		set.names = append(set.names, name)
	}
	return set, nil
}

// run runs every runner until ctx is done; the first failure stops them all.
func (s *stageSet) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for i, r := range s.runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Run(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", s.names[i], err))
				mu.Unlock()
				cancel()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// groups are the consumer groups of the stages, in pipeline order.
func groups(prefix string) []string {
	out := make([]string, len(allStages))
	for i, s := range allStages {
		out[i] = prefix + s
	}
	return out
}
