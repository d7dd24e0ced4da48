package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
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
)

// The OIP backend against a real model server: MLServer 1.7.1 from PyPI
// serving a scikit-learn model trained on iris (deploy/mlserver), started by
// the suite on free ports with its own run directory, and stopped at the end.
// The model's own predictions for a fixed set of 200 inputs come with it, so
// every answer is compared with what scikit-learn said.

// mlserver is the suite's model server.
var mlserver struct {
	once    sync.Once
	err     error
	url     string
	run     string      // its run directory (settings, pid, log)
	inputs  [][]float64 // the fixed inputs
	predict []int64     // scikit-learn's class for each
	started bool
	script  string
}

// needMLServer skips without a broker, and starts MLServer the first time
// (set-up included, when make test's set-up did not run). When MLServer
// cannot be had it fails the test with the reason under
// ASYNCINFER_REQUIRE_INTEGRATION=1 (CI), and skips it with the reason
// otherwise, as the suite does without a broker.
func needMLServer(t *testing.T) {
	t.Helper()
	need(t)
	mlserver.once.Do(func() { mlserver.err = startMLServer() })
	if mlserver.err != nil {
		if os.Getenv("ASYNCINFER_REQUIRE_INTEGRATION") == "1" {
			t.Fatalf("MLServer: %v", mlserver.err)
		}
		t.Skipf("no MLServer (ASYNCINFER_REQUIRE_INTEGRATION=1 makes this a failure): %v", mlserver.err)
	}
}

func mlserverCmd(ctx context.Context, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, mlserver.script, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("mlserver.sh %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

func startMLServer() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	script, err := filepath.Abs("../deploy/mlserver/mlserver.sh")
	if err != nil {
		return err
	}
	mlserver.script = script
	dir, err := mlserverCmd(ctx, nil, "setup")
	if err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(dir, "predictions.json"))
	if err != nil {
		return err
	}
	var p struct {
		Inputs  [][]float64 `json:"inputs"`
		Predict []int64     `json:"predict"`
	}
	if err := json.Unmarshal(b, &p); err != nil || len(p.Inputs) == 0 || len(p.Inputs) != len(p.Predict) {
		return fmt.Errorf("%s/predictions.json: %w (%d inputs, %d predictions)", dir, err, len(p.Inputs), len(p.Predict))
	}
	mlserver.inputs, mlserver.predict = p.Inputs, p.Predict
	mlserver.run, err = os.MkdirTemp("", "asyncinfer-mlserver")
	if err != nil {
		return err
	}
	mlserver.url, err = mlserverCmd(ctx, []string{"ASYNCINFER_MLSERVER_RUN=" + mlserver.run,
		"ASYNCINFER_MLSERVER_HTTP_PORT=free", "ASYNCINFER_MLSERVER_GRPC_PORT=free"}, "start")
	mlserver.started = err == nil
	fmt.Printf("integration: MLServer at %s (run dir %s)\n", mlserver.url, mlserver.run)
	return err
}

// stopMLServer stops the suite's MLServer, if it started one.
func stopMLServer() {
	if mlserver.run == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := mlserverCmd(ctx, []string{"ASYNCINFER_MLSERVER_RUN=" + mlserver.run}, "stop"); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
	}
	os.RemoveAll(mlserver.run)
}

// restartMLServer starts it again on the same ports.
func restartMLServer(ctx context.Context) error {
	u, err := url.Parse(mlserver.url)
	if err != nil {
		return err
	}
	grpc, err := os.ReadFile(filepath.Join(mlserver.run, "grpc"))
	if err != nil {
		return err
	}
	_, gport, _ := strings.Cut(strings.TrimSpace(string(grpc)), ":")
	_, err = mlserverCmd(ctx, []string{"ASYNCINFER_MLSERVER_RUN=" + mlserver.run,
		"ASYNCINFER_MLSERVER_HTTP_PORT=" + u.Port(), "ASYNCINFER_MLSERVER_GRPC_PORT=" + gport}, "start")
	return err
}

// irisModel is the deployment's model: the OIP backend in front of MLServer.
func irisModel() string {
	return fmt.Sprintf(`models:
  - name: iris
    backend: oip
    max_batch_items: 32
    timeout: 5s
    oip:
      url: %s
      inputs: [{name: input-0, datatype: FP64, shape: [-1, 4]}]
`, mlserver.url)
}

// irisLine is one request line for asyncinfer produce: row k of the fixed
// inputs (or, with features set, those), with a request id that names it.
func irisLine(id string, features []float64) string {
	data, _ := json.Marshal(features)
	return fmt.Sprintf(`{"request_id":%q,"model":"iris","inputs":[{"name":"input-0","datatype":"FP64","shape":[1,%d],"data":%s}]}`,
		id, len(features), data)
}

// produceLines produces the lines with asyncinfer produce at rate (0: as
// fast as the broker acknowledges).
func (d *deployment) produceLines(ctx context.Context, t *testing.T, lines []string, rate int) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "requests.jsonl")
	if err := os.WriteFile(f, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, err := d.cli(ctx, "produce", "--file", f, "--quiet", "--rate", strconv.Itoa(rate)); err != nil {
		t.Fatalf("produce: %v\n%s%s", err, out, errOut)
	}
}

type resultLine struct {
	RequestID    string `json:"request_id"`
	Status       string `json:"status"`
	ErrorMessage string `json:"error_message"`
	BatchSize    int    `json:"batch_size"`
	Outputs      []struct {
		Name     string  `json:"name"`
		Datatype string  `json:"datatype"`
		Shape    []int64 `json:"shape"`
		Data     []int64 `json:"data"`
	} `json:"outputs"`
}

// results reads n results of the deployment with asyncinfer results.
func (d *deployment) results(ctx context.Context, t *testing.T, n int) map[string]resultLine {
	t.Helper()
	out, errOut, err := d.cli(ctx, "results", "--from", "beginning", "--count", strconv.Itoa(n), "--wait", "60s")
	if err != nil {
		t.Fatalf("results: %v\n%s", err, errOut)
	}
	res := map[string]resultLine{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r resultLine
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("result line %q: %v", sc.Text(), err)
		}
		res[r.RequestID] = r
	}
	return res
}

// checkPrediction says what is wrong with a result of fixed input row k, or "".
func checkPrediction(r resultLine, k int) string {
	want := mlserver.predict[k]
	switch {
	case r.Status != "SUCCEEDED":
		return fmt.Sprintf("%s %s", r.Status, r.ErrorMessage)
	case len(r.Outputs) != 1 || r.Outputs[0].Name != "predict" || r.Outputs[0].Datatype != "INT64" ||
		fmt.Sprint(r.Outputs[0].Shape) != "[1 1]" || len(r.Outputs[0].Data) != 1:
		return fmt.Sprintf("outputs %+v, want predict INT64 [1 1]", r.Outputs)
	case r.Outputs[0].Data[0] != want:
		return fmt.Sprintf("class %d, scikit-learn says %d", r.Outputs[0].Data[0], want)
	}
	return ""
}

// The whole pipeline, one process per stage, in front of the real MLServer:
// every fixed input, several times over, is answered with the class
// scikit-learn predicts for it; verify counts no request lost or answered
// two ways; batches of many requests were made (the concatenation along the
// first dimension and the split back, against the real server).
func TestMLServerPredictions(t *testing.T) {
	needMLServer(t)
	tr := &testReport{}
	record(t, tr)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := newDeployment(t, 4, irisModel())
	d.create(ctx, t)
	d.startAll(ctx, 0)
	const reps = 5
	var lines []string
	for rep := range reps {
		for k, in := range mlserver.inputs {
			lines = append(lines, irisLine(fmt.Sprintf("iris-%d-%d", k, rep), in))
		}
	}
	d.produceLines(ctx, t, lines, 0)
	c := d.settle(ctx, len(lines))
	tr.Requests, tr.Lost, tr.Conflicting, tr.Repeated = c.Requests, c.Lost, c.Conflicting, c.Repeated
	if c.Lost != 0 || c.Conflicting != 0 || c.Results.Succeeded != len(lines) {
		t.Errorf("lost=%d conflicting=%d succeeded=%d of %d", c.Lost, c.Conflicting, c.Results.Succeeded, len(lines))
	}
	res := d.results(ctx, t, c.Requests)
	wrong, maxBatch := 0, 0
	for rep := range reps {
		for k := range mlserver.inputs {
			id := fmt.Sprintf("iris-%d-%d", k, rep)
			r, ok := res[id]
			if !ok {
				t.Errorf("%s: no result", id)
				continue
			}
			maxBatch = max(maxBatch, r.BatchSize)
			if why := checkPrediction(r, k); why != "" {
				wrong++
				if wrong <= 10 {
					t.Errorf("%s: %s", id, why)
				}
			}
		}
	}
	if maxBatch < 2 {
		t.Errorf("largest batch %d: the test meant to send batches of many requests in one call", maxBatch)
	}
	tr.Notes = fmt.Sprintf("real MLServer 1.7.1 (sklearn iris); %d requests = %d fixed inputs x %d; outputs equal to scikit-learn's: %d of %d; largest batch %d",
		len(lines), len(mlserver.inputs), reps, len(lines)-wrong, len(lines), maxBatch)
}

// A request of the wrong shape (3 features for a model of 4) in the middle
// of good traffic: FAILED with the server's own message, every other
// request answered with scikit-learn's class.
func TestMLServerWrongShapeFailsAlone(t *testing.T) {
	needMLServer(t)
	tr := &testReport{}
	record(t, tr)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := newDeployment(t, 1, irisModel()) // one partition: the bad ones queue among the good
	d.create(ctx, t)
	d.startAll(ctx, 0)
	var lines []string
	bad := map[string]bool{}
	for k, in := range mlserver.inputs {
		lines = append(lines, irisLine(fmt.Sprintf("iris-%d", k), in))
		if k%50 == 25 {
			id := fmt.Sprintf("bad-%d", k)
			bad[id] = true
			lines = append(lines, irisLine(id, in[:3]))
		}
	}
	d.produceLines(ctx, t, lines, 0)
	c := d.settle(ctx, len(lines))
	tr.Requests, tr.Lost, tr.Conflicting, tr.Repeated = c.Requests, c.Lost, c.Conflicting, c.Repeated
	if c.Lost != 0 || c.Conflicting != 0 || c.Results.Failed != len(bad) || c.Results.Succeeded != len(lines)-len(bad) {
		t.Errorf("lost=%d conflicting=%d failed=%d succeeded=%d, want 0, 0, %d, %d",
			c.Lost, c.Conflicting, c.Results.Failed, c.Results.Succeeded, len(bad), len(lines)-len(bad))
	}
	res := d.results(ctx, t, c.Requests)
	batched := 0
	for id := range bad {
		r := res[id]
		if r.Status != "FAILED" || !strings.Contains(r.ErrorMessage, "X has 3 features, but LogisticRegression is expecting 4 features as input") {
			t.Errorf("%s: %s %q, want FAILED with scikit-learn's message", id, r.Status, r.ErrorMessage)
		}
	}
	for k := range mlserver.inputs {
		r := res[fmt.Sprintf("iris-%d", k)]
		if why := checkPrediction(r, k); why != "" {
			t.Errorf("iris-%d: %s", k, why)
		}
		if r.BatchSize > 1 {
			batched++
		}
	}
	msg := ""
	for id := range bad {
		msg = res[id].ErrorMessage
		break
	}
	tr.Notes = fmt.Sprintf("%d wrong-shape requests among %d good ones: FAILED with %q; the good ones all succeeded, %d of them in batches of more than one",
		len(bad), len(mlserver.inputs), msg, batched)
}

var metricRE = regexp.MustCompile(`(?m)^(asyncinfer_[a-z_]+)\{([^}]*)\} ([0-9.e+-]+)$`)

// metric reads a metric of an admin server: the sum over series whose
// labels contain every given label ("k=\"v\"").
func metric(addr, name string, labels ...string) (float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var sum float64
next:
	for _, m := range metricRE.FindAllStringSubmatch(string(b), -1) {
		if m[1] != name {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(m[2], l) {
				continue next
			}
		}
		v, _ := strconv.ParseFloat(m[3], 64)
		sum += v
	}
	return sum, nil
}

// waitMetric polls until cond holds for the metric, or fails the test.
func waitMetric(ctx context.Context, t *testing.T, addr, what string, cond func(float64) bool, name string, labels ...string) float64 {
	t.Helper()
	for {
		v, err := metric(addr, name, labels...)
		if err == nil && cond(v) {
			return v
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %s %v = %v (%v)", what, name, labels, v, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// MLServer is stopped while requests are in flight: calls fail with refused
// connections (transient), the breaker opens and pauses the input, nothing
// fails or is lost; when MLServer is back on the same port the backlog
// drains and every request is answered with scikit-learn's class.
func TestMLServerOutageMidStream(t *testing.T) {
	needMLServer(t)
	tr := &testReport{}
	record(t, tr)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := newDeployment(t, 4, irisModel())
	d.create(ctx, t)
	ps := d.startAll(ctx, 0)
	inferAddr := ps["infer"].waitAddr(ctx, t)

	const reps = 8 // 1,600 requests at 400/s: 4 s of traffic
	lines, loadDone := d.irisLoad(ctx, t, reps, 400)
	// Work in flight: the model has answered calls, and the load goes on.
	okBefore := waitMetric(ctx, t, inferAddr, "calls to MLServer", func(v float64) bool { return v >= 20 },
		"asyncinfer_model_calls_total", `result="ok"`)
	if err := mlserverStop(ctx); err != nil {
		t.Fatal(err)
	}
	stoppedAt := time.Now()
	waitMetric(ctx, t, inferAddr, "the breaker to open", func(v float64) bool { return v == 1 },
		"asyncinfer_circuit_open", `model="iris"`)
	opened := time.Since(stoppedAt)
	// While it is down: the input stays paused and nothing is answered,
	// least of all FAILED.
	down, _ := metric(inferAddr, "asyncinfer_infer_outcomes_total")
	time.Sleep(2 * time.Second)
	if v, _ := metric(inferAddr, "asyncinfer_infer_outcomes_total"); v != down {
		t.Errorf("outcomes went from %v to %v while MLServer was down", down, v)
	}
	if v, _ := metric(inferAddr, "asyncinfer_circuit_open", `model="iris"`); v != 1 {
		t.Errorf("the breaker closed while MLServer was down")
	}
	paused := pausedFor(t, inferAddr, "breaker:iris")
	if err := restartMLServer(ctx); err != nil {
		t.Fatal(err)
	}
	waitMetric(ctx, t, inferAddr, "the breaker to close", func(v float64) bool { return v == 0 },
		"asyncinfer_circuit_open", `model="iris"`)
	<-loadDone
	c := d.settle(ctx, len(lines))
	tr.Requests, tr.Lost, tr.Conflicting, tr.Repeated = c.Requests, c.Lost, c.Conflicting, c.Repeated
	if c.Lost != 0 || c.Conflicting != 0 || c.Results.Failed != 0 || c.Results.Expired != 0 || c.Results.Succeeded != len(lines) {
		t.Errorf("lost=%d conflicting=%d failed=%d expired=%d succeeded=%d of %d", c.Lost, c.Conflicting,
			c.Results.Failed, c.Results.Expired, c.Results.Succeeded, len(lines))
	}
	res := d.results(ctx, t, c.Requests)
	wrong := 0
	for rep := range reps {
		for k := range mlserver.inputs {
			id := fmt.Sprintf("iris-%d-%d", k, rep)
			if why := checkPrediction(res[id], k); why != "" {
				wrong++
				if wrong <= 10 {
					t.Errorf("%s: %s", id, why)
				}
			}
		}
	}
	tr.Notes = fmt.Sprintf("MLServer stopped after %.0f ok calls (load at 400/s going on), breaker open %.0f ms after the stop returned, %d partitions paused (breaker:iris), outcomes unchanged for 2 s while down; restarted on the same port: all %d answered with scikit-learn's class",
		okBefore, float64(opened.Milliseconds()), paused, len(lines))
}

func mlserverStop(ctx context.Context) error {
	_, err := mlserverCmd(ctx, []string{"ASYNCINFER_MLSERVER_RUN=" + mlserver.run}, "stop")
	return err
}

// pausedFor counts the partitions of the process's stages paused for reason.
func pausedFor(t *testing.T, addr, reason string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/status.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	n := strings.Count(string(b), `"`+reason+`"`)
	if n == 0 {
		t.Errorf("no partition paused for %s: %s", reason, b)
	}
	return n
}

// MLServer hangs (SIGSTOP: a wedged server, a frozen VM) while requests are
// in flight, with a call timeout of 30 s and a latency objective of 2 s:
// each call ends at its batch's last deadline instead of the timeout, so
// requests are answered (EXPIRED or REJECTED, none FAILED) while it hangs,
// and the circuit opens while it is still frozen (it took five timeouts,
// 150 s, before); when it thaws the circuit closes and the rest succeed
// with scikit-learn's class.
func TestMLServerHangMidStream(t *testing.T) {
	needMLServer(t)
	tr := &testReport{}
	record(t, tr)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	model := strings.Replace(irisModel(), "timeout: 5s", "timeout: 30s\n    latency_objective: 2s", 1)
	d := newDeployment(t, 4, model)
	d.create(ctx, t)
	ps := d.startAll(ctx, 0)
	inferAddr := ps["infer"].waitAddr(ctx, t)

	lines, loadDone := d.irisLoad(ctx, t, 16, 400) // 3,200 requests at 400/s: 8 s of traffic
	waitMetric(ctx, t, inferAddr, "calls to MLServer", func(v float64) bool { return v >= 20 },
		"asyncinfer_model_calls_total", `result="ok"`)
	pids := mlserverTree(t)
	signalAll(t, pids, syscall.SIGSTOP)
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			signalAll(t, pids, syscall.SIGCONT)
		}
	}
	defer thaw()
	frozenAt := time.Now()
	before, _ := metric(inferAddr, "asyncinfer_infer_outcomes_total")
	octx, ocancel := context.WithTimeout(ctx, 30*time.Second)
	waitMetric(octx, t, inferAddr, "the breaker to open while MLServer hangs (30 s: five call timeouts took 150)",
		func(v float64) bool { return v == 1 }, "asyncinfer_circuit_open", `model="iris"`)
	ocancel()
	opened := time.Since(frozenAt)
	after, _ := metric(inferAddr, "asyncinfer_infer_outcomes_total")
	if after <= before {
		t.Errorf("no request answered while MLServer hung: outcomes %v before, %v when the circuit opened", before, after)
	}
	deadlineCalls, _ := metric(inferAddr, "asyncinfer_model_calls_total", `result="deadline"`)
	if deadlineCalls == 0 {
		t.Error("no call ended at its batch's deadline")
	}
	thaw()
	waitMetric(ctx, t, inferAddr, "the breaker to close", func(v float64) bool { return v == 0 },
		"asyncinfer_circuit_open", `model="iris"`)
	<-loadDone
	c := d.settle(ctx, len(lines))
	tr.Requests, tr.Lost, tr.Conflicting, tr.Repeated = c.Requests, c.Lost, c.Conflicting, c.Repeated
	r := c.Results
	if c.Lost != 0 || c.Conflicting != 0 || r.Failed != 0 || r.Succeeded == 0 ||
		r.Succeeded+r.Expired+r.Rejected != len(lines) {
		t.Errorf("lost=%d conflicting=%d failed=%d succeeded=%d expired=%d rejected=%d of %d", c.Lost, c.Conflicting,
			r.Failed, r.Succeeded, r.Expired, r.Rejected, len(lines))
	}
	res := d.results(ctx, t, c.Requests)
	wrong := 0
	for id, line := range res {
		if line.Status != "SUCCEEDED" {
			continue
		}
		var k, rep int
		if _, err := fmt.Sscanf(id, "iris-%d-%d", &k, &rep); err != nil {
			t.Errorf("%s: not a request of this test", id)
			continue
		}
		if why := checkPrediction(line, k); why != "" {
			wrong++
			if wrong <= 10 {
				t.Errorf("%s: %s", id, why)
			}
		}
	}
	tr.Notes = fmt.Sprintf("MLServer frozen (SIGSTOP, %d processes) with load at 400/s, call timeout 30 s, objective 2 s: breaker open %.1f s later, %.0f calls ended at their batch's deadline, %.0f answers while it hung before the breaker opened; thawed: %d succeeded (classes checked), %d expired, %d rejected, failed 0, lost 0",
		len(pids), opened.Seconds(), deadlineCalls, after-before, r.Succeeded, r.Expired, r.Rejected)
}

// irisLoad is reps rounds of the fixed inputs as request lines, named
// iris-<row>-<round>, which it produces at rate in the background; done
// is closed when all are produced.
func (d *deployment) irisLoad(ctx context.Context, t *testing.T, reps, rate int) (lines []string, done chan struct{}) {
	for rep := range reps {
		for k, in := range mlserver.inputs {
			lines = append(lines, irisLine(fmt.Sprintf("iris-%d-%d", k, rep), in))
		}
	}
	done = make(chan struct{})
	go func() {
		defer close(done)
		d.produceLines(ctx, t, lines, rate)
	}()
	return lines, done
}

// mlserverTree is the pids of the suite's MLServer and its descendants
// (its parallel inference workers).
func mlserverTree(t *testing.T) []int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(mlserver.run, "mlserver.pid"))
	if err != nil {
		t.Fatal(err)
	}
	root, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	parents := map[int][]int{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		s, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces; it ends at the last ')'.
		i := strings.LastIndexByte(string(s), ')')
		fields := strings.Fields(string(s)[i+1:])
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		if len(fields) >= 2 {
			ppid, _ := strconv.Atoi(fields[1])
			parents[ppid] = append(parents[ppid], pid)
		}
	}
	pids := []int{root}
	for i := 0; i < len(pids); i++ {
		pids = append(pids, parents[pids[i]]...)
	}
	return pids
}

func signalAll(t *testing.T, pids []int, sig syscall.Signal) {
	t.Helper()
	for _, pid := range pids {
		if err := syscall.Kill(pid, sig); err != nil {
			t.Logf("signal %v to %d: %v", sig, pid, err)
		}
	}
}
