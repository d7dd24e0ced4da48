package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/asyncinfer/asyncinfer/config"
	"github.com/asyncinfer/asyncinfer/connectors/sim"
	"github.com/asyncinfer/asyncinfer/internal/stack"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/stages/infer"
)

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
	exactlyOnce   bool
}

// register defines the flags, with run's defaults (package config) except
// where a demo wants its own (a short retention).
func (f *pipelineFlags) register(fs *pflag.FlagSet) {
	def, md := config.Defaults(), config.ModelDefaults(config.DefaultModel)
	fs.StringVar(&f.prefix, "topic-prefix", def.Topics.Prefix, "prefix of every topic name")
	fs.Int32Var(&f.partitions, "partitions", def.Topics.Partitions, "partitions of each topic, when the pipeline creates them")
	fs.StringVar(&f.instanceID, "instance-id", "", "static group membership id of this process (stable across restarts)")
	fs.IntVar(&f.maxInflight, "max-inflight", def.Runner.MaxInflight, "records a stage holds unfinished before it pauses its input")
	fs.DurationVar(&f.linger, "producer-linger", def.Runner.ProducerLinger, "how long producers wait to fill a batch (franz-go's 10ms default adds 10ms per hop)")
	fs.DurationVar(&f.window, "dedup-window", def.Dedup.Window, "how long idempotency keys and emitted ids are remembered")
	fs.StringSliceVar(&f.replyTopics, "reply-topics", nil, "topics requests may name as reply_topic (besides the results topic)")
	fs.BoolVar(&f.copyFailed, "dlq-failed", false, "also copy FAILED results to the dlq topic, marked answered")
	fs.StringVar(&f.model, "model", md.Name, "name of the served (simulated) model")
	fs.StringVar(&f.modelCost, "model-cost", md.Sim.Fixed.String()+","+md.Sim.PerItem.String(), "simulated model cost a,c: a call of b items takes a + c*b")
	fs.BoolVar(&f.modelSpin, "model-spin", false, "burn CPU for the model cost instead of sleeping")
	fs.IntVar(&f.maxBatch, "max-batch", md.MaxBatchItems, "most items per model call")
	fs.DurationVar(&f.maxWait, "max-wait", 0, "longest wait for a fuller batch (0: greedy, take what is queued)")
	fs.IntVar(&f.concurrency, "model-concurrency", md.Concurrency, "parallel model calls (workers)")
	fs.Float64Var(&f.errorRate, "model-error-rate", 0, "fraction of model calls that fail transiently")
	fs.StringVar(&f.outage, "model-outage", "", "model outage D@T: unavailable for D, starting T after the start (e.g. 2s@5s)")
	fs.DurationVar(&f.retention, "retention", time.Hour, "retention.ms of data topics the pipeline creates")
	fs.BoolVar(&f.exactlyOnce, "exactly-once", false, "run every stage in Kafka transactions (exactly one result per request id)")
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
	o, err := config.ParseOutage(s)
	if err != nil || o == nil {
		if err != nil {
			err = fmt.Errorf("--model-outage %w", err)
		}
		return nil, err
	}
	return []sim.Outage{{Start: o.Start, Duration: o.Duration}}, nil
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

// newCodec binds every topic the process writes or reads.
func newCodec(ctx context.Context, registryURL string, t pipeline.Topics, replyTopics []string) (*schemas.Codec, error) {
	cl, err := sr.NewClient(sr.URLs(registryURL))
	if err != nil {
		return nil, fmt.Errorf("schema registry %s: %w", registryURL, err)
	}
	c, err := schemas.NewCodec(ctx, cl, t.Kinds(replyTopics...))
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
	layout := pipeline.TopicLayout{Topics: f.topics(), Partitions: f.partitions, Retention: f.retention, ReplyTopics: f.replyTopics}
	return pipeline.CreateTopics(ctx, adm, layout, replication)
}

// stackOptions are the stack's options from the flags.
func (f *pipelineFlags) stackOptions(brokers []string, model infer.Model, ms *stack.Metrics, log *slog.Logger) stack.Options {
	instance := f.instanceID
	if instance == "" && f.exactlyOnce {
		instance = "demo" // one process, one embedded broker: a fixed id is stable
	}
	return stack.Options{
		Conn:            []kgo.Opt{kgo.SeedBrokers(brokers...)},
		Prefix:          f.prefix,
		InstanceID:      instance,
		MaxInflight:     f.maxInflight,
		Linger:          f.linger,
		DedupWindow:     f.window,
		ReplyTopics:     f.replyTopics,
		CopyFailedToDLQ: f.copyFailed,
		Models: []infer.ModelConfig{{
			Name: f.model, Backend: model, MaxBatch: f.maxBatch, MaxWait: f.maxWait, Concurrency: f.concurrency,
		}},
		Metrics:     ms,
		Logger:      log,
		ExactlyOnce: f.exactlyOnce,
	}
}
