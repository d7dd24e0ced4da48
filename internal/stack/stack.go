// Package stack wires the pipeline's stages (dedup, infer, emit) into
// runners, as the binary runs them and as tests run them: one process may run
// any subset, each stage in its own consumer group.
package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/stages/dedup"
	"github.com/asyncinfer/asyncinfer/stages/emit"
	"github.com/asyncinfer/asyncinfer/stages/infer"
)

// Stage names.
const (
	Dedup = "dedup"
	Infer = "infer"
	Emit  = "emit"
)

// All is every stage, in pipeline order.
var All = []string{Dedup, Infer, Emit}

// Options are what the stages of one process share.
type Options struct {
	Conn        []kgo.Opt // seed brokers, TLS, SASL, client id
	Prefix      string    // of topic and group names; "" for pipeline.DefaultTopicPrefix
	InstanceID  string    // static membership id, the same in every stage group (ids are unique per group)
	MaxInflight int       // per stage; 0 for pipeline.DefaultMaxInFlight
	Linger      time.Duration
	// DedupWindow is how long idempotency keys and emitted ids are kept.
	DedupWindow     time.Duration
	ReplyTopics     []string
	CopyFailedToDLQ bool
	// ExactlyOnce runs every stage transactionally (pipeline.ExactlyOnce),
	// each unit bounded by TxnTimeout (0: the runner's default).
	ExactlyOnce bool
	TxnTimeout  time.Duration
	Models      []infer.ModelConfig
	Metrics     *Metrics // nil: unregistered
	// KafkaMetrics, when set, gets each stage's franz-go client metrics
	// (kprom: connections, bytes, batches, buffered records, request
	// latency), as asyncinfer_kafka_* labelled by stage.
	KafkaMetrics prometheus.Registerer
	Logger       *slog.Logger
}

func (o *Options) prefix() string {
	if o.Prefix == "" {
		return pipeline.DefaultTopicPrefix
	}
	return o.Prefix
}

// Topics names the deployment's topics.
func (o *Options) Topics() pipeline.Topics { return pipeline.NewTopics(o.prefix()) }

// Group is the consumer group of a stage.
func Group(prefix, stage string) string {
	if prefix == "" {
		prefix = pipeline.DefaultTopicPrefix
	}
	return prefix + stage
}

// Groups are the consumer groups of every stage, in pipeline order.
func Groups(prefix string) []string {
	out := make([]string, len(All))
	for i, s := range All {
		out[i] = Group(prefix, s)
	}
	return out
}

// Metrics are every stage's metrics.
type Metrics struct {
	Pipe  *pipeline.Metrics
	Dedup *dedup.Metrics
	Infer *infer.Metrics
	Emit  *emit.Metrics
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	return &Metrics{
		Pipe:  pipeline.NewMetrics(reg),
		Dedup: dedup.NewMetrics(reg),
		Infer: infer.NewMetrics(reg),
		Emit:  emit.NewMetrics(reg),
	}
}

// Set is the runners of one process.
type Set struct {
	Runners []*pipeline.Runner
	Names   []string
	Dedup   *dedup.Stage
	Infer   *infer.Stage
	Emit    *emit.Stage
}

// ParseStages validates stage names, dropping repeats.
func ParseStages(names []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, st := range names {
		switch st {
		case Dedup, Infer, Emit:
		default:
			return nil, fmt.Errorf("unknown stage %q (want some of dedup, infer, emit)", st)
		}
		if !seen[st] {
			seen[st] = true
			out = append(out, st)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no stage given")
	}
	return out, nil
}

// Build creates the runners of the named stages.
func Build(o Options, codec *schemas.Codec, names []string) (*Set, error) {
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	t := o.Topics()
	common := []pipeline.Option{
		pipeline.ConnOpts(o.Conn...),
		pipeline.ProducerLinger(o.Linger),
		pipeline.DeadLetters(t.DLQ, pipeline.NewDeadLetterEncoder(codec, t.DLQ)),
		pipeline.WithLogger(o.Logger),
		pipeline.WithMetrics(o.Metrics.Pipe),
	}
	if o.MaxInflight <= 0 {
		o.MaxInflight = pipeline.DefaultMaxInFlight
	}
	common = append(common, pipeline.MaxInFlight(o.MaxInflight))
	set := &Set{}
	for _, name := range names {
		opts := append([]pipeline.Option(nil), common...)
		if o.InstanceID != "" {
			opts = append(opts, pipeline.InstanceID(o.InstanceID))
		}
		if o.ExactlyOnce {
			opts = append(opts, pipeline.ExactlyOnce(o.TxnTimeout))
		}
		if o.KafkaMetrics != nil {
			opts = append(opts, pipeline.ClientHooks(KafkaClientMetrics(o.KafkaMetrics, name)))
		}
		var (
			h     pipeline.Handler
			input string
			err   error
		)
		switch name {
		case Dedup:
			set.Dedup, err = dedup.New(dedup.Config{Topics: t, Window: o.DedupWindow}, codec, o.Metrics.Dedup)
			h, input = set.Dedup, t.Requests
			opts = append(opts, pipeline.ManualPartitions(t.DedupState))
		case Infer:
			set.Infer, err = infer.New(t, codec, o.Models, o.MaxInflight, o.Metrics.Infer)
			h, input = set.Infer, t.Accepted
		case Emit:
			set.Emit, err = emit.New(emit.Config{Topics: t, ReplyTopics: o.ReplyTopics, Window: o.DedupWindow,
				CopyFailedToDLQ: o.CopyFailedToDLQ}, codec, o.Metrics.Emit)
			h, input = set.Emit, t.Outcomes
			opts = append(opts, pipeline.ManualPartitions(t.EmittedIDs))
		default:
			err = fmt.Errorf("unknown stage %q", name)
		}
		if err != nil {
			return nil, err
		}
		r, err := pipeline.New(name, Group(o.Prefix, name), []string{input}, h, opts...)
		if err != nil {
			return nil, err
		}
		set.Runners = append(set.Runners, r)
		set.Names = append(set.Names, name)
	}
	return set, nil
}

// Run runs every runner until ctx is done; the first failure stops them all.
func (s *Set) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for i, r := range s.Runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.Run(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", s.Names[i], err))
				mu.Unlock()
				cancel()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// KafkaClientMetrics are franz-go's client metrics (kprom) for one client,
// as asyncinfer_kafka_*, labelled with the stage (or tool) using it.
func KafkaClientMetrics(reg prometheus.Registerer, stage string) *kprom.Metrics {
	return kprom.NewMetrics("asyncinfer", kprom.Subsystem("kafka"), kprom.Registerer(reg),
		kprom.WithStaticLabel(prometheus.Labels{"stage": stage}))
}
