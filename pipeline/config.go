package pipeline

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/topics"
)

// Option configures a Runner.
type Option interface{ apply(*cfg) }

type optFn func(*cfg)

func (f optFn) apply(c *cfg) { f(c) }

type cfg struct {
	connOpts           []kgo.Opt
	instanceID         string
	maxInflight        int
	maxInflightBytes   int64
	commitInterval     time.Duration
	drainTimeout       time.Duration
	sessionTimeout     time.Duration
	rebalanceTimeout   time.Duration
	fetchMaxWait       time.Duration
	linger             time.Duration
	logWait            time.Duration // the longest a changelog record waits to go out
	logDue             time.Duration // from how old a hold the next hand-out takes it along (logWait/2)
	learnDelay         time.Duration // tests: how long the input's partition count stays unknown at least
	offsetsTopic       string        // where the groups' offsets are (tests: a topic standing in for it)
	isolation          kgo.IsolationLevel
	codec              *schemas.Codec
	maxRecordBytes     int
	maxDeadLetterBytes int
	logger             *slog.Logger
	metrics            *Metrics
	hooks              []kgo.Hook
	eos                bool
	txnTimeout         time.Duration
}

// DefaultMaxInFlight bounds the records a stage holds unfinished.
const DefaultMaxInFlight = 2048

// DefaultMaxInFlightBytes bounds their bytes (keys and values).
const DefaultMaxInFlightBytes = 64 << 20

func defaultCfg() cfg {
	return cfg{
		maxInflight:        DefaultMaxInFlight,
		maxInflightBytes:   DefaultMaxInFlightBytes,
		commitInterval:     200 * time.Millisecond,
		drainTimeout:       30 * time.Second,
		sessionTimeout:     10 * time.Second,
		rebalanceTimeout:   45 * time.Second,
		fetchMaxWait:       250 * time.Millisecond,
		linger:             0,
		logWait:            logWait,
		logDue:             logWait / 2,
		isolation:          kgo.ReadCommitted(),
		maxDeadLetterBytes: DefaultMaxDeadLetterBytes,
		logger:             slog.New(slog.DiscardHandler),
		txnTimeout:         10 * time.Second,
		offsetsTopic:       "__consumer_offsets",
	}
}

func (c *cfg) validate(st topics.Stage) error {
	var errs []error
	if st.Name == "" {
		errs = append(errs, errors.New("stage name is empty"))
	}
	if st.Group == "" {
		errs = append(errs, errors.New("group is empty"))
	}
	if st.Input == "" {
		errs = append(errs, errors.New("no input topic"))
	}
	for _, in := range st.Lanes {
		if in == "" {
			errs = append(errs, errors.New("an empty lane topic"))
		}
	}
	if len(c.connOpts) == 0 {
		errs = append(errs, errors.New("no connection options (seed brokers)"))
	}
	if c.codec == nil {
		errs = append(errs, errors.New("no codec (WithCodec): the runtime encodes outputs, state and dead letters"))
	}
	if c.maxInflight < 1 {
		errs = append(errs, fmt.Errorf("max in-flight %d < 1", c.maxInflight))
	}
	if c.maxInflightBytes < 0 {
		errs = append(errs, fmt.Errorf("max in-flight bytes %d < 0", c.maxInflightBytes))
	}
	if c.commitInterval <= 0 || c.drainTimeout <= 0 {
		errs = append(errs, errors.New("commit interval and drain timeout must be positive"))
	}
	if c.maxRecordBytes < 0 || c.maxDeadLetterBytes < deadLetterOverhead*4 {
		errs = append(errs, fmt.Errorf("record size limits %d and %d: want >= 0 and >= %d", c.maxRecordBytes, c.maxDeadLetterBytes, deadLetterOverhead*4))
	}
	if c.metrics == nil {
		c.metrics = newMetrics()
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pipeline: %s: %w", st.Name, err)
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

// MaxInFlightBytes bounds the bytes (keys and values) of the records handed
// to the stage and not yet finished: records of that many bytes count as
// MaxInFlight records, so large records reach the bound sooner. 0: no byte
// bound. Default DefaultMaxInFlightBytes.
func MaxInFlightBytes(n int64) Option { return optFn(func(c *cfg) { c.maxInflightBytes = n }) }

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

// WithCodec is the codec the runtime encodes outputs, state entries and
// dead letters with. Required.
func WithCodec(c *schemas.Codec) Option { return optFn(func(cfg *cfg) { cfg.codec = c }) }

// MaxRecordBytes is the largest record batch the stage's data topics take
// (their max.message.bytes): the producer's limit, the limit every Emit is
// checked against (leaving DownstreamHeadroom), and, times
// DecodeLimitFactor, the largest input value the runtime decodes (a larger
// one can only have arrived compressed; it is dead-lettered unread).
// Default 0: the producer's default, no checks.
func MaxRecordBytes(n int) Option { return optFn(func(c *cfg) { c.maxRecordBytes = n }) }

// DecodeLimitFactor times MaxRecordBytes is the largest input value the
// runtime decodes: values above the topic's limit (only compression lets
// them in) are still decoded, within the decoder's budget, so that a stage
// can answer them (dedup: FAILED, REQUEST_TOO_LARGE); far larger ones are
// dead-lettered unread.
const DecodeLimitFactor = 8

// MaxDeadLetterBytes is the largest dead letter the dlq topic takes (its
// max.message.bytes): a dead letter's payload is truncated to fit.
// Default DefaultMaxDeadLetterBytes.
func MaxDeadLetterBytes(n int) Option { return optFn(func(c *cfg) { c.maxDeadLetterBytes = n }) }

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
