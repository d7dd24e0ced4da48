package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// deployment is one pipeline on the shared broker: its own topic prefix, so
// tests do not see each other's topics or groups.
type deployment struct {
	t      *testing.T
	prefix string
	config string  // the YAML file every process of it reads
	procs  []*proc // every process started, in order
}

var deployments int

func newDeployment(t *testing.T, partitions int, modelYAML string) *deployment {
	t.Helper()
	return newDeploymentOn(t, partitions, fmt.Sprintf("kafka:\n  brokers: [%s]\n", strings.Join(env.brokers, ", ")), modelYAML)
}

// newDeploymentOn is newDeployment with the kafka section given (a secured
// listener and its credentials).
func newDeploymentOn(t *testing.T, partitions int, kafkaYAML, modelYAML string) *deployment {
	t.Helper()
	deployments++
	d := &deployment{t: t, prefix: fmt.Sprintf("it%d-%d.", time.Now().Unix()%100000, deployments)}
	d.config = filepath.Join(t.TempDir(), "asyncinfer.yaml")
	body := fmt.Sprintf(`%sregistry:
  url: %s
topics:
  prefix: %s
  partitions: %d
  replication_factor: 1
log_level: warn
%s`, kafkaYAML, env.registry, d.prefix, partitions, modelYAML)
	if err := os.WriteFile(d.config, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return d
}

// cli runs one asyncinfer command of the deployment to its end.
func (d *deployment) cli(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, env.bin, append(args, "--config", d.config)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// verify recounts the deployment's topics.
type counts struct {
	Requests            int  `json:"requests"`
	Unique              int  `json:"unique"`
	Duplicates          int  `json:"duplicates"`
	Malformed           int  `json:"malformed"`
	Poisoned            int  `json:"poisoned"`
	DLQ                 int  `json:"dlq"`
	MalformedWithoutDLQ int  `json:"malformed_without_dlq"`
	Lost                int  `json:"lost"`
	Pending             int  `json:"pending"`
	Conflicting         int  `json:"conflicting"`
	Repeated            int  `json:"repeated"`
	Unrequested         int  `json:"unrequested"`
	Settled             bool `json:"settled"`
	// LatencyMs are the percentiles of each request id's first answer, from
	// its created_at to emit.
	LatencyMs struct {
		P50 float64 `json:"p50"`
		P95 float64 `json:"p95"`
		P99 float64 `json:"p99"`
		Max float64 `json:"max"`
	} `json:"latency_ms"`
	Results struct {
		Succeeded int `json:"succeeded"`
		Failed    int `json:"failed"`
		Expired   int `json:"expired"`
		Rejected  int `json:"rejected"`
		Duplicate int `json:"duplicate"`
	} `json:"results"`
}

func (d *deployment) verify(ctx context.Context) (counts, error) {
	out, errOut, err := d.cli(ctx, "verify", "--report", "json")
	var c counts
	if jerr := json.Unmarshal([]byte(out), &c); jerr != nil {
		return c, fmt.Errorf("verify: %w: %w: %s", err, jerr, errOut)
	}
	return c, nil
}

// settle runs verify until every request is answered and every group has
// consumed everything, and returns the last counts.
func (d *deployment) settle(ctx context.Context, want int) counts {
	d.t.Helper()
	var c counts
	var err error
	for {
		c, err = d.verify(ctx)
		if err == nil && c.Settled && c.Pending == 0 && c.Requests >= want {
			if c.Lost > 0 {
				// Every group consumed everything, yet answers are missing.
				// In exactly-once mode a transaction's markers land on its
				// partitions one by one: a group's offsets can be committed
				// (the marker on __consumer_offsets) before the answers of
				// the same transaction are visible (the marker on results),
				// and verify reads in that moment (seen once, 466 "lost"
				// after a burst). An answer that becomes visible was not
				// lost; a group that committed past work it had not done
				// never answers it. So: count again a little later.
				out, _, _ := d.cli(ctx, "lag")
				d.t.Logf("verify: lost=%d with every group settled; lag now:\n%s", c.Lost, out)
				time.Sleep(5 * time.Second)
				again, err := d.verify(ctx)
				if err == nil && again.Settled && again.Pending == 0 {
					d.t.Logf("verify 5 s later: lost=%d (was %d)", again.Lost, c.Lost)
					return again
				}
			}
			return c
		}
		select {
		case <-ctx.Done():
			d.t.Fatalf("not settled: %+v (last error %v)", c, err)
		case <-time.After(time.Second):
		}
	}
}

// proc is one `asyncinfer run` process.
type proc struct {
	name    string // its instance id
	stage   string
	cmd     *exec.Cmd
	started time.Time
	stderr  *syncBuffer
	exited  chan struct{} // closed when the process ended; err is then set
	err     error
	// ended is set before the test stops or kills the process on purpose:
	// any other exit is the process giving up on its own, which a stage
	// must never do.
	ended atomic.Bool
	addr  atomic.Pointer[string] // its admin server, once it printed it
	mem   memory
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs the given stage as its own process with a static instance id
// and an admin server on a free port, and waits until /readyz says ready.
func (d *deployment) start(ctx context.Context, stage, instance string) *proc {
	d.t.Helper()
	p := d.launch(stage, instance)
	p.waitReady(ctx, d.t)
	return p
}

// launch runs the given stage as its own process with a static instance id
// and an admin server on a free port, and returns at once. The process's
// memory is sampled while it runs; when the test ends, a process that
// exited on its own fails it.
func (d *deployment) launch(stage, instance string) *proc {
	d.t.Helper()
	p := &proc{name: instance, stage: stage, stderr: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(env.bin, "run", "--config", d.config, "--stages", stage, "--instance-id", instance,
		"--admin-addr", "127.0.0.1:0", "--log-level", "info")
	p.cmd.Stderr = p.stderr
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	go p.mem.sample(p.cmd.Process.Pid, p.exited)
	d.procs = append(d.procs, p)
	t := d.t
	t.Cleanup(func() {
		select {
		case <-p.exited:
			if !p.ended.Load() {
				t.Errorf("%s exited on its own (%v): a stage never exits because of data or of a dependency that comes back\n%s",
					instance, p.err, tail(p.stderr.String(), 4000))
			}
		default:
			p.ended.Store(true)
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", instance, tail(p.stderr.String(), 20000))
		}
	})
	return p
}

// alive reports whether the process still runs.
func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// waitReady waits until the process's /readyz says ready.
func (p *proc) waitReady(ctx context.Context, t *testing.T) {
	t.Helper()
	addr := p.waitAddr(ctx, t)
	for ready(addr) != nil {
		select {
		case <-p.exited:
			t.Fatalf("%s exited before ready: %v\n%s", p.name, p.err, p.stderr.String())
		case <-ctx.Done():
			t.Fatalf("%s not ready:\n%s", p.name, p.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

var adminRE = regexp.MustCompile(`admin http://([^/]+)/`)

func (p *proc) waitAddr(ctx context.Context, t *testing.T) string {
	t.Helper()
	for {
		if a := p.addr.Load(); a != nil {
			return *a
		}
		if m := adminRE.FindStringSubmatch(p.stderr.String()); m != nil {
			p.addr.Store(&m[1])
			return m[1]
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited: %v\n%s", p.name, p.err, p.stderr.String())
		case <-ctx.Done():
			t.Fatalf("%s printed no admin address:\n%s", p.name, p.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM and waits: the process drains (finishes and commits
// what it holds) and exits 0.
func (p *proc) stop(t *testing.T, within time.Duration) {
	t.Helper()
	p.ended.Store(true)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
		if p.err != nil {
			t.Fatalf("%s after SIGTERM: %v\n%s", p.name, p.err, p.stderr.String())
		}
	case <-time.After(within):
		t.Fatalf("%s did not drain within %v after SIGTERM:\n%s", p.name, within, p.stderr.String())
	}
}

// kill sends SIGKILL, as a crash would: nothing is drained or committed.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	p.ended.Store(true)
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.exited
}

// tail is the end of s, at most n bytes.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// waitMidStream waits until answers are flowing (the results topic holds
// some), the load is not done (the requests topic holds fewer than n), and
// each of procs owns at least one partition (its /status.json).
func (d *deployment) waitMidStream(ctx context.Context, t *testing.T, n int, procs map[string]*proc) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	sum := func(topic string) int64 {
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return -1
		}
		var s int64
		ends.Each(func(o kadm.ListedOffset) { s += o.Offset })
		return s
	}
	for {
		owning := 0
		for _, p := range procs {
			if partitionsOwned(p.waitAddr(ctx, t)) > 0 {
				owning++
			}
		}
		results, requests := sum(d.prefix+"results"), sum(d.prefix+"requests")
		if owning == len(procs) && results > 0 && requests >= 0 && requests < int64(n) {
			return
		}
		if requests >= int64(n) {
			t.Fatalf("the load finished (%d records) before the pipeline was mid-stream (results %d, %d of %d instances owning partitions)",
				requests, results, owning, len(procs))
		}
		select {
		case <-ctx.Done():
			t.Fatal("never mid-stream")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// partitionsOwned counts the partitions a process's stages own, from its
// admin server's /status.json (0 when it cannot tell).
func partitionsOwned(addr string) int {
	resp, err := http.Get("http://" + addr + "/status.json")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var st struct {
		Stages []struct {
			Partitions []json.RawMessage `json:"partitions"`
		} `json:"stages"`
	}
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return 0
	}
	n := 0
	for _, s := range st.Stages {
		n += len(s.Partitions)
	}
	return n
}

// memory is how much of the machine a process took: its resident set,
// sampled every 500 ms from /proc/<pid>/status while it runs (Linux; where
// there is no /proc nothing is sampled and samples stays 0). VmHWM is the
// kernel's own peak of the resident set, so a spike between two samples is
// not missed.
type memory struct {
	rss     atomic.Int64 // the largest VmRSS sampled, bytes
	hwm     atomic.Int64 // the last VmHWM read, bytes
	samples atomic.Int64
}

func (m *memory) sample(pid int, exited <-chan struct{}) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		m.read(pid)
		select {
		case <-exited:
			return
		case <-tick.C:
		}
	}
}

func (m *memory) read(pid int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return
	}
	var rss, hwm int64
	for _, line := range strings.Split(string(b), "\n") {
		var kb int64
		if _, err := fmt.Sscanf(line, "VmRSS: %d kB", &kb); err == nil {
			rss = kb << 10
		} else if _, err := fmt.Sscanf(line, "VmHWM: %d kB", &kb); err == nil {
			hwm = kb << 10
		}
	}
	if rss == 0 { // a zombie: the process is gone
		return
	}
	m.samples.Add(1)
	if rss > m.rss.Load() {
		m.rss.Store(rss)
	}
	if hwm > m.hwm.Load() {
		m.hwm.Store(hwm)
	}
}

// peak is the largest resident set seen, in bytes.
func (m *memory) peak() int64 { return max(m.rss.Load(), m.hwm.Load()) }

const mib = 1 << 20

// checkProcs fails the test for a process of d that exited on its own
// (launch's cleanup names it too, with its log) or whose resident set went
// above bound at any time, and records each instance's peak in tr's
// figures (the largest over its restarts).
func (d *deployment) checkProcs(t *testing.T, tr *testReport, bound int64) {
	t.Helper()
	peaks := map[string]int64{}
	for _, p := range d.procs {
		if !p.alive() && !p.ended.Load() {
			t.Errorf("%s exited on its own: %v", p.name, p.err)
		}
		if p.mem.samples.Load() == 0 {
			continue // no /proc here
		}
		peaks[p.name] = max(peaks[p.name], p.mem.peak())
		if pk := p.mem.peak(); pk > bound {
			t.Errorf("%s: resident set peaked at %.0f MiB, above the bound of %d MiB", p.name, float64(pk)/mib, bound/mib)
		}
	}
	for name, pk := range peaks {
		tr.figure("rss_peak_mib."+name, math.Round(float64(pk)/mib))
	}
}
