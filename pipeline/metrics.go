package pipeline

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the runner's Prometheus metrics, shared by every runner of a
// process and labelled by stage.
type Metrics struct {
	Consumed      *prometheus.CounterVec
	Produced      *prometheus.CounterVec
	ProduceErrors *prometheus.CounterVec
	DeadLetters   *prometheus.CounterVec
	Undecodable   *prometheus.CounterVec
	Stale         *prometheus.CounterVec
	Held          *prometheus.CounterVec
	Inflight      *prometheus.GaugeVec
	Commits       *prometheus.CounterVec
	Aborts        *prometheus.CounterVec
	Renewals      *prometheus.CounterVec
	Fenced        *prometheus.CounterVec
	Hanging       *prometheus.GaugeVec
	CommitErrors  *prometheus.CounterVec
	Paused        *prometheus.GaugeVec
	Restores      *prometheus.HistogramVec
	StateKeys     *prometheus.GaugeVec
}

func newMetrics() *Metrics {
	const ns = "asyncinfer"
	return &Metrics{
		Consumed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "records_consumed_total",
			Help: "Records handed to a stage."}, []string{"stage"}),
		Produced: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "records_produced_total",
			Help: "Records a stage produced and Kafka acknowledged, by topic."}, []string{"stage", "topic"}),
		ProduceErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "produce_errors_total",
			Help: "Records a stage failed to produce."}, []string{"stage"}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "dead_letters_total",
			Help: "Dead letters written, by reason."}, []string{"stage", "reason"}),
		Undecodable: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "undecodable_records_total",
			Help: "Input records that did not decode (dead-lettered, never handed to the stage)."}, []string{"stage"}),
		Stale: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "stale_work_total",
			Help: "Work dropped because its partition was revoked or its transaction aborted (its input is consumed again)."}, []string{"stage"}),
		Held: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "partition_holds_total",
			Help: "Times a partition waited on the schema registry to decode its next record."}, []string{"stage"}),
		Inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "inflight_records",
			Help: "Records handed to a stage and not yet finished."}, []string{"stage"}),
		Commits: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "offset_commits_total",
			Help: "Successful offset commits."}, []string{"stage"}),
		Aborts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "transaction_aborts_total",
			Help: "Transactions aborted (exactly-once mode): their records are consumed again."}, []string{"stage"}),
		Renewals: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "producer_renewals_total",
			Help: "Times the transactional producer was found fenced and made anew (exactly-once mode): the instance stopped responding long enough for its partitions to move."}, []string{"stage"}),
		Fenced: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "transactions_fenced_total",
			Help: "Open transactions of departed instances of the stage (frozen, partitioned away) this instance aborted by fencing them, instead of waiting for the broker's timeout (exactly-once mode)."}, []string{"stage"}),
		Hanging: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "hanging_transactions",
			Help: "Transactions of the stage that Apache Kafka left open on a partition though their coordinator is past them (exactly-once mode): on the partition holding the group's offsets the stage consumes nothing, on one it writes its readers wait, until an operator ends them (kafka-transactions.sh abort; the stage's log and status name the command)."}, []string{"stage"}),
		CommitErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "offset_commit_errors_total",
			Help: "Failed offset commits (retried at the next interval)."}, []string{"stage"}),
		Paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "paused_partitions",
			Help: "Assigned partitions held by a pause reason."}, []string{"stage", "reason"}),
		Restores: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "state_restore_seconds",
			Help:    "Time to restore one partition's state from its changelog.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, []string{"stage"}),
		StateKeys: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "state_keys",
			Help: "Keys a stage's state holds (dedup: idempotency keys; emit: emitted request ids), over its assigned partitions."}, []string{"stage"}),
	}
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, as in tests).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := newMetrics()
	if err := Register(reg, m.Consumed, m.Produced, m.ProduceErrors, m.DeadLetters, m.Undecodable, m.Stale, m.Held,
		m.Inflight, m.Commits, m.Aborts, m.Renewals, m.Fenced, m.Hanging, m.CommitErrors, m.Paused, m.Restores, m.StateKeys); err != nil {
		return nil, err
	}
	return m, nil
}

// Register registers every collector with reg (nil: none) and returns the
// errors joined, instead of panicking as MustRegister does.
func Register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	var errs []error
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// hotMetrics are the children of the metrics counted per record, resolved
// when the runner is made: WithLabelValues hashes its labels and takes a
// lock, about 5% of a stage's CPU when it ran per record.
type hotMetrics struct {
	consumed      prometheus.Counter
	produceErrors prometheus.Counter
	// producedTo holds Produced's child per topic the stage writes; a
	// topic not among them (none is expected) is resolved each time.
	producedTo  []topicCounter
	producedVec *prometheus.CounterVec
	stage       string
}

type topicCounter struct {
	topic string
	c     prometheus.Counter
}

func newHotMetrics(m *Metrics, stage string, topics []string) hotMetrics {
	h := hotMetrics{consumed: m.Consumed.WithLabelValues(stage), produceErrors: m.ProduceErrors.WithLabelValues(stage),
		producedVec: m.Produced, stage: stage}
	for _, t := range topics {
		h.producedTo = append(h.producedTo, topicCounter{t, m.Produced.WithLabelValues(stage, t)})
	}
	return h
}

// produced is Produced's child for topic.
func (h *hotMetrics) produced(topic string) prometheus.Counter {
	for i := range h.producedTo {
		if h.producedTo[i].topic == topic {
			return h.producedTo[i].c
		}
	}
	return h.producedVec.WithLabelValues(h.stage, topic)
}
