// Package stack wires the pipeline's stages (dedup, infer, emit) into
// runners, as the binary runs them and as tests run them: one process may run
// any subset, each stage in its own consumer group, each wired from its
// declaration in the graph (package topics).
package stack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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
	"github.com/asyncinfer/asyncinfer/topics"
)

// Options are what the stages of one process share.
type Options struct {
	Conn       []kgo.Opt    // seed brokers, TLS, SASL, client id
	Graph      topics.Graph // the pipeline's declaration; zero: the default graph
	InstanceID string       // static membership id, the same in every stage group (ids are unique per group)
	// MaxInflight bounds each stage's unfinished records; 0 for
	// pipeline.DefaultMaxInFlight.
	MaxInflight int
	// MaxInflightBytes bounds their bytes too (0: the runner's default;
	// negative: none).
	MaxInflightBytes int64
	Linger           time.Duration
	// MaxRecordBytes and MaxDeadLetterBytes are the max.message.bytes of
	// the data topics and of the dlq (0: the runner's defaults).
	MaxRecordBytes, MaxDeadLetterBytes int
	CopyFailedToDLQ                    bool
	// ExactlyOnce runs every stage transactionally (pipeline.ExactlyOnce),
	// each unit bounded by TxnTimeout (0: the runner's default).
	ExactlyOnce bool
	TxnTimeout  time.Duration
	Models      []infer.ModelConfig
	// Admission is how dedup admits each model (none listed: every model
	// is admitted without a look).
	Admission []dedup.ModelAdmission
	// WaitFractions are the lanes' admission thresholds by lane name
	// (dedup.Lane.WaitFraction; missing: 1).
	WaitFractions map[string]float64
	// Downstream is the lag watcher's view for dedup's admission (nil:
	// none).
	Downstream dedup.Downstream
	Metrics    *Metrics // nil: unregistered
	// KafkaMetrics, when set, gets each stage's franz-go client metrics
	// (kprom: connections, bytes, batches, buffered records, request
	// latency), as asyncinfer_kafka_* labelled by stage.
	KafkaMetrics prometheus.Registerer
	Logger       *slog.Logger
	// Runner are more runner options, after the ones above (tests).
	Runner []pipeline.Option
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
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	var (
		m    Metrics
		errs [4]error
	)
	m.Pipe, errs[0] = pipeline.NewMetrics(reg)
	m.Dedup, errs[1] = dedup.NewMetrics(reg)
	m.Infer, errs[2] = infer.NewMetrics(reg)
	m.Emit, errs[3] = emit.NewMetrics(reg)
	if err := errors.Join(errs[:]...); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return &m, nil
}

// Set is the runners of one process.
type Set struct {
	Runners []*pipeline.Runner
	Names   []string
	Dedup   *dedup.Stage
	Infer   *infer.Stage
	Emit    *emit.Stage
}

// ParseStages validates stage names against the graph, dropping repeats.
func ParseStages(g topics.Graph, names []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, st := range names {
		if _, ok := g.Stage(st); !ok {
			return nil, fmt.Errorf("unknown stage %q (want some of %v)", st, g.StageNames())
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
		m, err := NewMetrics(nil)
		if err != nil {
			return nil, err
		}
		o.Metrics = m
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Graph.Stages == nil {
		g, err := topics.NewGraph(topics.GraphOptions{})
		if err != nil {
			return nil, err
		}
		o.Graph = g
	}
	if o.MaxInflight <= 0 {
		o.MaxInflight = pipeline.DefaultMaxInFlight
	}
	common := []pipeline.Option{
		pipeline.ConnOpts(o.Conn...),
		pipeline.WithCodec(codec),
		pipeline.ProducerLinger(o.Linger),
		pipeline.WithLogger(o.Logger),
		pipeline.WithMetrics(o.Metrics.Pipe),
		pipeline.MaxInFlight(o.MaxInflight),
	}
	switch {
	case o.MaxInflightBytes > 0:
		common = append(common, pipeline.MaxInFlightBytes(o.MaxInflightBytes))
	case o.MaxInflightBytes < 0:
		common = append(common, pipeline.MaxInFlightBytes(0))
	}
	if o.MaxRecordBytes > 0 {
		common = append(common, pipeline.MaxRecordBytes(o.MaxRecordBytes))
	}
	// Dead letters go through the same producer as everything else, whose
	// batches are bounded by the data topics' limit: a dead letter must fit
	// both.
	dl := o.MaxDeadLetterBytes
	if o.MaxRecordBytes > 0 && (dl <= 0 || o.MaxRecordBytes < dl) {
		dl = o.MaxRecordBytes
	}
	if dl > 0 {
		common = append(common, pipeline.MaxDeadLetterBytes(dl))
	}
	// The process's name in the pressure topic's keys: its instance id, else
	// one of its own (a restart then publishes under a new key; the old one
	// goes stale, then ages out).
	instance := o.InstanceID
	if instance == "" {
		instance = randomID()
	}
	set := &Set{}
	for _, name := range names {
		st, ok := o.Graph.Stage(name)
		if !ok {
			return nil, fmt.Errorf("unknown stage %q", name)
		}
		opts := slices.Clone(common)
		if o.InstanceID != "" {
			opts = append(opts, pipeline.InstanceID(o.InstanceID))
		}
		if o.ExactlyOnce {
			opts = append(opts, pipeline.ExactlyOnce(o.TxnTimeout))
		}
		if o.KafkaMetrics != nil {
			opts = append(opts, pipeline.ClientHooks(KafkaClientMetrics(o.KafkaMetrics, name)))
		}
		opts = append(opts, o.Runner...)
		var (
			r   *pipeline.Runner
			err error
		)
		switch name {
		case topics.Dedup:
			var lanes []dedup.Lane
			for _, l := range o.Graph.Lanes {
				lanes = append(lanes, dedup.Lane{Lane: l, WaitFraction: o.WaitFractions[l.Name]})
			}
			set.Dedup, err = dedup.New(dedup.Config{CopyFailedToDLQ: o.CopyFailedToDLQ, Lanes: lanes, Admission: o.Admission,
				Downstream: o.Downstream, Pressure: &dedup.PressureConfig{Conn: o.Conn, Codec: codec, Topic: o.Graph.Topics.Pressure,
					Instance: instance, Logger: o.Logger.With("stage", name)}}, o.Metrics.Dedup)
			if err == nil {
				r, err = pipeline.New(st, dedup.Decoder(codec), set.Dedup, opts...)
			}
		case topics.Infer:
			set.Infer, err = infer.New(infer.Config{Models: o.Models, QueueCap: o.MaxInflight, CopyFailedToDLQ: o.CopyFailedToDLQ,
				Lanes: o.Graph.Lanes, Pressure: &infer.PressureConfig{Conn: o.Conn, Codec: codec, Topic: o.Graph.Topics.Pressure,
					Instance: instance, Logger: o.Logger.With("stage", name)}}, o.Metrics.Infer)
			if err == nil {
				r, err = pipeline.New(st, infer.Decoder(codec), set.Infer, opts...)
			}
		case topics.Emit:
			results := st.Outputs[0].Topics
			set.Emit = emit.New(emit.Config{Results: results[0], ReplyTopics: results[1:]}, codec, o.Metrics.Emit)
			r, err = pipeline.New(st, emit.Decoder(codec), set.Emit, opts...)
		default:
			err = fmt.Errorf("stage %q has no implementation", name)
		}
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
// as asyncinfer_kafka_*, labelled with the stage (or tool) using it. Every
// metric docs/metrics.md lists is reported: kprom registers its batch,
// record and compressed-byte counters and its request histograms always,
// but fills them only when asked (they stayed empty before), and the
// records per produced batch are how an operator sees whether produce
// requests carry many records under load.
func KafkaClientMetrics(reg prometheus.Registerer, stage string) *kprom.Metrics {
	return kprom.NewMetrics("asyncinfer", kprom.Subsystem("kafka"), kprom.Registerer(reg),
		kprom.WithStaticLabel(prometheus.Labels{"stage": stage}),
		kprom.FetchAndProduceDetail(kprom.ByNode, kprom.ByTopic, kprom.Batches, kprom.Records,
			kprom.CompressedBytes, kprom.UncompressedBytes),
		kprom.Histograms(kprom.ReadWait, kprom.ReadTime, kprom.WriteWait, kprom.WriteTime,
			kprom.RequestDurationE2E, kprom.RequestThrottled))
}

func randomID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
