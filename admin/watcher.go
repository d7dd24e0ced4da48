package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// LagMetricName is the gauge the Watcher exports, one series per group,
// topic and partition.
const LagMetricName = "asyncinfer_consumer_lag_records"

// LagSnapshot is the result of a Watcher's last refresh.
type LagSnapshot struct {
	// Lag is what the last refresh measured; after a failed refresh, what
	// it could still measure (see Lag).
	Lag []PartitionLag
	// Updated is when the last refresh ended, zero before the first.
	Updated time.Time
	// Err is the last refresh's error, nil when it measured everything.
	Err error
	// Groups sums Lag up per group.
	Groups []GroupLag
}

// WatcherOption configures a Watcher (the option style of every library
// package here, franz-go's: an interface over one unexported config).
type WatcherOption interface{ apply(*watcherCfg) }

type watcherOptFn func(*watcherCfg)

func (f watcherOptFn) apply(c *watcherCfg) { f(c) }

type watcherCfg struct {
	interval time.Duration
	window   time.Duration
	reg      prometheus.Registerer
	logger   *slog.Logger
	markers  []kgo.Opt // connection options for DiscountMarkers and time lag; nil: off
	only     func() map[string]map[int32]bool
}

func defaultWatcherCfg() watcherCfg {
	return watcherCfg{interval: 5 * time.Second, window: 30 * time.Second, logger: slog.New(slog.DiscardHandler)}
}

func (c *watcherCfg) validate() error {
	if c.interval <= 0 || c.window < c.interval {
		return fmt.Errorf("admin: watcher interval %v and window %v: want a positive interval within the window", c.interval, c.window)
	}
	return nil
}

// Interval sets how often the Watcher measures lag, and how long one
// measurement may take. Default 5s.
func Interval(d time.Duration) WatcherOption {
	return watcherOptFn(func(c *watcherCfg) { c.interval = d })
}

// WithRegisterer registers the lag gauge with reg. Default: not registered.
func WithRegisterer(reg prometheus.Registerer) WatcherOption {
	return watcherOptFn(func(c *watcherCfg) { c.reg = reg })
}

// WithMarkerCheck makes the Watcher discount transaction markers and aborted
// records from small lags (DiscountMarkers) and measure lag as time
// (MeasureTimeLag), reading with a client made from kopts. Default: off (raw
// lag in records).
func WithMarkerCheck(kopts []kgo.Opt) WatcherOption {
	return watcherOptFn(func(c *watcherCfg) { c.markers = kopts })
}

// Window is how far back the Watcher looks to compute rates and statuses.
// Default 30s.
func Window(d time.Duration) WatcherOption {
	return watcherOptFn(func(c *watcherCfg) { c.window = d })
}

// OnlyPartitions restricts the Watcher to the partitions fn returns at each
// refresh (by topic): a stage process watches the partitions it owns, so
// that the processes of a group share the work instead of each listing
// every partition. Default: every partition of the groups.
func OnlyPartitions(fn func() map[string]map[int32]bool) WatcherOption {
	return watcherOptFn(func(c *watcherCfg) { c.only = fn })
}

// WithLogger sets the logger for failed refreshes. Default: discard.
func WithLogger(l *slog.Logger) WatcherOption {
	return watcherOptFn(func(c *watcherCfg) { c.logger = l })
}

// MarkerCheckMax is the largest lag the Watcher reads to discount markers:
// a larger one is work whatever markers it holds.
const MarkerCheckMax = 64

// Watcher measures the lag of a fixed set of groups periodically, keeps the
// last snapshot for status pages, and exports it as the gauge
// asyncinfer_consumer_lag_records{group,topic,partition}.
type Watcher struct {
	adm     *kadm.Client
	groups  []string
	cfg     watcherCfg
	gauge   *prometheus.GaugeVec
	seconds *prometheus.GaugeVec
	drain   *prometheus.GaugeVec
	rate    *prometheus.GaugeVec
	status  *prometheus.GaugeVec
	history map[[3]string][]sample

	// refresh serializes refreshes, so that gauge updates and deletions of
	// two refreshes never interleave.
	refresh sync.Mutex
	mu      sync.Mutex // guards snap and series
	snap    LagSnapshot
	series  map[[3]string]struct{}
}

// NewWatcher returns a Watcher of groups; it measures nothing until Run or
// Refresh.
func NewWatcher(adm *kadm.Client, groups []string, opts ...WatcherOption) (*Watcher, error) {
	cfg := defaultWatcherCfg()
	for _, o := range opts {
		o.apply(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if adm == nil {
		return nil, errors.New("admin: watcher needs a kadm client")
	}
	w := &Watcher{
		adm: adm, groups: uniq(groups), cfg: cfg,
		gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: LagMetricName,
			Help: "Records a consumer group has yet to consume on a partition, up to its last stable offset."},
			[]string{"group", "topic", "partition"}),
		seconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "asyncinfer_consumer_lag_seconds",
			Help: "Age of the oldest record a consumer group has yet to consume on a partition (0: not behind)."},
			[]string{"group", "topic", "partition"}),
		drain: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "asyncinfer_consumer_drain_seconds",
			Help: "Time the group's lag on a partition would take to drain at its consume rate over the window (+Inf: behind and not moving)."},
			[]string{"group", "topic", "partition"}),
		rate: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "asyncinfer_consumer_records_per_second",
			Help: "Records per second a consumer group consumed on a partition over the watcher's window."},
			[]string{"group", "topic", "partition"}),
		status: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "asyncinfer_consumer_group_status",
			Help: "1 for a group's status over the watcher's window (OK, WARN, LSO_STUCK, STALL, STOP), 0 for the others."},
			[]string{"group", "status"}),
		series:  map[[3]string]struct{}{},
		history: map[[3]string][]sample{},
	}
	if cfg.reg != nil {
		for _, c := range []prometheus.Collector{w.gauge, w.seconds, w.drain, w.rate, w.status} {
			if err := cfg.reg.Register(c); err != nil {
				return nil, fmt.Errorf("admin: register lag metrics: %w", err)
			}
		}
	}
	return w, nil
}

// Run refreshes at once and then every interval until ctx ends, and returns
// nil then. A failed refresh is kept in the snapshot and logged, and the
// next one is tried as usual: lag is for watching, not worth stopping for.
func (w *Watcher) Run(ctx context.Context) error {
	t := time.NewTicker(w.cfg.interval)
	defer t.Stop()
	for {
		if err := w.Refresh(ctx); err != nil && ctx.Err() == nil {
			w.cfg.logger.Warn("consumer lag refresh failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Refresh measures lag once, bounded by the interval, updates the snapshot
// and the gauge, and returns the measurement's error. A refresh that ends
// with ctx does not replace the snapshot.
func (w *Watcher) Refresh(ctx context.Context) error {
	w.refresh.Lock()
	defer w.refresh.Unlock()
	rctx, cancel := context.WithTimeout(ctx, w.cfg.interval)
	defer cancel()
	rows, err := Lag(rctx, w.adm, w.groups...)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if w.cfg.only != nil {
		only := w.cfg.only()
		kept := rows[:0]
		for _, r := range rows {
			if only[r.Topic][r.Partition] {
				kept = append(kept, r)
			}
		}
		rows = kept
	}
	now := time.Now()
	if len(rows) > 0 {
		if hwm, herr := w.highWatermarks(rctx, rows); herr == nil {
			for i := range rows {
				rows[i].HighWatermark = hwm[rows[i].Topic][rows[i].Partition]
			}
		} else {
			err = errors.Join(err, herr)
		}
	}
	if w.cfg.markers != nil {
		if merr := DiscountMarkers(rctx, w.cfg.markers, rows, MarkerCheckMax); merr != nil {
			err = errors.Join(err, merr)
		}
		if terr := MeasureTimeLag(rctx, w.cfg.markers, rows, now); terr != nil {
			err = errors.Join(err, fmt.Errorf("admin: time lag: %w", terr))
		}
	}

	seen := make(map[[3]string]struct{}, len(rows))
	for i := range rows {
		r := &rows[i]
		k := [3]string{r.Group, r.Topic, strconv.FormatInt(int64(r.Partition), 10)}
		seen[k] = struct{}{}
		h := append(w.history[k], sample{at: now, committed: r.Committed, lag: r.Lag, lagSeconds: r.LagSeconds,
			end: r.End, hwm: r.HighWatermark, held: r.Member != ""})
		// Half an interval of slack: a window of three intervals keeps its
		// three samples however the refreshes jitter.
		for len(h) > 1 && now.Sub(h[0].at) > w.cfg.window+w.cfg.interval/2 {
			h = h[1:]
		}
		w.history[k] = h
		evaluate(r, h)
		w.gauge.WithLabelValues(k[:]...).Set(float64(r.Lag))
		w.seconds.WithLabelValues(k[:]...).Set(r.LagSeconds)
		w.rate.WithLabelValues(k[:]...).Set(r.Rate)
		drain := r.DrainSeconds
		if drain < 0 {
			drain = math.Inf(1)
		}
		w.drain.WithLabelValues(k[:]...).Set(drain)
	}
	groups := Groups(rows)
	for _, g := range groups {
		for _, st := range []GroupStatus{StatusOK, StatusWarn, StatusLSOStuck, StatusStall, StatusStop} {
			v := 0.0
			if st == g.Status {
				v = 1
			}
			w.status.WithLabelValues(g.Group, string(st)).Set(v)
		}
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		// Only a complete measurement says a partition is gone; after a
		// partial one its series keeps its last value rather than blink.
		for k := range w.series {
			if _, ok := seen[k]; !ok {
				for _, g := range []*prometheus.GaugeVec{w.gauge, w.seconds, w.drain, w.rate} {
					g.DeleteLabelValues(k[:]...)
				}
				delete(w.series, k)
				delete(w.history, k)
			}
		}
	}
	for k := range seen {
		w.series[k] = struct{}{}
	}
	w.snap = LagSnapshot{Lag: rows, Groups: groups, Updated: time.Now(), Err: err}
	return err
}

// highWatermarks lists the partitions' ends including open transactions'
// records (read_uncommitted), to tell an LSO held by an open transaction.
func (w *Watcher) highWatermarks(ctx context.Context, rows []PartitionLag) (map[string]map[int32]int64, error) {
	var topics []string
	for _, r := range rows {
		if !slices.Contains(topics, r.Topic) {
			topics = append(topics, r.Topic)
		}
	}
	ends, err := w.adm.ListEndOffsets(ctx, topics...)
	if err != nil && !isShardErr(err) {
		return nil, fmt.Errorf("admin: list high watermarks: %w", err)
	}
	out := map[string]map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			if out[o.Topic] == nil {
				out[o.Topic] = map[int32]int64{}
			}
			out[o.Topic][o.Partition] = o.Offset
		}
	})
	return out, nil
}

// Snapshot returns the last refresh's result. Its Lag slice is shared:
// read it, do not modify it.
func (w *Watcher) Snapshot() LagSnapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.snap
}
