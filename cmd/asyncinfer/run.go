package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/asyncinfer/asyncinfer/admin"
	"github.com/asyncinfer/asyncinfer/config"
	"github.com/asyncinfer/asyncinfer/connectors/sim"
	"github.com/asyncinfer/asyncinfer/internal/stack"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/stages/dedup"
	"github.com/asyncinfer/asyncinfer/stages/infer"
	"github.com/asyncinfer/asyncinfer/topics"
)

func newRunCmd() *cobra.Command {
	var fl *config.Flags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run pipeline stages against a Kafka cluster (or all of them on an embedded broker)",
		Long: `run runs the configured stages (default: all) in this process until SIGINT or
SIGTERM, then drains: it stops fetching, finishes the records in flight,
commits, and leaves.

Settings come from a YAML file (--config), ASYNCINFER_* environment variables
and flags, in that order of precedence from lowest to highest; "asyncinfer
config reference" lists them all, "asyncinfer config print" shows the result.

Without kafka.brokers, every stage must run here: an embedded broker and schema
registry are started, and their addresses printed. With kafka.brokers, a schema
registry is required (registry.url), and any subset of the stages may run, each
in as many processes as the topics have partitions.

The admin server (admin_addr, default 127.0.0.1:9464) serves /metrics,
/healthz, /readyz (assigned and state restored) and a status page at /.`,
		Example: `  # everything in one process, on an embedded broker
  asyncinfer run

  # one stage against a cluster, as a static member
  asyncinfer run --brokers kafka-1:9092 --registry http://registry:8081 --stages infer --instance-id infer-0

  # a secured cluster, settings in a file, the password from the environment
  ASYNCINFER_KAFKA_SASL_PASSWORD=... asyncinfer run --config /etc/asyncinfer/prod.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := loadConfig(fl, cmd)
			if err != nil {
				return err
			}
			return runPipeline(cmd.Context(), cfg, log, cmd)
		},
	}
	fl = config.BindFlags(cmd.Flags())
	return cmd
}

// loadConfig loads the configuration and makes the logger it asks for.
func loadConfig(fl *config.Flags, cmd *cobra.Command) (*config.Config, *slog.Logger, error) {
	cfg, src, err := config.Load(fl, os.Environ())
	if err != nil {
		return nil, nil, err
	}
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel)) // validated
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lvl}))
	for _, w := range src.Warn {
		log.Warn(w)
	}
	return cfg, log, nil
}

// cluster is a connection to Kafka and the registry, checked.
type cluster struct {
	kopts    []kgo.Opt
	registry *sr.Client
	embedded *embedded // nil: an external cluster
}

func (c *cluster) Close() {
	if c.embedded != nil {
		c.embedded.Close()
	}
}

// connect reaches the configured cluster, or starts the embedded one when
// embeddedOK and no brokers are configured, and checks both the broker and the
// registry so that a wrong setting fails here, with the setting's name.
func connect(ctx context.Context, cfg *config.Config, embeddedOK bool, log *slog.Logger) (*cluster, error) {
	c := &cluster{}
	var brokers []string
	var url string
	if len(cfg.Kafka.Brokers) == 0 {
		if !embeddedOK {
			return nil, errors.New("kafka.brokers (--brokers) is required: this command talks to an existing cluster (asyncinfer dev-broker runs one on this machine)")
		}
		e, err := startEmbedded(embeddedConfig{dataDir: cfg.DataDir})
		if err != nil {
			return nil, err
		}
		c.embedded = e
		brokers, url = e.brokers(), e.url
		log.Info("embedded broker started", "brokers", brokers, "registry", url)
	}
	kopts, err := cfg.KafkaOpts(brokers...)
	if err != nil {
		c.Close()
		return nil, err
	}
	if err := config.CheckKafka(ctx, cfg, kopts); err != nil {
		c.Close()
		return nil, err
	}
	ropts, err := cfg.RegistryOpts(url)
	if err != nil {
		c.Close()
		return nil, err
	}
	c.registry, err = sr.NewClient(ropts...)
	if err == nil {
		err = config.CheckRegistry(ctx, cfg, c.registry)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	c.kopts = kopts
	return c, nil
}

// connectTool loads the configuration and connects to an existing cluster:
// what every tool (topics, lag, produce, results) starts with.
func connectTool(cmd *cobra.Command, fl *config.Flags) (*config.Config, *slog.Logger, *cluster, error) {
	cfg, log, err := loadConfig(fl, cmd)
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := connect(cmd.Context(), cfg, false, log)
	if err != nil {
		return nil, nil, nil, err
	}
	return cfg, log, c, nil
}

// admin is an admin client of the cluster; close it with its kgo client.
func (c *cluster) admin() (*kadm.Client, error) {
	cl, err := kgo.NewClient(c.kopts...)
	if err != nil {
		return nil, err
	}
	return kadm.NewClient(cl), nil
}

// graphOf is the pipeline the configuration declares.
func graphOf(cfg *config.Config) (topics.Graph, error) {
	g, err := cfg.Graph()
	if err != nil {
		return topics.Graph{}, fmt.Errorf("configuration: %w", err)
	}
	return g, nil
}

// groupsOf are the stage groups of a deployment with that prefix.
func groupsOf(prefix string) []string {
	g, _ := topics.NewGraph(topics.GraphOptions{Prefix: prefix}) // no reply topics: cannot fail
	return g.Groups()
}

// createTopicsCfg creates the graph's topics, reply topics included, if
// missing.
func createTopicsCfg(ctx context.Context, c *cluster, cfg *config.Config) error {
	adm, err := c.admin()
	if err != nil {
		return err
	}
	defer adm.Close()
	rf := cfg.Topics.ReplicationFactor
	if c.embedded != nil {
		rf = 1
	}
	g, err := graphOf(cfg)
	if err != nil {
		return err
	}
	return topics.CreateTopics(ctx, adm, g, cfg.Layout(), rf)
}

// models builds the configured models (the default simulated one if none).
func models(cfg *config.Config) ([]infer.ModelConfig, []*sim.Model, error) {
	ms := cfg.Models
	if len(ms) == 0 {
		ms = []config.Model{config.DefaultModel}
	}
	var (
		out  []infer.ModelConfig
		sims []*sim.Model
	)
	for _, m := range ms {
		m = config.ModelDefaults(m)
		backend, err := newBackend(m)
		if err != nil {
			return nil, nil, fmt.Errorf("model %s: %w", m.Name, err)
		}
		if s, ok := backend.(*sim.Model); ok {
			sims = append(sims, s)
		}
		out = append(out, infer.ModelConfig{
			Name: m.Name, Backend: backend, MaxBatchItems: m.MaxBatchItems, MaxBatchBytes: m.MaxBatchBytes,
			MaxWait: m.MaxWait, Batching: infer.Batching(m.Batching), DownstreamLatency: m.DownstreamLatency,
			Timeout: m.Timeout, Concurrency: m.Concurrency, MaxAttempts: m.MaxAttempts,
			BreakerThreshold: m.BreakerThreshold, BreakerCooldown: m.BreakerCooldown,
			Objective: m.LatencyObjective, Deterministic: m.Deterministic,
		})
	}
	return out, sims, nil
}

// pipelineRun is a configured pipeline started in this process.
type pipelineRun struct {
	cluster *cluster
	graph   topics.Graph
	codec   *schemas.Codec
	set     *stack.Set
	sims    []*sim.Model // the simulated models, for the demo's counts
	admin   *admin.Server
}

// Close releases the cluster connection (and the embedded broker).
func (p *pipelineRun) Close() { p.cluster.Close() }

// startPipeline connects (or starts the embedded broker), creates the topics
// if asked, registers the schemas, and builds the configured stages with an
// admin server: what run and demo share. The stages run when set.Run is
// called.
func startPipeline(ctx context.Context, cfg *config.Config, log *slog.Logger, stderr io.Writer) (*pipelineRun, error) {
	g, err := graphOf(cfg)
	if err != nil {
		return nil, err
	}
	if len(cfg.Kafka.Brokers) == 0 && len(cfg.Stages) != len(g.Stages) {
		return nil, errors.New("stages without kafka.brokers: the embedded broker lives in this process, so every stage must run here; give --brokers (and --registry) to run a subset, or start a shared broker with asyncinfer dev-broker")
	}
	names, err := stack.ParseStages(g, cfg.Stages)
	if err != nil {
		return nil, fmt.Errorf("stages: %w", err)
	}
	c, err := connect(ctx, cfg, true, log)
	if err != nil {
		return nil, err
	}
	p := &pipelineRun{cluster: c, graph: g}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	if c.embedded != nil {
		fmt.Fprintf(stderr, "embedded broker %v, schema registry %s\n", c.embedded.brokers(), c.embedded.url)
	}
	if cfg.Topics.Create {
		if err := createTopicsCfg(ctx, c, cfg); err != nil {
			return nil, err
		}
	}
	if err := checkTopicsAtStart(ctx, c, g, cfg.Layout(), log); err != nil {
		return nil, err
	}
	p.codec, err = schemas.NewCodec(ctx, c.registry, g.Kinds(), cfg.CodecOptions()...)
	if err != nil {
		return nil, fmt.Errorf("schema registry: %w", err)
	}
	if c.embedded != nil {
		if err := c.embedded.saveRegistry(ctx); err != nil {
			return nil, err
		}
	}
	ms, sims, err := models(cfg)
	if err != nil {
		return nil, err
	}
	if slices.Contains(names, topics.Infer) {
		if err := checkBackends(ctx, ms); err != nil {
			return nil, err
		}
	}
	p.sims = sims
	reg := prometheus.NewRegistry()
	if err := pipeline.Register(reg, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, err
	}
	metrics, err := stack.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	fractions := map[string]float64{}
	for _, l := range cfg.Lanes {
		fractions[l.Name] = l.WaitFraction
	}
	lag := &lagView{}
	if st, ok := g.Stage(topics.Infer); ok {
		lag.infer = st.Group
	}
	if st, ok := g.Stage(topics.Emit); ok {
		lag.emit = st.Group
	}
	p.set, err = stack.Build(stack.Options{
		Conn: c.kopts, Graph: g, InstanceID: cfg.InstanceID, MaxInflight: cfg.Runner.MaxInflight,
		MaxInflightBytes: inflightBytes(cfg.Runner.MaxInflightBytes),
		Linger:           cfg.Runner.ProducerLinger, MaxRecordBytes: int(cfg.Topics.MaxMessageBytes),
		MaxDeadLetterBytes: int(cfg.Topics.DLQMaxMessageBytes), CopyFailedToDLQ: cfg.DLQFailed,
		Models: ms, Admission: admissionOf(cfg), WaitFractions: fractions, Downstream: lag,
		Metrics: metrics, KafkaMetrics: reg, Logger: log,
		ExactlyOnce: cfg.ExactlyOnce, TxnTimeout: cfg.Runner.TransactionTimeout,
	}, p.codec, names)
	if err != nil {
		return nil, err
	}
	if slices.Contains(names, topics.Emit) {
		if err := checkReplyTopics(ctx, c, cfg.Emit.ReplyTopics); err != nil {
			return nil, err
		}
	}
	if cfg.AdminAddr != "" {
		p.admin, err = startAdmin(ctx, cfg, c, p.set, reg, log, lag)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(stderr, "admin http://%s/ (metrics, healthz, readyz, status)\n", reachable(p.admin.Addr()))
	}
	ok = true
	return p, nil
}

// runPipeline runs the configured stages until ctx ends.
func runPipeline(ctx context.Context, cfg *config.Config, log *slog.Logger, cmd *cobra.Command) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p, err := startPipeline(ctx, cfg, log, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	defer p.Close()
	mode := "at-least-once"
	if cfg.ExactlyOnce {
		mode = "exactly-once"
	}
	log.Info("running", "stages", p.set.Names, "instance", cfg.InstanceID, "mode", mode)
	return p.set.Run(ctx)
}

// statusSource is the admin server's view of this process.
type statusSource struct {
	instance string
	set      *stack.Set
	lag      *admin.Watcher
}

func (s *statusSource) Status() admin.Status {
	st := admin.Status{Instance: s.instance}
	for _, r := range s.set.Runners {
		rs := r.Status()
		ss := admin.StageStatus{Name: rs.Stage, Group: rs.Group, Ready: rs.Ready, Joined: rs.Joined, Inflight: rs.Inflight,
			Waiting: rs.Waiting, Notices: rs.Notices}
		for _, p := range rs.Partitions {
			ss.Partitions = append(ss.Partitions, admin.PartitionStatus{Topic: p.Topic, Partition: p.Partition,
				Restoring: p.Restoring, PausedBy: p.PausedBy})
		}
		st.Stages = append(st.Stages, ss)
	}
	if s.lag != nil {
		snap := s.lag.Snapshot()
		st.Lag, st.LagGroups, st.LagUpdated = snap.Lag, snap.Groups, snap.Updated
		if snap.Err != nil {
			st.LagError = snap.Err.Error()
		}
	}
	return st
}

// startAdmin serves /metrics, /healthz, /readyz and the status page, and
// watches the lag of every stage group.
func startAdmin(ctx context.Context, cfg *config.Config, c *cluster, set *stack.Set, reg *prometheus.Registry,
	log *slog.Logger, lag *lagView) (*admin.Server, error) {
	cl, err := kgo.NewClient(c.kopts...)
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, cl.Close)
	g, err := graphOf(cfg)
	if err != nil {
		return nil, err
	}
	// The process watches its own stages' groups, on the partitions it
	// owns: the processes of a group share the work. A stage that watches
	// the stages after it (dedup's admission) watches their groups on the
	// partition numbers it owns.
	var groups []string
	for _, name := range set.Names {
		if st, ok := g.Stage(name); ok {
			groups = append(groups, st.Group)
			for _, w := range st.Watches {
				if ws, ok := g.Stage(w); ok && !slices.Contains(groups, ws.Group) {
					groups = append(groups, ws.Group)
				}
			}
		}
	}
	w, err := admin.NewWatcher(kadm.NewClient(cl), groups, admin.WithRegisterer(reg),
		admin.WithLogger(log), admin.Interval(watchEvery), admin.WithMarkerCheck(c.kopts),
		admin.OnlyPartitions(func() map[string]map[int32]bool { return watchedPartitions(set, g) }))
	if err != nil {
		return nil, err
	}
	lag.set(w)
	go w.Run(ctx) //nolint:errcheck // ends with ctx
	var opts []admin.ServerOption
	if cfg.AdminPprof {
		opts = append(opts, admin.WithPprof())
	}
	srv, err := admin.New(cfg.AdminAddr, reg, &statusSource{instance: cfg.InstanceID, set: set, lag: w}, opts...)
	if err != nil {
		return nil, fmt.Errorf("admin_addr %s: %w", cfg.AdminAddr, err)
	}
	go func() {
		if err := srv.Serve(ctx); err != nil {
			log.Error("admin server", "err", err)
		}
	}()
	return srv, nil
}

// watchEvery is how often a stage process measures lag.
const watchEvery = 2 * time.Second

// watchedPartitions are the partitions the process's runners own, by topic,
// and for a stage that watches the stages after it, the same partition
// numbers of their inputs.
func watchedPartitions(set *stack.Set, g topics.Graph) map[string]map[int32]bool {
	out := map[string]map[int32]bool{}
	add := func(topic string, p int32) {
		if out[topic] == nil {
			out[topic] = map[int32]bool{}
		}
		out[topic][p] = true
	}
	for i, r := range set.Runners {
		st, _ := g.Stage(set.Names[i])
		for _, p := range r.Status().Partitions {
			add(p.Topic, p.Partition)
			if p.Topic != st.Input {
				continue
			}
			for _, name := range st.Watches {
				if ws, ok := g.Stage(name); ok {
					for _, in := range ws.Inputs() {
						add(in, p.Partition)
					}
				}
			}
		}
	}
	return out
}

// lagView is the lag watcher's view of the stages after dedup, for its
// admission (dedup.Downstream): infer's and emit's time lag on the
// partitions watched, from the last refresh if it is recent.
type lagView struct {
	infer, emit string // groups
	mu          sync.Mutex
	w           *admin.Watcher
}

func (l *lagView) set(w *admin.Watcher) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w = w
}

func (l *lagView) Behind() (infer, emit time.Duration, ok bool) {
	l.mu.Lock()
	w := l.w
	l.mu.Unlock()
	if w == nil {
		return 0, 0, false
	}
	snap := w.Snapshot()
	if snap.Updated.IsZero() || time.Since(snap.Updated) > 3*watchEvery {
		return 0, 0, false
	}
	for _, r := range snap.Lag {
		d := time.Duration(r.LagSeconds * float64(time.Second))
		switch r.Group {
		case l.infer:
			infer = max(infer, d)
		case l.emit:
			emit = max(emit, d)
		}
	}
	return infer, emit, true
}

// admissionOf is dedup's admission of each configured model (the default
// model when none is).
func admissionOf(cfg *config.Config) []dedup.ModelAdmission {
	ms := cfg.Models
	if len(ms) == 0 {
		ms = []config.Model{config.DefaultModel}
	}
	var out []dedup.ModelAdmission
	for _, m := range ms {
		m = config.ModelDefaults(m)
		out = append(out, dedup.ModelAdmission{Name: m.Name, Mode: m.Admission, Objective: m.LatencyObjective,
			Downstream: m.DownstreamLatency, PauseAbove: m.PauseAbove})
	}
	return out
}

// reachable turns a listen address into one a browser on this machine can
// open: an unspecified host (":0", "0.0.0.0", "::") becomes 127.0.0.1.
func reachable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// checkTopicsAtStart refuses to run on topics that make the pipeline
// unsafe (topics check's problems: a missing topic, co-partitioning or
// compaction broken, a size limit below the configured one), with what is
// wrong and what to do.
func checkTopicsAtStart(ctx context.Context, c *cluster, g topics.Graph, l topics.Layout, log *slog.Logger) error {
	adm, err := c.admin()
	if err != nil {
		return err
	}
	defer adm.Close()
	checks, err := topics.CheckTopics(ctx, adm, g, l)
	if err != nil {
		if errors.Is(err, kerr.TopicAuthorizationFailed) || errors.Is(err, kerr.ClusterAuthorizationFailed) {
			// The principal may not describe configs (ACLs from an older
			// asyncinfer topics acls): run unchecked, and say so.
			log.Warn("cannot check the topics' limits at start: not allowed to describe their configs (asyncinfer topics acls lists DescribeConfigs for each stage)", "err", err)
			return nil
		}
		return fmt.Errorf("topics: %w", err)
	}
	var probs []string
	for _, ch := range checks {
		for _, p := range ch.Problems {
			probs = append(probs, ch.Topic+": "+p)
		}
	}
	if len(probs) > 0 {
		return fmt.Errorf("topics are not as the pipeline needs them (asyncinfer topics check shows them all):\n  %s", strings.Join(probs, "\n  "))
	}
	return nil
}

// checkReplyTopics makes sure every allowed reply topic exists before emit
// produces to it: a result for a missing topic would fail, and in
// exactly-once mode abort its transaction every time it is retried.
func checkReplyTopics(ctx context.Context, c *cluster, replyTopics []string) error {
	if len(replyTopics) == 0 {
		return nil
	}
	adm, err := c.admin()
	if err != nil {
		return err
	}
	defer adm.Close()
	td, err := adm.ListTopics(ctx, replyTopics...)
	if err != nil {
		return fmt.Errorf("emit.reply_topics: %w", err)
	}
	var missing []string
	for _, t := range replyTopics {
		if d, ok := td[t]; !ok || d.Err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("emit.reply_topics: %s do not exist (create them, or run with topics.create)", strings.Join(missing, ", "))
	}
	return nil
}

// inflightBytes is stack's MaxInflightBytes for runner.max_inflight_bytes,
// where 0 means no byte bound.
func inflightBytes(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}
