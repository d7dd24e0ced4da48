package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/asyncinfer/asyncinfer/admin"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/stages/emit"
	"github.com/asyncinfer/asyncinfer/stages/infer"
)

// source is a Source whose status the test sets.
type source struct {
	mu sync.Mutex
	st admin.Status
}

func (s *source) Status() admin.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

func (s *source) set(st admin.Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st = st
}

func newServer(t *testing.T, g prometheus.Gatherer, src admin.Source) *admin.Server {
	t.Helper()
	s, err := admin.New("127.0.0.1:0", g, src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func get(t *testing.T, h http.Handler, path string) (int, string, http.Header) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String(), rec.Header()
}

func TestReadyz(t *testing.T) {
	src := &source{}
	h := newServer(t, prometheus.NewRegistry(), src).Handler()
	joined := admin.StageStatus{Name: "dedup", Group: "asyncinfer.dedup", Joined: true, Ready: true}
	restoring := admin.StageStatus{Name: "dedup", Group: "asyncinfer.dedup", Joined: true, Partitions: []admin.PartitionStatus{
		{Topic: "requests", Partition: 0, Restoring: true},
		{Topic: "requests", Partition: 1, PausedBy: []string{"backpressure"}},
		{Topic: "requests", Partition: 2, Restoring: true, PausedBy: []string{"restore"}},
	}}
	emitReady := admin.StageStatus{Name: "emit", Joined: true, Ready: true}

	// The steps of one process's life, in order.
	for _, step := range []struct {
		name   string
		stages []admin.StageStatus
		code   int
		body   string
	}{
		{"no stages", nil, 503, "no stages\n"},
		{"not joined", []admin.StageStatus{{Name: "dedup"}, {Name: "emit"}}, 503,
			"stage dedup: not joined\nstage emit: not joined\n"},
		{"restoring", []admin.StageStatus{restoring, emitReady}, 503,
			"stage dedup: restoring partitions requests/0, requests/2\n"},
		{"ready", []admin.StageStatus{joined, emitReady}, 200, "ready\n"},
		{"stopped", []admin.StageStatus{joined, {Name: "emit", Joined: true}}, 503, "stage emit: stopped\n"},
	} {
		src.set(admin.Status{Stages: step.stages})
		code, body, hdr := get(t, h, "/readyz")
		if code != step.code || body != step.body {
			t.Errorf("%s: /readyz = %d %q, want %d %q", step.name, code, body, step.code, step.body)
		}
		if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("%s: Content-Type %q", step.name, ct)
		}
	}
}

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "asyncinfer_test_things_total", Help: "Things."})
	reg.MustRegister(c)
	c.Add(3)
	h := newServer(t, reg, &source{}).Handler()

	for _, tc := range []struct {
		path     string
		code     int
		contains string
		ctype    string
	}{
		{"/healthz", 200, "ok\n", "text/plain"},
		{"/metrics", 200, "asyncinfer_test_things_total 3\n", "text/plain"},
		{"/status.json", 200, `"instance":""`, "application/json"},
		{"/", 200, "<title>asyncinfer status</title>", "text/html"},
		{"/nope", 404, "", ""},
	} {
		code, body, hdr := get(t, h, tc.path)
		if code != tc.code || !strings.Contains(body, tc.contains) || !strings.HasPrefix(hdr.Get("Content-Type"), tc.ctype) {
			t.Errorf("GET %s = %d %q %q, want %d, containing %q, %s", tc.path, code, hdr.Get("Content-Type"), body, tc.code, tc.contains, tc.ctype)
		}
	}

	// The machine that shows the page may have no internet: nothing may
	// come from elsewhere.
	_, page, _ := get(t, h, "/")
	for _, ext := range []string{"http://", "https://", "//cdn", "<link", "src="} {
		if strings.Contains(page, ext) {
			t.Errorf("status page refers to %q: it must be self-contained", ext)
		}
	}
}

func TestStatusJSON(t *testing.T) {
	reg := prometheus.NewRegistry()
	im, err := infer.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	em, err := emit.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := pipeline.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	im.BatchSize.WithLabelValues("m").Observe(2)
	im.BatchSize.WithLabelValues("m").Observe(4)
	im.Calls.WithLabelValues("m", "ok").Add(2)
	im.Calls.WithLabelValues("m", "transient").Inc()
	im.Outcomes.WithLabelValues("m", "SUCCEEDED").Add(6)
	em.Emitted.WithLabelValues("SUCCEEDED").Add(5)
	em.Emitted.WithLabelValues("FAILED").Inc()
	pm.Inflight.WithLabelValues("infer").Set(7)
	im.CostFixed.WithLabelValues("m", "_default").Set(0.005)
	im.CostPerItem.WithLabelValues("m", "_default").Set(0.00025)
	im.CostPerItem.WithLabelValues("m", "v2").Set(0.0005)
	im.CostFixed.WithLabelValues("m", "v2").Set(0.01)

	updated := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	st := admin.Status{
		Instance: "i-1",
		Stages: []admin.StageStatus{{Name: "infer", Group: "asyncinfer.infer", Ready: true, Joined: true, Inflight: 7,
			Partitions: []admin.PartitionStatus{{Topic: "requests.accepted", Partition: 1, PausedBy: []string{"breaker:m"}}}},
			{Name: "emit", Group: "asyncinfer.emit"}},
		Lag:        []admin.PartitionLag{{Group: "asyncinfer.infer", Topic: "requests.accepted", Partition: 1, Committed: -1, End: 9, Lag: 9}},
		LagUpdated: updated,
		LagError:   "admin: lag of group x: boom",
	}
	code, body, _ := get(t, newServer(t, reg, &source{st: st}).Handler(), "/status.json")
	if code != 200 {
		t.Fatalf("GET /status.json = %d %s", code, body)
	}
	var got struct {
		admin.Status
		NotReady map[string]string `json:"not_ready"`
		Metrics  admin.Figures     `json:"metrics"`
		Time     time.Time         `json:"time"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("%v in %s", err, body)
	}
	if !reflect.DeepEqual(got.Status, st) {
		t.Errorf("status:\n got %+v\nwant %+v", got.Status, st)
	}
	if want := map[string]string{"emit": "not joined"}; !reflect.DeepEqual(got.NotReady, want) {
		t.Errorf("not_ready = %v, want %v", got.NotReady, want)
	}
	l := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	want := admin.Figures{
		Batches:       []admin.BatchFigure{{Model: "m", Count: 2, Mean: 3}},
		ModelCalls:    []admin.Count{{Labels: l("model", "m", "result", "ok"), Value: 2}, {Labels: l("model", "m", "result", "transient"), Value: 1}},
		InferOutcomes: []admin.Count{{Labels: l("model", "m", "status", "SUCCEEDED"), Value: 6}},
		Results:       []admin.Count{{Labels: l("status", "FAILED"), Value: 1}, {Labels: l("status", "SUCCEEDED"), Value: 5}},
		Inflight:      []admin.Count{{Labels: l("stage", "infer"), Value: 7}},
		Costs: []admin.CostFigure{{Model: "m", Version: "_default", Fixed: 0.005, PerItem: 0.00025},
			{Model: "m", Version: "v2", Fixed: 0.01, PerItem: 0.0005}},
	}
	if !reflect.DeepEqual(got.Metrics, want) {
		t.Errorf("metrics:\n got %+v\nwant %+v", got.Metrics, want)
	}
	if time.Since(got.Time) > time.Minute {
		t.Errorf("time %v", got.Time)
	}
	if strings.Contains(body, "metrics_error") {
		t.Errorf("metrics_error in %s", body)
	}
}

func TestServe(t *testing.T) {
	if _, err := admin.New("127.0.0.1:0", nil, &source{}); err == nil {
		t.Error("New without a gatherer: no error")
	}
	s := newServer(t, prometheus.NewRegistry(), &source{})
	host, port, err := net.SplitHostPort(s.Addr())
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("Addr() = %q: want the port picked", s.Addr())
	}
	if _, err := admin.New(s.Addr(), prometheus.NewRegistry(), &source{}); err == nil {
		t.Error("New on a taken address: no error")
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + s.Addr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok\n" {
		t.Errorf("GET /healthz = %d %q", resp.StatusCode, body)
	}
	client.CloseIdleConnections()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		c.Close()
		t.Error("still listening after Serve returned")
	}

	wild, err := admin.New(":0", prometheus.NewRegistry(), &source{})
	if err != nil {
		t.Fatal(err)
	}
	defer wild.Close()
	if _, port, err := net.SplitHostPort(wild.Addr()); err != nil || port == "0" {
		t.Errorf(`New(":0").Addr() = %q`, wild.Addr())
	}
}

// Profiles are served only when asked for: off, /debug/pprof/ is not found.
func TestPprofOnlyWhenEnabled(t *testing.T) {
	for _, on := range []bool{false, true} {
		var opts []admin.ServerOption
		if on {
			opts = append(opts, admin.WithPprof())
		}
		s, err := admin.New("127.0.0.1:0", prometheus.NewRegistry(), &source{}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/debug/pprof/goroutine?debug=1", nil))
		if got, want := rec.Code == http.StatusOK, on; got != want {
			t.Errorf("pprof enabled %v: /debug/pprof/goroutine answered %d", on, rec.Code)
		}
	}
}
