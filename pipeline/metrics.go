package pipeline

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the runner's Prometheus metrics, shared by every runner of a
// process and labelled by stage.
type Metrics struct {
	Consumed      *prometheus.CounterVec
	Produced      *prometheus.CounterVec
	ProduceErrors *prometheus.CounterVec
	DeadLetters   *prometheus.CounterVec
	Inflight      *prometheus.GaugeVec
	Commits       *prometheus.CounterVec
	Aborts        *prometheus.CounterVec
	CommitErrors  *prometheus.CounterVec
	Paused        *prometheus.GaugeVec
	Restores      *prometheus.HistogramVec
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, as in tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns = "asyncinfer"
	m := &Metrics{
		Consumed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "records_consumed_total",
			Help: "Records handed to a stage."}, []string{"stage"}),
		Produced: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "records_produced_total",
			Help: "Records a stage produced and Kafka acknowledged, by topic."}, []string{"stage", "topic"}),
		ProduceErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "produce_errors_total",
			Help: "Records a stage failed to produce."}, []string{"stage"}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "dead_letters_total",
			Help: "Dead letters written, by reason."}, []string{"stage", "reason"}),
		Inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "inflight_records",
			Help: "Records handed to a stage and not yet finished."}, []string{"stage"}),
		Commits: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "offset_commits_total",
			Help: "Successful offset commits."}, []string{"stage"}),
		Aborts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "transaction_aborts_total",
			Help: "Transactions aborted (exactly-once mode): their records are consumed again."}, []string{"stage"}),
		CommitErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "offset_commit_errors_total",
			Help: "Failed offset commits (retried at the next interval)."}, []string{"stage"}),
		Paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "paused_partitions",
			Help: "Assigned partitions held by a pause reason."}, []string{"stage", "reason"}),
		Restores: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "state_restore_seconds",
			Help:    "Time to restore one partition's state from its changelog.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, []string{"stage"}),
	}
	if reg != nil {
		reg.MustRegister(m.Consumed, m.Produced, m.ProduceErrors, m.DeadLetters, m.Inflight,
			m.Commits, m.Aborts, m.CommitErrors, m.Paused, m.Restores)
	}
	return m
}
