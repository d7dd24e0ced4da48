package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
}

// WatcherOption configures a Watcher (the option style of every library
// package here, franz-go's: an interface over one unexported config).
type WatcherOption interface{ apply(*watcherCfg) }

type watcherOptFn func(*watcherCfg)

func (f watcherOptFn) apply(c *watcherCfg) { f(c) }

type watcherCfg struct {
	interval time.Duration
	reg      prometheus.Registerer
	logger   *slog.Logger
	markers  []kgo.Opt // connection options for DiscountMarkers; nil: off
}

func defaultWatcherCfg() watcherCfg {
	return watcherCfg{interval: 5 * time.Second, logger: slog.New(slog.DiscardHandler)}
}

func (c *watcherCfg) validate() error {
	if c.interval <= 0 {
		return fmt.Errorf("admin: watcher interval %v: must be positive", c.interval)
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
// records from small lags (DiscountMarkers), reading with a client made from
// kopts. Default: off (raw lag).
func WithMarkerCheck(kopts []kgo.Opt) WatcherOption {
	return watcherOptFn(func(c *watcherCfg) { c.markers = kopts })
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
	adm    *kadm.Client
	groups []string
	cfg    watcherCfg
	gauge  *prometheus.GaugeVec

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
		series: map[[3]string]struct{}{},
	}
	if cfg.reg != nil {
		if err := cfg.reg.Register(w.gauge); err != nil {
			return nil, fmt.Errorf("admin: register lag gauge: %w", err)
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
	if w.cfg.markers != nil {
		if merr := DiscountMarkers(rctx, w.cfg.markers, rows, MarkerCheckMax); merr != nil {
			err = errors.Join(err, merr)
		}
	}

	seen := make(map[[3]string]struct{}, len(rows))
	for _, r := range rows {
		k := [3]string{r.Group, r.Topic, strconv.FormatInt(int64(r.Partition), 10)}
		seen[k] = struct{}{}
		w.gauge.WithLabelValues(k[:]...).Set(float64(r.Lag))
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		// Only a complete measurement says a partition is gone; after a
		// partial one its series keeps its last value rather than blink.
		for k := range w.series {
			if _, ok := seen[k]; !ok {
				w.gauge.DeleteLabelValues(k[:]...)
				delete(w.series, k)
			}
		}
	}
	for k := range seen {
		w.series[k] = struct{}{}
	}
	w.snap = LagSnapshot{Lag: rows, Updated: time.Now(), Err: err}
	return err
}

// Snapshot returns the last refresh's result. Its Lag slice is shared:
// read it, do not modify it.
func (w *Watcher) Snapshot() LagSnapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.snap
}
