package admin_test

import (
	"bytes"
	"context"
	"errors"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/asyncinfer/asyncinfer/admin"
	"github.com/asyncinfer/asyncinfer/stages/emit"
	"github.com/asyncinfer/asyncinfer/stages/infer"
)

// liveSource is a Source whose numbers move on every call, as a busy
// process's do, so that the page can only show them by polling.
type liveSource struct {
	mu      sync.Mutex
	calls   int
	results prometheus.Counter
}

const baseLag = 1000

func (s *liveSource) Status() admin.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	s.results.Inc()
	return admin.Status{
		Instance: "browser-test",
		Stages: []admin.StageStatus{
			{Name: "dedup", Group: "asyncinfer.dedup", Ready: true, Joined: true,
				Partitions: []admin.PartitionStatus{{Topic: "asyncinfer.requests", Partition: 0}}},
			{Name: "infer", Group: "asyncinfer.infer", Joined: true, Inflight: 3,
				Partitions: []admin.PartitionStatus{{Topic: "asyncinfer.requests.accepted", Partition: 0, Restoring: true, PausedBy: []string{"restore"}}}},
		},
		Lag: []admin.PartitionLag{
			{Group: "asyncinfer.infer", Topic: "asyncinfer.requests.accepted", Partition: 0, Committed: 5, End: 5 + baseLag + int64(s.calls), Lag: baseLag + int64(s.calls)},
		},
		LagUpdated: time.Now(),
	}
}

func (s *liveSource) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func chromium(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if os.Getenv("ASYNCINFER_REQUIRE_BROWSER") == "1" {
		t.Fatal("chromium not installed, and ASYNCINFER_REQUIRE_BROWSER=1 (set by .ci/run): deploy/test-deps.sh installs it")
	}
	t.Skip("chromium not installed: make test installs it with apt (deploy/test-deps.sh)")
	return ""
}

// runChromium runs headless chromium with args and returns its stdout. It
// runs in its own process group, killed whole when it ends, so that no
// renderer or zygote outlives the test.
func runChromium(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=4000"}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if cmd.Process != nil {
		if kerr := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); kerr != nil && !errors.Is(kerr, syscall.ESRCH) {
			t.Logf("kill chromium's process group: %v", kerr)
		}
	}
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

func TestStatusPageInBrowser(t *testing.T) {
	bin := chromium(t)
	reg := prometheus.NewRegistry()
	em, err := emit.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	em.Emitted.WithLabelValues("FAILED").Add(17)
	im, err := infer.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	im.BatchSize.WithLabelValues("resnet").Observe(2)
	im.BatchSize.WithLabelValues("resnet").Observe(5)
	im.Calls.WithLabelValues("resnet", "ok").Add(2)
	im.Outcomes.WithLabelValues("resnet", "SUCCEEDED").Add(7)
	im.CostFixed.WithLabelValues("resnet", "_default").Set(0.0125)
	im.CostPerItem.WithLabelValues("resnet", "_default").Set(0.00025)
	src := &liveSource{results: em.Emitted.WithLabelValues("SUCCEEDED")}
	src.results.Add(4241)

	s, err := admin.New("127.0.0.1:0", reg, src)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	url := "http://" + s.Addr() + "/"

	dom := string(runChromium(t, bin, "--dump-dom", url))
	calls := src.Calls()
	for _, want := range []string{`data-stage="dedup"`, `data-stage="infer"`, "asyncinfer.requests.accepted/0 restoring paused: restore",
		"instance browser-test", "1 of 2 ready", "restoring partitions asyncinfer.requests.accepted/0", ">SUCCEEDED<", ">FAILED<", ">17<", ">resnet<", ">3.50<", ">12.500<", ">0.250<"} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered page lacks %q", want)
		}
	}
	// The figures come from /status.json only, and move on every call: the
	// page shows one of them only if its script fetched and rendered it,
	// and one past the first only if it kept polling.
	lagTotal := figure(t, dom, `id="lag-total">(\d+)<`)
	if lagTotal < baseLag+2 || lagTotal > baseLag+int64(calls) {
		t.Errorf("lag total %d: want a later poll's, in [%d, %d]", lagTotal, baseLag+2, baseLag+calls)
	}
	if results := figure(t, dom, `id="results-total">(\d+)<`); results < 17+4241+2 || results > 17+4241+int64(calls) {
		t.Errorf("results total %d: want a later poll's, in [%d, %d]", results, 17+4241+2, 17+4241+calls)
	}
	if strings.Contains(dom, `id="refreshed">never<`) {
		t.Error("the page says it never refreshed")
	}
	if t.Failed() {
		t.Logf("DOM after %d polls:\n%s", calls, dom)
	}

	shot := filepath.Join(t.ArtifactDir(), "status.png")
	runChromium(t, bin, "--screenshot="+shot, "--window-size=1280,900", url)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s: %v", shot, err)
	}
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 900 {
		t.Errorf("screenshot is %v, want 1280x900", b)
	}
	t.Logf("screenshot: %s", shot)
}

func figure(t *testing.T, dom, re string) int64 {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(dom)
	if m == nil {
		t.Errorf("rendered page lacks %s", re)
		return -1
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}
