// Package config is asyncinfer's configuration: one struct, filled from
// defaults, then a YAML file, then ASYNCINFER_* environment variables, then
// flags (each later source wins), and validated with errors that name the
// field. The struct is also the source of the configuration reference
// (Reference), so the documentation cannot drift from the code.
//
// Every setting has a dotted path (kafka.sasl.username), an environment
// variable (ASYNCINFER_KAFKA_SASL_USERNAME) and a flag (--kafka-sasl-username).
// Models are a list, set in the file only.
package config

import (
	"math"
	"slices"
	"time"

	"github.com/asyncinfer/asyncinfer/connectors/oip"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/stages/infer"
	"github.com/asyncinfer/asyncinfer/topics"
)

// Config is everything one asyncinfer process is told.
type Config struct {
	Kafka    Kafka    `yaml:"kafka"`
	Registry Registry `yaml:"registry"`
	Topics   Topics   `yaml:"topics"`

	Stages     []string `yaml:"stages" doc:"stages this process runs: some of dedup, infer, emit"`
	InstanceID string   `yaml:"instance_id" doc:"stable identity of this process across restarts: static group membership (KIP-345) and, in exactly-once mode, the transactional id <group>/<instance_id>, so a restart fences the instance it replaces; empty: dynamic membership"`
	AdminAddr  string   `yaml:"admin_addr" doc:"listen address of the admin HTTP server (/metrics, /healthz, /readyz, status page); :0 picks a free port; empty: no server"`
	AdminPprof bool     `yaml:"admin_pprof" doc:"serve Go's profiles (/debug/pprof/: CPU, heap, goroutines) on the admin server, to profile a running stage; off by default (profiles show internals, and taking one costs CPU)"`
	LogLevel   string   `yaml:"log_level" doc:"debug, info, warn or error"`
	DataDir    string   `yaml:"data_dir" doc:"embedded broker only: keep its data and registry here"`
	DLQFailed  bool     `yaml:"dlq_failed" doc:"also write a copy of every request answered FAILED to the dlq topic, marked answered (by the stage that failed it: dedup or infer), for operators"`
	// ExactlyOnce selects the delivery mode.
	ExactlyOnce bool `yaml:"exactly_once" doc:"exactly-once mode: every stage consumes, produces and commits in Kafka transactions, so every request id gets exactly one terminal result through crashes and rebalances (at a cost: see the README); default at-least-once"`

	Runner Runner `yaml:"runner"`
	Dedup  Dedup  `yaml:"dedup"`
	Emit   Emit   `yaml:"emit"`

	Models []Model `yaml:"models" doc:"the models served; requests naming any other model get FAILED with error_code UNKNOWN_MODEL"`

	Lanes []Lane `yaml:"lanes" doc:"the priority lanes, from the highest: dedup writes each accepted request to its lane's topic, infer serves a higher lane first, admission sheds lower lanes first"`
}

// Lane is a priority lane: the requests whose priority is at least
// MinPriority (and below the lane above's), the last lane also taking every
// priority below its own.
type Lane struct {
	Name         string  `yaml:"name" doc:"the lane's name: its topic is <prefix>requests.accepted.<name>, except the lane priority 0 falls in, whose topic is <prefix>requests.accepted"`
	MinPriority  int32   `yaml:"min_priority" doc:"the lowest priority the lane takes; lanes are listed from the highest min_priority down"`
	WaitFraction float64 `yaml:"wait_fraction" doc:"admission (reject) admits a request of the lane while its predicted wait is within this fraction of what is left of its deadline; below 1 the lane is shed before it would miss, leaving the capacity to the lanes above; 0: 1"`
}

// DefaultLanes are high (priority above 0), normal (0) and low (below 0).
// Admission predicts a wait, and a prediction errs: a lane admitted up to
// its whole budget answers its p99 past the objective (the demo at twice
// a model's capacity: p99 of SUCCEEDED 106–108 ms for a 100 ms objective
// with normal at 1). High keeps a tenth for error, normal 15% (p99 97–98
// ms in the same demo, 4% fewer served), and low is shed first, at 70%.
var DefaultLanes = []Lane{
	{Name: "high", MinPriority: 1, WaitFraction: 0.9},
	{Name: "normal", MinPriority: 0, WaitFraction: 0.85},
	{Name: "low", MinPriority: math.MinInt32, WaitFraction: 0.7},
}

// Kafka is how to reach the cluster.
type Kafka struct {
	Brokers  []string `yaml:"brokers" doc:"seed brokers host:port; empty: the embedded broker (every stage in this process)"`
	ClientID string   `yaml:"client_id" doc:"Kafka client id (shows in broker logs and quotas)"`
	TLS      TLS      `yaml:"tls"`
	SASL     SASL     `yaml:"sasl"`
}

// TLS is a client's TLS setup.
type TLS struct {
	Enabled            bool   `yaml:"enabled" doc:"connect with TLS"`
	CAFile             string `yaml:"ca_file" doc:"PEM CA bundle to verify the server; empty: the system's roots"`
	CertFile           string `yaml:"cert_file" doc:"PEM client certificate (mutual TLS)"`
	KeyFile            string `yaml:"key_file" doc:"PEM private key of cert_file"`
	ServerName         string `yaml:"server_name" doc:"name to verify in the server's certificate; empty: the host dialled"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify" doc:"do not verify the server's certificate (testing only)"`
}

// SASL is how the client authenticates to Kafka.
type SASL struct {
	Mechanism string `yaml:"mechanism" doc:"PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER; empty: no SASL"`
	Username  string `yaml:"username" doc:"PLAIN and SCRAM user"`
	Password  string `yaml:"password" secret:"true" doc:"PLAIN and SCRAM password"`
	Token     string `yaml:"token" secret:"true" doc:"OAUTHBEARER token"`
	TokenFile string `yaml:"token_file" doc:"OAUTHBEARER: read the token from this file at every authentication (rotated tokens)"`
}

// Registry is how to reach the schema registry.
type Registry struct {
	URL         string `yaml:"url" doc:"Confluent-compatible schema registry URL; required with kafka.brokers"`
	Username    string `yaml:"username" doc:"basic auth user"`
	Password    string `yaml:"password" secret:"true" doc:"basic auth password"`
	BearerToken string `yaml:"bearer_token" secret:"true" doc:"bearer token (instead of basic auth)"`
	TLS         TLS    `yaml:"tls"`
}

// Topics is the deployment's topic layout.
type Topics struct {
	Prefix             string        `yaml:"prefix" doc:"prefix of every topic and consumer group name"`
	Partitions         int32         `yaml:"partitions" doc:"partitions of each topic the pipeline creates (requests and dedup-state, outcomes and emitted-ids must match)"`
	ReplicationFactor  int16         `yaml:"replication_factor" doc:"replication factor of created topics; -1: the broker's default"`
	Create             bool          `yaml:"create" doc:"create missing topics at start"`
	Retention          time.Duration `yaml:"retention" doc:"retention.ms of the data topics; 0: the broker's default"`
	MaxMessageBytes    int32         `yaml:"max_message_bytes" doc:"max.message.bytes of the data topics"`
	DLQMaxMessageBytes int32         `yaml:"dlq_max_message_bytes" doc:"max.message.bytes of the dlq topic (a dead letter carries its source record)"`
}

// Runner is how every stage consumes and commits.
type Runner struct {
	MaxInflight        int           `yaml:"max_inflight" doc:"records a stage holds unfinished before it stops consuming"`
	MaxInflightBytes   int64         `yaml:"max_inflight_bytes" doc:"bytes (keys and values) of the records a stage holds unfinished before it stops consuming: that many bytes count as max_inflight records, so large requests reach the bound sooner; 0: no byte bound"`
	ProducerLinger     time.Duration `yaml:"producer_linger" doc:"how long producers wait to fill a batch (franz-go's 10ms default would add 10ms per hop)"`
	TransactionTimeout time.Duration `yaml:"transaction_timeout" doc:"exactly-once mode: a unit of work not finished by then is aborted and consumed again (its records wait in Kafka, e.g. while a model is down)"`
}

// Dedup is the dedup stage.
type Dedup struct {
	Window time.Duration `yaml:"window" doc:"how long an idempotency key is remembered"`
}

// Emit is the emit stage.
type Emit struct {
	ReplyTopics []string      `yaml:"reply_topics" doc:"topics a request may name as reply_topic, besides the results topic"`
	Window      time.Duration `yaml:"window" doc:"how long emitted request ids are remembered, so a re-delivered outcome is not emitted twice"`
}

// Model is how one model is served.
type Model struct {
	Name              string        `yaml:"name" doc:"the model name requests carry"`
	Backend           string        `yaml:"backend" doc:"model backend: sim (the simulated model) or oip (a server speaking the Open Inference Protocol v2: KServe, Triton, MLServer, Seldon; see oip)"`
	MaxBatchItems     int           `yaml:"max_batch_items" doc:"most requests per model call"`
	MaxBatchBytes     int           `yaml:"max_batch_bytes" doc:"most bytes of encoded requests per model call"`
	MaxWait           time.Duration `yaml:"max_wait" doc:"batching window: longest wait for a fuller batch; 0: greedy (a free worker takes what is queued)"`
	Batching          string        `yaml:"batching" doc:"how a free worker forms a batch: adaptive (from the model's measured cost t(b) = a + c*b and each request's deadline: batches as large as the deadlines allow, a wait only with several workers when too few are queued to keep up, and requests that cannot make it answered EXPIRED deadline_unreachable at once; needs latency_objective) or window (greedy, waiting up to max_wait); empty: adaptive when latency_objective is set and max_wait is 0, else window"`
	DownstreamLatency time.Duration `yaml:"downstream_latency" doc:"estimated time from the model's answer to a result the client can read (the outcome produced, emit's hop, the reply topic's produce and the client's fetch): the adaptive batcher plans each request's batch to end this much before its deadline; 0: the default"`
	Timeout           time.Duration `yaml:"timeout" doc:"per model call; a batch whose every request has a deadline (or the model a latency_objective) is called, and waits for an open circuit, no longer than its last deadline: its requests are answered EXPIRED, and the circuit counts the call as a failure when it ran more than 4 times the model's fitted cost (a hung model; deadlines tighter than the model's cost are not its fault)"`
	Concurrency       int           `yaml:"concurrency" doc:"parallel model calls (workers)"`
	LatencyObjective  time.Duration `yaml:"latency_objective" doc:"end-to-end objective: a request not inferred within it of its created_at is answered EXPIRED (reason objective_passed), and the model is batched to meet it (batching adaptive, unless max_wait is set); 0: none"`
	Admission         string        `yaml:"admission" doc:"what dedup does when the pipeline is behind for this model: reject (a request whose predicted wait exceeds what is left of its deadline, min(deadline_ms, created_at + latency_objective), is answered REJECTED, reason overloaded, with retry_after_ms; one with less left than the model needs with nothing queued is late, not a sign of load: EXPIRED, reason deadline_unreachable), pause (dedup pauses its input while a request would wait longer than pause_above, and resumes below half: requests wait in Kafka, nothing is shed) or off; empty: reject with a latency_objective, else off"`
	PauseAbove        time.Duration `yaml:"pause_above" doc:"admission pause: the predicted wait above which dedup pauses its input; 0: latency_objective, else 1s"`
	Deterministic     bool          `yaml:"deterministic" doc:"declares that the model gives the same output for the same input (informational for now: at-least-once repeats that slip past emit's window are identical only for such models)"`
	MaxAttempts       int           `yaml:"max_attempts" doc:"consecutive transient failures before an item fails"`
	BreakerThreshold  int           `yaml:"breaker_threshold" doc:"consecutive transient failures that open the circuit (the input pauses)"`
	BreakerCooldown   time.Duration `yaml:"breaker_cooldown" doc:"how long the circuit stays open before a probe"`
	Sim               Sim           `yaml:"sim"`
	OIP               OIP           `yaml:"oip,omitempty"`
}

// OIP is a model served by an Open Inference Protocol v2 server over HTTP
// (backend: oip). The call's timeout is the model's timeout.
type OIP struct {
	URL            string     `yaml:"url" doc:"the server's base URL, http(s)://host:port[/prefix]; required with backend oip"`
	ModelName      string     `yaml:"model_name" doc:"the model's name on the server; empty: the model's name"`
	Version        string     `yaml:"version" doc:"model version to call (/v2/models/{name}/versions/{version}); a request's model_version wins; empty: the server's default"`
	MaxConnections int        `yaml:"max_connections" doc:"connections to the server, kept alive and reused; calls beyond them wait"`
	BinaryData     bool       `yaml:"binary_data" doc:"send and receive tensors in the binary tensor data extension instead of JSON: several times faster for large tensors; only for servers that read it (Triton, KServe's Python server): MLServer answers such calls with HTTP 500, which fails every request"`
	Auth           OIPAuth    `yaml:"auth"`
	TLS            TLS        `yaml:"tls"`
	Inputs         []OIPInput `yaml:"inputs,omitempty" doc:"inputs the model's metadata must declare, checked at start: name, datatype, shape (-1: any)"`
}

// OIPAuth is how calls to an OIP server authenticate: a bearer token or a
// header of its own (an API key), or neither.
type OIPAuth struct {
	BearerToken string `yaml:"bearer_token" secret:"true" doc:"send Authorization: Bearer <token>"`
	Header      string `yaml:"header" doc:"name of a header to send instead (an API key, e.g. X-Api-Key)"`
	HeaderValue string `yaml:"header_value" secret:"true" doc:"that header's value"`
}

// OIPInput is an input the model's metadata must declare.
type OIPInput struct {
	Name     string  `yaml:"name"`
	Datatype string  `yaml:"datatype"`
	Shape    []int64 `yaml:"shape"`
}

// Sim is the simulated model: a call of b items costs fixed + per_item*b.
type Sim struct {
	Fixed     time.Duration `yaml:"fixed" doc:"cost of a call, whatever its size"`
	PerItem   time.Duration `yaml:"per_item" doc:"cost of each item of a call"`
	Spin      bool          `yaml:"spin" doc:"burn CPU for the cost instead of sleeping"`
	ErrorRate float64       `yaml:"error_rate" doc:"fraction of calls that fail transiently"`
	Outage    string        `yaml:"outage" doc:"D@T: unavailable for D, starting T after the start (e.g. 2s@5s)"`
}

// Defaults is the configuration before any source is read.
func Defaults() Config {
	return Config{
		Kafka: Kafka{ClientID: "asyncinfer"},
		Topics: Topics{Prefix: "asyncinfer.", Partitions: 4, ReplicationFactor: -1, Create: true, Retention: 7 * 24 * time.Hour,
			MaxMessageBytes: 1 << 20, DLQMaxMessageBytes: 8 << 20},
		Stages:    []string{"dedup", "infer", "emit"},
		AdminAddr: "127.0.0.1:9464",
		LogLevel:  "info",
		Runner: Runner{MaxInflight: pipeline.DefaultMaxInFlight, MaxInflightBytes: pipeline.DefaultMaxInFlightBytes,
			TransactionTimeout: 10 * time.Second},
		Lanes: slices.Clone(DefaultLanes),
		Dedup: Dedup{Window: 10 * time.Minute},
		Emit:  Emit{Window: 10 * time.Minute},
	}
}

// ModelDefaults fills the unset fields of a model.
func ModelDefaults(m Model) Model {
	if m.Backend == "" {
		m.Backend = "sim"
	}
	// The serving limits' defaults are the infer stage's own.
	d := infer.ModelConfig{MaxBatchItems: m.MaxBatchItems, MaxBatchBytes: m.MaxBatchBytes, Timeout: m.Timeout,
		Concurrency: m.Concurrency, MaxAttempts: m.MaxAttempts, BreakerThreshold: m.BreakerThreshold,
		BreakerCooldown: m.BreakerCooldown, MaxWait: m.MaxWait, Objective: m.LatencyObjective,
		Batching: infer.Batching(m.Batching), DownstreamLatency: m.DownstreamLatency}.WithDefaults()
	m.MaxBatchItems, m.MaxBatchBytes, m.Timeout, m.Concurrency = d.MaxBatchItems, d.MaxBatchBytes, d.Timeout, d.Concurrency
	m.MaxAttempts, m.BreakerThreshold, m.BreakerCooldown = d.MaxAttempts, d.BreakerThreshold, d.BreakerCooldown
	m.Batching, m.DownstreamLatency = string(d.Batching), d.DownstreamLatency
	if m.Admission == "" {
		m.Admission = "off"
		if m.LatencyObjective > 0 {
			m.Admission = "reject"
		}
	}
	if m.Backend == "oip" {
		if m.OIP.ModelName == "" {
			m.OIP.ModelName = m.Name
		}
		if m.OIP.MaxConnections == 0 {
			m.OIP.MaxConnections = oip.DefaultMaxConnections
		}
	}
	return m
}

// DefaultModel is served when the configuration names none: the simulated
// model at 5 ms a call and 0.25 ms an item, with a latency objective of
// 100 ms, so that it is batched adaptively: its batches follow the offered
// rate, and past what it can serve within the objective, the requests that
// cannot make it are answered EXPIRED at once. Its batches may hold 256
// requests (64 would cap it at 3,000 a second, at the edge of what the
// demo offers). A configured sim model costs
// what it says: fixed: 0 and per_item: 0 is a model that costs nothing (the
// defaults once filled zeros in, while config print showed zeros).
var DefaultModel = Model{Name: "sim", Deterministic: true, LatencyObjective: 100 * time.Millisecond, MaxBatchItems: 256,
	Sim: Sim{Fixed: 5 * time.Millisecond, PerItem: 250 * time.Microsecond}}

// Graph is the pipeline the configuration declares: its topics, stages and
// state bounds.
func (c *Config) Graph() (topics.Graph, error) {
	return topics.NewGraph(topics.GraphOptions{Prefix: c.Topics.Prefix, ReplyTopics: c.Emit.ReplyTopics,
		DedupWindow: c.Dedup.Window, EmitWindow: c.Emit.Window, Lanes: c.TopicLanes()})
}

// TopicLanes are the lanes as the graph declares them (names and minimum
// priorities).
func (c *Config) TopicLanes() []topics.Lane {
	out := make([]topics.Lane, len(c.Lanes))
	for i, l := range c.Lanes {
		out[i] = topics.Lane{Name: l.Name, MinPriority: l.MinPriority}
	}
	return out
}

// CodecOptions are the decoding limits the configuration implies: values up
// to pipeline.DecodeLimitFactor times the data topics' limit are decoded
// (above the limit, only compression lets a value in: dedup decodes its
// head to answer it REQUEST_TOO_LARGE), within the memory budget of a value
// at the limit; dead letters up to the dlq's limit.
func (c *Config) CodecOptions() []schemas.Option {
	limit := int(c.Topics.MaxMessageBytes)
	return []schemas.Option{
		schemas.MaxMessageBytes(limit * pipeline.DecodeLimitFactor),
		schemas.DecodeBudget(int64(limit) * schemas.DecodeBudgetFactor),
		schemas.MaxDeadLetterBytes(int(c.Topics.DLQMaxMessageBytes)),
	}
}

// Layout is how the configuration creates the graph's topics.
func (c *Config) Layout() topics.Layout {
	return topics.Layout{
		Partitions:         c.Topics.Partitions,
		Retention:          c.Topics.Retention,
		MaxMessageBytes:    int(c.Topics.MaxMessageBytes),
		DLQMaxMessageBytes: int(c.Topics.DLQMaxMessageBytes),
	}
}
