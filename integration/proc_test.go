package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
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
	config string // the YAML file every process of it reads
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
	Results             struct {
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
	name   string
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan error
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
	p := &proc{name: instance, stderr: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(env.bin, "run", "--config", d.config, "--stages", stage, "--instance-id", instance,
		"--admin-addr", "127.0.0.1:0", "--log-level", "info")
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	d.t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			<-p.done
		}
		if d.t.Failed() {
			d.t.Logf("%s stderr:\n%s", instance, p.stderr.String())
		}
	})
	addr := p.waitAddr(ctx, d.t)
	for ready(addr) != nil {
		select {
		case err := <-p.done:
			d.t.Fatalf("%s exited before ready: %v\n%s", instance, err, p.stderr.String())
		case <-ctx.Done():
			d.t.Fatalf("%s not ready:\n%s", instance, p.stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return p
}

var adminRE = regexp.MustCompile(`admin http://([^/]+)/`)

func (p *proc) waitAddr(ctx context.Context, t *testing.T) string {
	t.Helper()
	for {
		if m := adminRE.FindStringSubmatch(p.stderr.String()); m != nil {
			return m[1]
		}
		select {
		case err := <-p.done:
			t.Fatalf("%s exited: %v\n%s", p.name, err, p.stderr.String())
		case <-ctx.Done():
			t.Fatalf("%s printed no admin address:\n%s", p.name, p.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM and waits: the process drains (finishes and commits
// what it holds) and exits 0.
func (p *proc) stop(t *testing.T, within time.Duration) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("%s after SIGTERM: %v\n%s", p.name, err, p.stderr.String())
		}
	case <-time.After(within):
		t.Fatalf("%s did not drain within %v after SIGTERM:\n%s", p.name, within, p.stderr.String())
	}
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
