package admin_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/admin"
	"github.com/asyncinfer/asyncinfer/internal/stack"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/stages/dedup"
	"github.com/asyncinfer/asyncinfer/stages/emit"
	"github.com/asyncinfer/asyncinfer/stages/infer"
)

const metricsDoc = "../docs/metrics.md"

// metricPackages are the packages that define metrics, relative to the
// module root; registerAll registers each one's.
var metricPackages = []string{"admin", "pipeline", "stages/dedup", "stages/emit", "stages/infer"}

// benchmarkPackages define metrics no deployment serves: the benchmark's raw
// Kafka hop (bench/suite) exposes the runner's consumed counter under
// its name, so that one scraper reads both.
var benchmarkPackages = []string{"bench/suite"}

func registerAll(t *testing.T, reg prometheus.Registerer) {
	_, err1 := pipeline.NewMetrics(reg)
	_, err2 := dedup.NewMetrics(reg)
	_, err3 := infer.NewMetrics(reg)
	_, err4 := emit.NewMetrics(reg)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.NewWatcher(kadm.NewClient(nil), nil, admin.WithRegisterer(reg)); err != nil {
		t.Fatal(err)
	}
	// franz-go's client metrics register when a client is created; this
	// client never connects.
	cl, err := kgo.NewClient(kgo.WithHooks(stack.KafkaClientMetrics(reg, "x")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
}

// recorder keeps what is registered, so that the test can give every vector
// a child: Gather shows a labelled metric only once it has one.
type recorder struct {
	*prometheus.Registry
	cs []prometheus.Collector
}

func (r *recorder) Register(c prometheus.Collector) error {
	r.cs = append(r.cs, c)
	return r.Registry.Register(c)
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// child creates one series of a vector, trying label counts until one fits
// (the vector's label names are not exported; Gather reports them).
func child(c prometheus.Collector) bool {
	try := func(get func(...string) error) bool {
		for n := range 16 {
			if get(slices.Repeat([]string{"x"}, n)...) == nil {
				return true
			}
		}
		return false
	}
	switch v := c.(type) {
	case *prometheus.CounterVec:
		return try(func(l ...string) error { _, err := v.GetMetricWithLabelValues(l...); return err })
	case *prometheus.GaugeVec:
		return try(func(l ...string) error { _, err := v.GetMetricWithLabelValues(l...); return err })
	case *prometheus.HistogramVec:
		return try(func(l ...string) error { _, err := v.GetMetricWithLabelValues(l...); return err })
	case *prometheus.SummaryVec:
		return try(func(l ...string) error { _, err := v.GetMetricWithLabelValues(l...); return err })
	}
	return true // not a vector: gathered as it is
}

type docRow struct {
	typ, unit, meaning string
	labels             []string
}

var (
	docRowRE = regexp.MustCompile("^\\|\\s*`(asyncinfer_[a-z0-9_]+)`\\s*\\|")
	tickRE   = regexp.MustCompile("`([^`]+)`")
	fqNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)
)

func readDoc(t *testing.T) map[string]docRow {
	t.Helper()
	b, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]docRow{}
	for i, line := range strings.Split(string(b), "\n") {
		m := docRowRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		if len(cells) != 5 {
			t.Errorf("%s:%d: want 5 cells (name, type, labels, unit, meaning), have %d", metricsDoc, i+1, len(cells))
			continue
		}
		r := docRow{typ: strings.TrimSpace(cells[1]), unit: strings.TrimSpace(cells[3]), meaning: strings.TrimSpace(cells[4])}
		for _, l := range tickRE.FindAllStringSubmatch(cells[2], -1) {
			r.labels = append(r.labels, l[1])
		}
		if _, dup := rows[m[1]]; dup {
			t.Errorf("%s:%d: %s listed twice", metricsDoc, i+1, m[1])
		}
		if r.unit == "" || r.meaning == "" {
			t.Errorf("%s:%d: %s without unit or meaning", metricsDoc, i+1, m[1])
		}
		rows[m[1]] = r
	}
	if len(rows) == 0 {
		t.Fatalf("%s: no metric rows found", metricsDoc)
	}
	return rows
}

// TestMetricsDoc keeps docs/metrics.md, the dashboards' contract, equal to
// the metrics the code registers.
func TestMetricsDoc(t *testing.T) {
	rec := &recorder{Registry: prometheus.NewPedanticRegistry()}
	registerAll(t, rec)

	described := map[string]bool{}
	for _, c := range rec.cs {
		if !child(c) {
			t.Errorf("cannot create a series of %T", c)
		}
		ch := make(chan *prometheus.Desc, 16)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := fqNameRE.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("cannot read the name of %s", d)
			}
			described[m[1]] = true
		}
	}
	mfs, err := rec.Gather()
	if err != nil {
		t.Fatal(err)
	}

	doc := readDoc(t)
	for _, mf := range mfs {
		name := mf.GetName()
		delete(described, name)
		row, ok := doc[name]
		if !ok {
			t.Errorf("%s is not in %s: add a row", name, metricsDoc)
			continue
		}
		delete(doc, name)
		if typ := strings.ToLower(mf.GetType().String()); row.typ != typ {
			t.Errorf("%s: %s says %s, the code registers a %s", name, metricsDoc, row.typ, typ)
		}
		var labels []string
		for _, l := range mf.GetMetric()[0].GetLabel() {
			labels = append(labels, l.GetName())
		}
		if !slices.Equal(slices.Sorted(slices.Values(row.labels)), labels) {
			t.Errorf("%s: %s says labels %q, the code has %q", name, metricsDoc, row.labels, labels)
		}
	}
	for name := range described {
		t.Errorf("%s is described but not gathered: teach child() its collector type", name)
	}
	for name := range doc {
		t.Errorf("%s lists %s, which no package registers any more: remove the row", metricsDoc, name)
	}

	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "asyncinfer_kafka_buffered_") {
			continue // franz-go kprom's names for gauges, kept as the library names them
		}
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// TestMetricPackages fails when a package outside metricPackages starts
// defining metrics, which TestMetricsDoc would otherwise never see.
func TestMetricPackages(t *testing.T) {
	defines := regexp.MustCompile(`\b(prometheus|promauto)\.New(Counter|Gauge|Histogram|Summary|Untyped)(Vec|Func)?\(|\bprometheus\.NewDesc\(`)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if defines.Match(b) {
			rel, _ := filepath.Rel(root, filepath.Dir(path))
			if !slices.Contains(metricPackages, filepath.ToSlash(rel)) && !slices.Contains(benchmarkPackages, filepath.ToSlash(rel)) {
				t.Errorf("%s defines metrics: add its package to metricPackages and its NewMetrics to registerAll, and document them in %s",
					filepath.Join(rel, filepath.Base(path)), metricsDoc)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
