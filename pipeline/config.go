package pipeline

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/schemas"
)

// Option configures a Runner.
type Option interface{ apply(*cfg) }

type optFn func(*cfg)

func (f optFn) apply(c *cfg) { f(c) }

type cfg struct {
	connOpts         []kgo.Opt
	instanceID       string
	maxInflight      int
	commitInterval   time.Duration
	drainTimeout     time.Duration
	sessionTimeout   time.Duration
	rebalanceTimeout time.Duration
	fetchMaxWait     time.Duration
	linger           time.Duration
	isolation        kgo.IsolationLevel
	manualTopics     map[string]bool
	dlqTopic         string
	dlqEncode        func(*schemas.DeadLetter) ([]byte, error)
	maxDLQPayload    int
	logger           *slog.Logger
	metrics          *Metrics
	hooks            []kgo.Hook
	eos              bool
	txnTimeout       time.Duration
}

// DefaultMaxInFlight bounds the records a stage holds unfinished.
const DefaultMaxInFlight = 2048

func defaultCfg() cfg {
	return cfg{
		maxInflight:      DefaultMaxInFlight,
		commitInterval:   200 * time.Millisecond,
		drainTimeout:     30 * time.Second,
		sessionTimeout:   10 * time.Second,
		rebalanceTimeout: 45 * time.Second,
		fetchMaxWait:     250 * time.Millisecond,
		linger:           0,
		isolation:        kgo.ReadCommitted(),
		manualTopics:     map[string]bool{},
		maxDLQPayload:    DefaultMaxDeadLetterPayload,
		logger:           slog.New(slog.DiscardHandler),
		txnTimeout:       10 * time.Second,
	}
}

func (c *cfg) validate(stage, group string, topics []string, h Handler) error {
	var errs []error
	if stage == "" {
		errs = append(errs, errors.New("stage name is empty"))
	}
	if group == "" {
		errs = append(errs, errors.New("group is empty"))
	}
	if len(topics) == 0 {
		errs = append(errs, errors.New("no input topics"))
	}
	if h == nil {
		errs = append(errs, errors.New("handler is nil"))
	}
	if len(c.connOpts) == 0 {
		errs = append(errs, errors.New("no connection options (seed brokers)"))
	}
	if c.maxInflight < 1 {
		errs = append(errs, fmt.Errorf("max in-flight %d < 1", c.maxInflight))
	}
	if c.commitInterval <= 0 || c.drainTimeout <= 0 {
		errs = append(errs, errors.New("commit interval and drain timeout must be positive"))
	}
	if c.metrics == nil {
		c.metrics = NewMetrics(nil)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pipeline: %s: %w", stage, err)
	}
	return nil
}

// ConnOpts are the client options that reach the cluster (seed brokers, TLS,
// SASL, client id). Required.
func ConnOpts(opts ...kgo.Opt) Option {
	return optFn(func(c *cfg) { c.connOpts = append(c.connOpts, opts...) })
}

// InstanceID makes the member static (KIP-345): a restart with the same id
// within the session timeout takes its partitions back without a rebalance.
// Default: none (dynamic membership).
func InstanceID(id string) Option { return optFn(func(c *cfg) { c.instanceID = id }) }

// MaxInFlight bounds the records handed to the stage and not yet finished;
// at the bound every partition is paused until half of them finish.
// Default DefaultMaxInFlight.
func MaxInFlight(n int) Option { return optFn(func(c *cfg) { c.maxInflight = n }) }

// CommitInterval is how often finished offsets are committed. Default 200ms.
func CommitInterval(d time.Duration) Option { return optFn(func(c *cfg) { c.commitInterval = d }) }

// DrainTimeout bounds how long a shutdown or a revoke waits for unfinished
// records. Default 30s (below the rebalance timeout).
func DrainTimeout(d time.Duration) Option { return optFn(func(c *cfg) { c.drainTimeout = d }) }

// SessionTimeout is the group session timeout. Default 10s.
func SessionTimeout(d time.Duration) Option { return optFn(func(c *cfg) { c.sessionTimeout = d }) }

// ProducerLinger is how long the producer waits to fill a batch. Default 0:
// franz-go's own default of 10ms would add 10ms to every hop.
func ProducerLinger(d time.Duration) Option { return optFn(func(c *cfg) { c.linger = d }) }

// FetchMaxWait is how long the broker may hold an empty fetch, which is also
// how long a resumed partition can wait for its first records. Default 250ms.
func FetchMaxWait(d time.Duration) Option { return optFn(func(c *cfg) { c.fetchMaxWait = d }) }

// ReadUncommitted reads input that open transactions wrote. Default
// read_committed, so that a stage never acts on aborted output.
func ReadUncommitted() Option { return optFn(func(c *cfg) { c.isolation = kgo.ReadUncommitted() }) }

// ManualPartitions makes records to these topics go to the partition set on
// the record (changelogs: the input record's partition number). Records to
// other topics are partitioned by key with murmur2, as Kafka's default
// partitioner does.
func ManualPartitions(topics ...string) Option {
	return optFn(func(c *cfg) {
		for _, t := range topics {
			c.manualTopics[t] = true
		}
	})
}

// DeadLetters sets the dead-letter topic and how to encode a dead letter.
func DeadLetters(topic string, encode func(*schemas.DeadLetter) ([]byte, error)) Option {
	return optFn(func(c *cfg) { c.dlqTopic, c.dlqEncode = topic, encode })
}

// WithLogger sets the logger. Default: discard.
func WithLogger(l *slog.Logger) Option { return optFn(func(c *cfg) { c.logger = l }) }

// WithMetrics sets the metrics. Default: unregistered ones.
func WithMetrics(m *Metrics) Option { return optFn(func(c *cfg) { c.metrics = m }) }

// ClientHooks are franz-go hooks (kprom metrics, tracing) for the stage's
// group client only: not for the short-lived clients that restore state,
// so that a hook that registers metrics per client registers them once.
func ClientHooks(hooks ...kgo.Hook) Option {
	return optFn(func(c *cfg) { c.hooks = append(c.hooks, hooks...) })
}

// ExactlyOnce makes the stage transactional: each unit of work (the records
// of one poll) is consumed, produced (outputs, changelog, dead letters) and
// committed in one Kafka transaction, and the stage's state changes are
// applied only when it commits. timeout bounds a unit: one that has not
// finished by then is aborted and its records are consumed again (0: 10s).
// The transactional id is the group and the instance id (InstanceID), so a
// restarted instance fences the one it replaces.
func ExactlyOnce(timeout time.Duration) Option {
	return optFn(func(c *cfg) {
		c.eos = true
		if timeout > 0 {
			c.txnTimeout = timeout
		}
	})
}
