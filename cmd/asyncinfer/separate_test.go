package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/pipeline"
)

// syncBuffer is a bytes.Buffer safe for a command writing while the test
// reads.
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

// command runs one asyncinfer command to the end.
func command(t *testing.T, ctx context.Context, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	root := newRoot()
	root.SetArgs(args)
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errb)
	err = root.ExecuteContext(ctx)
	return out.String(), errb.String(), err
}

// The README's walk-through, in one test: a shared dev broker, each stage in
// a run of its own (as separate processes would be) with an instance id and
// an admin server on a free port, requests from produce, answers from
// results; every stage reports ready; topics check finds the layout sound and
// then a broken topic.
func TestStagesAsSeparateRunsOnADevBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	e, err := startEmbedded(embeddedConfig{dataDir: dir, persist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	conn := []string{"--brokers", e.brokers()[0], "--registry", e.url, "--partitions", "3", "--log-level", "warn",
		"--reply-topics", "app.replies"}

	if _, _, err := command(t, ctx, "", append([]string{"topics", "create"}, conn...)...); err != nil {
		t.Fatal(err)
	}
	if out, _, err := command(t, ctx, "", append([]string{"topics", "check"}, conn...)...); err != nil ||
		!strings.Contains(out, "app.replies ") {
		t.Fatalf("topics check on fresh topics (the reply topic included): %v\n%s", err, out)
	}

	runCtx, stopRuns := context.WithCancel(ctx)
	var wg sync.WaitGroup
	admins := map[string]*syncBuffer{}
	// A sim model that answers inputs' sums, from a config file, as users
	// configure models.
	cfgFile := filepath.Join(dir, "models.yaml")
	if err := os.WriteFile(cfgFile, []byte("models:\n  - name: sim\n    max_batch_items: 16\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, st := range []string{"dedup", "infer", "emit"} {
		errb := &syncBuffer{}
		admins[st] = errb
		root := newRoot()
		root.SetArgs(append([]string{"run", "--config", cfgFile, "--stages", st, "--instance-id", st + "-0",
			"--admin-addr", "127.0.0.1:0"}, conn...))
		root.SetOut(io.Discard)
		root.SetErr(errb)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := root.ExecuteContext(runCtx); err != nil {
				t.Errorf("run --stages %s: %v", st, err)
			}
		}()
	}
	defer func() { stopRuns(); wg.Wait() }()

	// Each stage's admin server says ready once assigned and restored.
	addrRE := regexp.MustCompile(`admin http://([^/]+)/`)
	for st, errb := range admins {
		var addr string
		waitFor(t, ctx, st+" admin address", func() bool {
			m := addrRE.FindStringSubmatch(errb.String())
			if m != nil {
				addr = m[1]
			}
			return m != nil
		})
		waitFor(t, ctx, st+" ready", func() bool {
			resp, err := http.Get("http://" + addr + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}

	const n = 30
	var lines strings.Builder
	for i := range n {
		fmt.Fprintf(&lines, `{"request_id":"r%d","model":"sim","inputs":[{"name":"x","datatype":"FP32","shape":[2],"data":[%d,1]}]}`+"\n", i, i)
	}
	lines.WriteString(`{"model":"sim","inputs":"not a list"}` + "\n")
	out, errOut, err := command(t, ctx, lines.String(), append([]string{"produce", "--quiet"}, conn...)...)
	if err == nil || !strings.Contains(errOut, "line 31:") {
		t.Fatalf("produce: want the bad line 31 named and an error, got err=%v stderr=%s", err, errOut)
	}
	if got := strings.Count(out, `"request_id"`); got != n {
		t.Fatalf("produce acknowledged %d requests, want %d:\n%s", got, n, out)
	}
	for i := range n {
		out, _, err := command(t, ctx, "", append([]string{"results", "--request-id", fmt.Sprintf("r%d", i), "--wait", "30s"}, conn...)...)
		if err != nil {
			t.Fatalf("results --request-id r%d: %v", i, err)
		}
		var res resultJSON
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("r%d: %v: %q", i, err, out)
		}
		if res.Status != "SUCCEEDED" || len(res.Outputs) != 1 || string(res.Outputs[0].Data) != fmt.Sprintf("[%d]", i+1) {
			t.Errorf("r%d: %+v", i, res)
		}
	}

	// A changelog re-created with another partition count breaks the
	// co-partitioning dedup relies on: check says so, naming it.
	stopRuns()
	wg.Wait()
	kcl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers()...))
	if err != nil {
		t.Fatal(err)
	}
	defer kcl.Close()
	adm := kadm.NewClient(kcl)
	state := pipeline.NewTopics("").DedupState
	if _, err := adm.DeleteTopic(ctx, state); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "deleted", func() bool {
		resp, err := adm.CreateTopic(ctx, 2, 1, nil, state)
		return err == nil && resp.Err == nil
	})
	out, _, err = command(t, ctx, "", append([]string{"topics", "check"}, conn...)...)
	if err == nil || !strings.Contains(out, "2 partitions but asyncinfer.requests has 3") {
		t.Errorf("topics check on a broken changelog: err=%v\n%s", err, out)
	}
}

func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
