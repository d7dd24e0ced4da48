// Command oip measures a model behind an Open Inference Protocol v2 server
// through asyncinfer's own OIP backend (connectors/oip), three ways, against
// the MLServer of deploy/mlserver:
//
//	batched   asyncinfer's batching: requests queue, and -workers workers
//	          each take whatever is queued (up to -max-batch) into one call,
//	          as the infer stage's greedy batcher does, to model "iris"
//	single    one request per call, -concurrency calls at once, to "iris"
//	adaptive  one request per call, -concurrency calls at once, to
//	          "iris-adaptive": MLServer's own adaptive batching
//	          (max_batch_size, max_batch_time in its model-settings.json)
//
// Each mode is a closed loop of -concurrency requests outstanding for
// -duration; a request's latency runs from its submission (its entry in the
// queue, for batched) to its answer. Modes are interleaved per run, and the
// table reports medians of -runs runs: requests per second, p50 and p99 of
// latency, calls per second, items per call, and CPU time per request of
// this client and of the MLServer process.
//
// First it fits the model's cost t(b) = a + c·b by least squares over the
// median times of sequential calls of b = 1 … 4096 rows (one request of b
// rows each, so the fit is the server's cost of a call, not asyncinfer's
// batching).
//
// Every answer is checked against scikit-learn's prediction for its input
// (predictions.json of deploy/mlserver), so a fast wrong answer cannot pass.
//
//	url=$(make -s mlserver)
//	go run ./bench/oip -url "$url"
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/asyncinfer/asyncinfer/connectors/oip"
	"github.com/asyncinfer/asyncinfer/schemas"
)

var (
	url         = flag.String("url", "http://127.0.0.1:8080", "MLServer's REST URL")
	predictions = flag.String("predictions", "", "deploy/mlserver's predictions.json (default: from the cache)")
	pidFile     = flag.String("server-pid", "", "MLServer's pid file, for its CPU time (default: the cache's mlserver-run)")
	runs        = flag.Int("runs", 3, "runs per mode (medians reported)")
	duration    = flag.Duration("duration", 5*time.Second, "length of each run")
	concurrency = flag.Int("concurrency", 64, "requests outstanding (closed loop)")
	maxBatch    = flag.Int("max-batch", 64, "batched: most requests per call")
	workers     = flag.Int("workers", 2, "batched: workers (calls at once)")
	modes       = flag.String("modes", "batched,single,adaptive", "modes to run")
	fitCalls    = flag.Int("fit-calls", 40, "calls per batch size for the a + c·b fit (0: no fit)")
)

type fixed struct {
	Inputs  [][]float64 `json:"inputs"`
	Predict []int64     `json:"predict"`
}

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/oip:", err)
		os.Exit(1)
	}
}

func cacheDir() string {
	if d := os.Getenv("ASYNCINFER_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "asyncinfer")
	}
	h, _ := os.UserHomeDir()
	return filepath.Join(h, ".cache", "asyncinfer")
}

func run() error {
	if *predictions == "" {
		*predictions = filepath.Join(cacheDir(), "mlserver-1.7.1", "models", "iris", "predictions.json")
	}
	if *pidFile == "" {
		*pidFile = filepath.Join(cacheDir(), "mlserver-run", "mlserver.pid")
	}
	b, err := os.ReadFile(*predictions)
	if err != nil {
		return err
	}
	var fx fixed
	if err := json.Unmarshal(b, &fx); err != nil {
		return err
	}
	pid := 0
	if p, err := os.ReadFile(*pidFile); err == nil {
		pid, _ = strconv.Atoi(strings.TrimSpace(string(p)))
	}
	ctx := context.Background()
	models := map[string]*oip.Model{}
	for _, name := range []string{"iris", "iris-adaptive"} {
		m, err := oip.New(*url, name, oip.MaxConnections(max(*concurrency, *workers)))
		if err != nil {
			return err
		}
		if err := m.Check(ctx); err != nil {
			return err
		}
		models[name] = m
	}
	host, _ := os.Hostname()
	fmt.Printf("# bench/oip %s, %s, %d CPUs (GOMAXPROCS %d), server %s (pid %d)\n",
		time.Now().UTC().Format(time.RFC3339), host, numCPU(), runtimeProcs(), *url, pid)
	if *fitCalls > 0 {
		if err := fit(ctx, models["iris"], fx); err != nil {
			return err
		}
	}
	res := map[string][]result{}
	ms := strings.Split(*modes, ",")
	for r := range *runs {
		for _, mode := range ms {
			x, err := measure(ctx, mode, models, fx, pid)
			if err != nil {
				return err
			}
			x.Run = r + 1
			line, _ := json.Marshal(x)
			fmt.Println(string(line))
			res[mode] = append(res[mode], x)
		}
	}
	fmt.Printf("\nmedians of %d runs of %v, %d requests outstanding; batched: %d workers, up to %d per call\n\n",
		*runs, *duration, *concurrency, *workers, *maxBatch)
	fmt.Println("| mode | requests/s | p50 ms | p99 ms | calls/s | items/call | client CPU µs/req | MLServer CPU µs/req |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, mode := range ms {
		rs := res[mode]
		med := func(f func(result) float64) float64 {
			v := make([]float64, len(rs))
			for i, r := range rs {
				v[i] = f(r)
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		fmt.Printf("| %s | %.0f | %.2f | %.2f | %.0f | %.1f | %.0f | %.0f |\n", mode,
			med(func(r result) float64 { return r.Throughput }), med(func(r result) float64 { return r.P50 }),
			med(func(r result) float64 { return r.P99 }), med(func(r result) float64 { return r.CallsPerSec }),
			med(func(r result) float64 { return r.ItemsPerCall }), med(func(r result) float64 { return r.ClientCPU }),
			med(func(r result) float64 { return r.ServerCPU }))
	}
	return nil
}

// request is row k of the fixed inputs, as one request of one row.
func request(fx fixed, k int, id int64) *schemas.Request {
	return &schemas.Request{RequestID: strconv.FormatInt(id, 10), Model: "iris",
		Inputs: []schemas.Tensor{{Name: "input-0", Datatype: "FP64", Shape: []int64{1, 4}, FP64: fx.Inputs[k]}}}
}

// check compares an answer with scikit-learn's class for row k.
func check(out []schemas.Tensor, fx fixed, k int) error {
	if len(out) != 1 || len(out[0].Int64) != 1 || out[0].Int64[0] != fx.Predict[k] {
		return fmt.Errorf("row %d: answer %+v, scikit-learn says %d", k, out, fx.Predict[k])
	}
	return nil
}

// fit times sequential calls of one request of b rows and fits a + c·b.
func fit(ctx context.Context, m *oip.Model, fx fixed) error {
	rng := rand.New(rand.NewPCG(7, 7))
	var xs, ys []float64
	fmt.Println("\n| rows per call b | median ms | p90 ms |\n|---|---|---|")
	for _, n := range []int{1, 4, 16, 64, 256, 1024, 4096} {
		rows := make([]int, n)
		data := make([]float64, 0, 4*n)
		for i := range rows {
			rows[i] = rng.IntN(len(fx.Inputs))
			data = append(data, fx.Inputs[rows[i]]...)
		}
		req := &schemas.Request{RequestID: "fit", Model: "iris",
			Inputs: []schemas.Tensor{{Name: "input-0", Datatype: "FP64", Shape: []int64{int64(n), 4}, FP64: data}}}
		var ts []float64
		for i := range *fitCalls + 5 {
			start := time.Now()
			out, err := m.Infer(ctx, []*schemas.Request{req})
			d := time.Since(start)
			if err != nil {
				return err
			}
			for r, k := range rows {
				if out[0][0].Int64[r] != fx.Predict[k] {
					return fmt.Errorf("fit: row %d: class %d, scikit-learn says %d", k, out[0][0].Int64[r], fx.Predict[k])
				}
			}
			if i >= 5 { // warm-up
				ts = append(ts, float64(d)/1e6)
			}
		}
		slices.Sort(ts)
		fmt.Printf("| %d | %.3f | %.3f |\n", n, ts[len(ts)/2], ts[len(ts)*9/10])
		// The medians, not every call: a machine shared with other work
		// adds spikes that would swamp a per-row cost of microseconds.
		xs, ys = append(xs, float64(n)), append(ys, ts[len(ts)/2])
	}
	a, c, r2 := leastSquares(xs, ys)
	fmt.Printf("\nfit over the medians of %d sizes: t(b) = a + c·b, a = %.3f ms, c = %.4f ms per row (%.2f µs), R² = %.3f\n\n", len(xs), a, c, c*1000, r2)
	return nil
}

func leastSquares(xs, ys []float64) (a, c, r2 float64) {
	n := float64(len(xs))
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	c = (n*sxy - sx*sy) / (n*sxx - sx*sx)
	a = (sy - c*sx) / n
	mean := sy / n
	var ssRes, ssTot float64
	for i := range xs {
		e := ys[i] - (a + c*xs[i])
		ssRes += e * e
		ssTot += (ys[i] - mean) * (ys[i] - mean)
	}
	return a, c, 1 - ssRes/ssTot
}

type result struct {
	Mode         string  `json:"mode"`
	Run          int     `json:"run"`
	Requests     int64   `json:"requests"`
	Calls        int64   `json:"calls"`
	Throughput   float64 `json:"requests_per_s"`
	CallsPerSec  float64 `json:"calls_per_s"`
	ItemsPerCall float64 `json:"items_per_call"`
	P50          float64 `json:"p50_ms"`
	P99          float64 `json:"p99_ms"`
	ClientCPU    float64 `json:"client_cpu_us_per_request"`
	ServerCPU    float64 `json:"server_cpu_us_per_request"`
}

type pending struct {
	req   *schemas.Request
	row   int
	start time.Time
	done  chan error
}

// measure runs one mode for -duration.
func measure(ctx context.Context, mode string, models map[string]*oip.Model, fx fixed, pid int) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, *duration)
	defer cancel()
	var (
		calls, items atomic.Int64
		mu           sync.Mutex
		lat          []float64
		firstErr     error
		id           atomic.Int64
		wg           sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
		cancel()
	}
	call := func(m *oip.Model, ps []*pending) {
		reqs := make([]*schemas.Request, len(ps))
		for i, p := range ps {
			reqs[i] = p.req
		}
		calls.Add(1)
		outs, err := m.Infer(context.WithoutCancel(ctx), reqs)
		for i, p := range ps {
			e := err
			if e == nil {
				e = check(outs[i], fx, p.row)
			}
			p.done <- e
		}
	}
	// The workers serve the queue until every client has its last answer:
	// a client that queued a request just as the run ended still gets it.
	queue := make(chan *pending, *concurrency)
	var workersDone sync.WaitGroup
	if mode == "batched" {
		for range *workers {
			workersDone.Add(1)
			go func() {
				defer workersDone.Done()
				for p := range queue {
					b := []*pending{p}
				more: // greedy: whatever else is queued, up to the limit
					for len(b) < *maxBatch {
						select {
						case p, ok := <-queue:
							if !ok {
								break more
							}
							b = append(b, p)
						default:
							break more
						}
					}
					call(models["iris"], b)
				}
			}()
		}
	}
	var target *oip.Model
	switch mode {
	case "batched":
	case "single":
		target = models["iris"]
	case "adaptive":
		target = models["iris-adaptive"]
	default:
		return result{}, fmt.Errorf("mode %q: want batched, single or adaptive", mode)
	}
	cpu0, srv0 := selfCPU(), procCPU(pid)
	begin := time.Now()
	for c := range *concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 1))
			for ctx.Err() == nil {
				k := rng.IntN(len(fx.Inputs))
				p := &pending{req: request(fx, k, id.Add(1)), row: k, start: time.Now(), done: make(chan error, 1)}
				if target != nil {
					go call(target, []*pending{p})
				} else {
					select {
					case queue <- p:
					case <-ctx.Done():
						return
					}
				}
				if err := <-p.done; err != nil {
					fail(fmt.Errorf("%s: %w", mode, err))
					return
				}
				d := float64(time.Since(p.start)) / 1e6
				items.Add(1)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(queue)
	workersDone.Wait()
	elapsed := time.Since(begin)
	cpu, srv := selfCPU()-cpu0, procCPU(pid)-srv0
	if firstErr != nil {
		return result{}, firstErr
	}
	slices.Sort(lat)
	n := int64(len(lat))
	q := func(p float64) float64 { return lat[min(len(lat)-1, int(math.Ceil(p*float64(len(lat))))-1)] }
	return result{Mode: mode, Requests: n, Calls: calls.Load(), Throughput: float64(n) / elapsed.Seconds(),
		CallsPerSec: float64(calls.Load()) / elapsed.Seconds(), ItemsPerCall: float64(items.Load()) / float64(calls.Load()),
		P50: q(0.50), P99: q(0.99), ClientCPU: float64(cpu.Microseconds()) / float64(n),
		ServerCPU: float64(srv.Microseconds()) / float64(n)}, nil
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is a process's user+system CPU time from /proc (0 if unknown).
func procCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ 100
}
