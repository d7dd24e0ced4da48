package suite

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

var nan = math.NaN()

// metrics is one scrape of a /metrics page: every series, named as
// exposed (`name{label="v",...}`), with its value.
type metrics map[string]float64

// scrape reads http://addr/metrics (the Prometheus text format).
func scrape(ctx context.Context, addr string) (metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close() //nolint:errcheck // read to the end below
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics of %s: %s", addr, resp.Status)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics reads the text format: comments skipped, a series is
// everything before its value (label values with spaces included: the
// value follows the closing brace).
func parseMetrics(r io.Reader) (metrics, error) {
	m := metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		series, rest := line, ""
		if i := strings.LastIndexByte(line, '}'); i >= 0 {
			series, rest = line[:i+1], line[i+1:]
		} else if i := strings.IndexByte(line, ' '); i >= 0 {
			series, rest = line[:i], line[i:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		m[series] = v
	}
	return m, sc.Err()
}

// sum adds up the series of a metric whose labels include every match
// (`model="sim"`); NaN when the metric is not exposed at all.
func (m metrics) sum(name string, match ...string) float64 {
	total, found := 0.0, false
	for s, v := range m {
		rest, ok := strings.CutPrefix(s, name)
		if !ok || (rest != "" && rest[0] != '{') {
			continue
		}
		all := true
		for _, want := range match {
			if !strings.Contains(rest, want) {
				all = false
				break
			}
		}
		if all {
			total += v
			found = true
		}
	}
	if !found {
		return nan
	}
	return total
}

// counters is what one process's scrape says that a run needs, read at
// the start and the end of a run (and every second, for the series).
type counters struct {
	at          time.Time
	cpu         float64 // seconds, /proc
	rss         float64 // bytes, /proc
	heap        float64 // go_memstats_heap_alloc_bytes
	mallocs     float64 // go_memstats_mallocs_total
	calls       float64 // asyncinfer_batch_size_count: model calls
	items       float64 // asyncinfer_batch_size_sum: items in them
	callSeconds float64 // asyncinfer_model_call_seconds_sum
	consumed    float64 // asyncinfer_records_consumed_total: the records handed to the stage (or hop)
	statuses    map[string]float64
	// Why requests were not answered SUCCEEDED, as the stages count it.
	earlyDrops float64 // asyncinfer_infer_early_drops_total
	expired    float64 // asyncinfer_dedup_decisions_total{decision="expired"}
	rejected   float64 // asyncinfer_dedup_decisions_total{decision="rejected"}
}

// read takes the counters of one process: /proc always, /metrics when it
// has an admin server.
func read(ctx context.Context, pid int, admin string) counters {
	c := counters{at: time.Now(), cpu: cpuSeconds(pid), rss: rssBytes(pid), heap: nan, mallocs: nan, calls: nan,
		items: nan, callSeconds: nan, consumed: nan, earlyDrops: nan, expired: nan, rejected: nan}
	if admin == "" {
		return c
	}
	m, err := scrape(ctx, admin)
	if err != nil {
		return c
	}
	// A labelled series appears once first observed: absent from a page
	// that was read is 0, not unknown.
	zero := func(v float64) float64 {
		if math.IsNaN(v) {
			return 0
		}
		return v
	}
	c.heap = m.sum("go_memstats_heap_alloc_bytes")
	c.mallocs = m.sum("go_memstats_mallocs_total")
	c.calls = zero(m.sum("asyncinfer_batch_size_count"))
	c.items = zero(m.sum("asyncinfer_batch_size_sum"))
	c.callSeconds = zero(m.sum("asyncinfer_model_call_seconds_sum"))
	c.consumed = zero(m.sum("asyncinfer_records_consumed_total"))
	c.earlyDrops = zero(m.sum("asyncinfer_infer_early_drops_total"))
	c.expired = zero(m.sum("asyncinfer_dedup_decisions_total", `decision="expired"`))
	c.rejected = zero(m.sum("asyncinfer_dedup_decisions_total", `decision="rejected"`))
	c.statuses = map[string]float64{}
	for _, st := range []string{"SUCCEEDED", "FAILED", "EXPIRED", "REJECTED", "DUPLICATE"} {
		if v := m.sum("asyncinfer_infer_outcomes_total", `status="`+st+`"`); !math.IsNaN(v) {
			c.statuses[st] = v
		}
	}
	return c
}
