package suite

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/config"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/topics"
)

// modelSpec is the simulated model and how infer batches for it.
type modelSpec struct {
	Fixed, PerItem time.Duration
	Spin           bool
	MaxBatch       int
	MaxWait        time.Duration // 0: greedy
	Objective      time.Duration // 0: none
}

// runSpec is one run: a fresh deployment (topics, processes) of the
// pipeline or of the raw chain, one load, and the measurements.
type runSpec struct {
	label      string // for progress lines: "S2 capacity · candidate rep 1/3 probe 2"
	config     string
	rep, probe int
	raw        int    // >0: the raw chain with this many hops, not the pipeline
	bin        string // the binary of the stages and hops ("": the benchmark's own)
	model      modelSpec
	infers     int // infer processes (0: 1)
	partitions int
	sched      *Schedule // open-loop load; or
	preload    int       // requests produced before the processes start
	warmup     float64   // seconds of the schedule left out of the latency figures
	sample     bool      // every process's counters every second (the series)
	bins       bool      // 100 ms bins of goodput and p99 (overload)
	objective  float64   // seconds, for in-SLO fractions and goodput
	hops       bool      // read the topics back for each hop's mean time (RunResult.Hops)
}

// RunResult is what one run measured.
type RunResult struct {
	Config     string    `json:"config"`
	Rep        int       `json:"rep"`
	Probe      int       `json:"probe,omitempty"`
	Schedule   *Schedule `json:"schedule,omitempty"`
	Preload    int       `json:"preload,omitempty"`
	Offered    Num       `json:"offered_rps"`
	Requests   int       `json:"requests"`
	Duplicates int       `json:"duplicates,omitempty"`
	// FreedDuplicates are the duplicates whose key's first request was
	// answered REJECTED: admission frees a rejected key for the client's
	// retry, so such a duplicate is decided afresh (inferred, or REJECTED
	// again), not answered DUPLICATE.
	FreedDuplicates int            `json:"freed_duplicates,omitempty"`
	Answered        int            `json:"answered"`
	Repeats         int            `json:"repeats"`
	Unrequested     int            `json:"unrequested"`
	Complete        bool           `json:"complete"`
	Statuses        map[string]int `json:"statuses"`
	// Misses: why requests were not answered SUCCEEDED within L (pipeline
	// runs only).
	Misses *Misses `json:"misses,omitempty"`
	// Latency: created_at (when the request was sent) to the first result a
	// read_committed reader sees, of the requests after the warm-up.
	Latency Latency       `json:"latency"`
	Phases  []PhaseResult `json:"phases,omitempty"`
	// Throughput: preloaded runs, results/s from the 10% to the 90% result
	// (the steady drain, without start-up and tail); open loop, results
	// over the span from the first arrival to the last result.
	Throughput     Num          `json:"throughput_rps"`
	ThroughputSpan Num          `json:"throughput_span_rps,omitempty"`
	Procs          []ProcResult `json:"procs"`
	Broker         *ProcResult  `json:"broker,omitempty"`
	// Harness: the benchmark's own process (generator and reader) during
	// the load.
	Harness *ProcResult  `json:"harness,omitempty"`
	Model   *ModelResult `json:"model,omitempty"`
	Series  []Second     `json:"series,omitempty"`
	Bins    []Bin        `json:"bins,omitempty"`
	// Hops: each hop's mean time (ms) from the records' timestamps, and
	// infer's wait for the model and call (hopTimes), when the run asked.
	Hops map[string]Num `json:"hop_mean_ms,omitempty"`
	// HopsP99: each hop's p99 (ms; whole-millisecond timestamps, so ±1),
	// when the run asked.
	HopsP99   map[string]Num `json:"hop_p99_ms,omitempty"`
	GenLagP99 Num            `json:"generator_lag_p99_ms"`
	GenLagMax Num            `json:"generator_lag_max_ms"`
	LoadAvg   [2]Num         `json:"load_avg"`
	Started   time.Time      `json:"started"`
	Seconds   Num            `json:"seconds"`
	Setup     Num            `json:"setup_seconds"`
	Error     string         `json:"error,omitempty"`
	lats      []float64      // ms per measured request (the oracle's hop samples)
	arrivals  []Arrival      // the schedule's, for per-bin figures
}

// Misses says where a run's requests that were not answered SUCCEEDED
// within the objective went: the first four from the stages' own counters
// over the whole run (the warm-up too), late from the reader, after the
// warm-up, as the latency figures. A probe fails S2 when more than 1% of
// its requests miss: this tells a pipeline that shed (dedup), a batcher
// that dropped early, and hops or calls that were slow (late) apart.
type Misses struct {
	// DedupExpired: EXPIRED by dedup: the deadline (or created_at + L)
	// passed before dedup read the request, or less was left than an idle
	// model needs (admission).
	DedupExpired int `json:"dedup_expired"`
	// Rejected: REJECTED by dedup's admission (overloaded).
	Rejected int `json:"rejected"`
	// EarlyDrops: EXPIRED by infer's early drop (deadline_unreachable).
	EarlyDrops int `json:"early_drops"`
	// InferExpired: infer's other EXPIRED answers: the objective passed
	// while queued, or a call cut at its last deadline.
	InferExpired int `json:"infer_expired"`
	// Late: SUCCEEDED, but visible to the reader later than L.
	Late int `json:"late"`
}

// ProcResult is one process's cost over a run.
type ProcResult struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	// CPU: user+system seconds, from /proc; per request: over the run's
	// requests.
	CPUSeconds       Num `json:"cpu_s"`
	CPUMicrosPerReq  Num `json:"cpu_us_per_request"`
	AllocsPerRequest Num `json:"allocs_per_request,omitempty"`
	PeakRSSMB        Num `json:"peak_rss_mb"`
	PeakHeapMB       Num `json:"peak_heap_mb,omitempty"`
}

// ModelResult is what infer's metrics say of the model calls.
type ModelResult struct {
	Calls      float64 `json:"calls"`
	Items      float64 `json:"items"`
	MeanBatch  Num     `json:"mean_batch"`
	MeanCallMs Num     `json:"mean_call_ms"`
}

// PhaseResult is one phase of a schedule.
type PhaseResult struct {
	Name      string  `json:"name"`
	Offered   Num     `json:"offered_rps"`
	Latency   Latency `json:"latency"`
	MeanBatch Num     `json:"mean_batch"`
	// Statuses counts the phase's requests (those created in it, after the
	// warm-up) by their answer.
	Statuses map[string]int `json:"statuses,omitempty"`
}

// Second is one second of a sampled run.
type Second struct {
	T      float64        `json:"t"`
	HeapMB map[string]Num `json:"heap_mb"`
	RSSMB  map[string]Num `json:"rss_mb"`
	Batch  Num            `json:"mean_batch"`
	P99    Num            `json:"p99_ms"` // of the requests created in the second
}

// Bin is 100 ms of an overload run.
type Bin struct {
	T       float64 `json:"t"`
	Goodput Num     `json:"goodput_rps"` // results SUCCEEDED within the objective that became visible in the bin, per second
	P99     Num     `json:"p99_ms"`      // of the requests created in the bin
}

// member is one process of a deployment.
type member struct {
	name, role string // role: dedup, infer, emit, hop
	args       []string
	p          *proc
	c0, c1     counters
	samples    []counters
	peakRSS    float64
}

// pipelineYAML is the configuration every process of a pipeline
// deployment reads. The candidate sets no max_wait and no batching policy
// of its own: it is whatever the pipeline does by default for a model with
// a latency objective (greedy today; the adaptive batcher once it is the
// default), so the same harness measures before and after.
func (e *env) pipelineYAML(prefix string, partitions int, m modelSpec) string {
	var b strings.Builder
	fmt.Fprintf(&b, `kafka: {brokers: [%s]}
registry: {url: %q}
topics: {prefix: %q, partitions: %d, replication_factor: %d}
log_level: warn
admin_addr: 127.0.0.1:0
runner: {producer_linger: 0s}
models:
  - name: sim
    max_batch_items: %d
`, strings.Join(e.brokers, ", "), e.registry, prefix, partitions, e.rf, m.MaxBatch)
	if m.MaxWait > 0 {
		fmt.Fprintf(&b, "    max_wait: %s\n", m.MaxWait)
	}
	if m.Objective > 0 {
		fmt.Fprintf(&b, "    latency_objective: %s\n", m.Objective)
	}
	fmt.Fprintf(&b, "    sim: {fixed: %s, per_item: %s, spin: %t}\n", m.Fixed, m.PerItem, m.Spin)
	return b.String()
}

// run deploys, loads, measures and tears down one run.
func (e *env) run(ctx context.Context, rs runSpec) (*RunResult, error) {
	e.seq++
	prefix := fmt.Sprintf("bench.%s.%d.", e.tag, e.seq)
	tag := fmt.Sprintf("r%s-%d-", e.tag, e.seq)
	r := &RunResult{Config: rs.config, Rep: rs.rep, Probe: rs.probe, Schedule: rs.sched, Preload: rs.preload,
		Started: time.Now(), Statuses: map[string]int{}}
	r.LoadAvg[0] = Num(loadAvg())

	// Topics and the processes to start.
	var in, out string
	var names, groups []string
	var members []*member
	var chain hopChain
	if rs.raw > 0 {
		for h := 0; h <= rs.raw; h++ {
			names = append(names, fmt.Sprintf("%sraw.%d", prefix, h))
			chain.points = append(chain.points, []string{names[h]})
			if h > 0 {
				chain.names = append(chain.names, fmt.Sprintf("hop%d", h))
			}
		}
		resp, err := e.adm.CreateTopics(ctx, int32(rs.partitions), e.rf, nil, names...)
		if err == nil {
			err = resp.Error()
		}
		if err == nil {
			err = topics.WaitTopics(ctx, e.adm, names...)
		}
		if err != nil {
			return nil, fmt.Errorf("raw chain topics: %w", err)
		}
		in, out = names[0], names[rs.raw]
		for h := 1; h <= rs.raw; h++ {
			g := fmt.Sprintf("%shop%d", prefix, h)
			groups = append(groups, g)
			members = append(members, &member{name: fmt.Sprintf("hop%d", h), role: "hop", args: []string{"bench", "hop",
				"--brokers", strings.Join(e.brokers, ","), "--from", names[h-1], "--to", names[h], "--group", g,
				"--instance-id", fmt.Sprintf("hop%d", h), "--admin-addr", "127.0.0.1:0"}})
		}
	} else {
		text := e.pipelineYAML(prefix, rs.partitions, rs.model)
		cfg, err := config.Parse([]byte(text))
		if err != nil {
			return nil, fmt.Errorf("configuration: %w\n%s", err, text)
		}
		file := filepath.Join(e.work, strings.TrimSuffix(prefix, ".")+".yaml")
		if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
			return nil, err
		}
		g, err := cfg.Graph()
		if err != nil {
			return nil, err
		}
		if err := topics.CreateTopics(ctx, e.adm, g, cfg.Layout(), e.rf); err != nil {
			return nil, err
		}
		for _, s := range g.Specs(cfg.Layout()) {
			names = append(names, s.Name)
		}
		groups = g.Groups()
		in, out = g.Topics.Requests, g.Topics.Results
		var lanes []string
		for _, l := range g.Lanes {
			lanes = append(lanes, l.Topic)
		}
		chain = hopChain{points: [][]string{{in}, lanes, {g.Topics.Outcomes}, {out}},
			names: []string{"dedup", "infer", "emit"}, outcomes: g.Topics.Outcomes}
		add := func(stage, id string) {
			members = append(members, &member{name: id, role: stage, args: []string{"run", "--config", file,
				"--stages", stage, "--instance-id", id, "--admin-addr", "127.0.0.1:0", "--log-level", "warn"}})
		}
		add("dedup", "dedup-0")
		for i := range max(1, rs.infers) {
			add("infer", fmt.Sprintf("infer-%d", i))
		}
		add("emit", "emit-0")
	}
	defer func() {
		if e.opt.KeepTopics {
			fmt.Fprintf(e.opt.Progress, "  (kept the run's topics and groups: prefix %s)\n", prefix)
			return
		}
		if err := e.deleteTopics(context.WithoutCancel(ctx), names, groups); err != nil {
			fmt.Fprintf(e.opt.Progress, "  (cleaning up %s: %v)\n", prefix, err)
		}
	}()

	codec, err := schemas.NewCodec(ctx, e.reg, map[string]schemas.Kind{in: schemas.KindRequest})
	if err != nil {
		return nil, fmt.Errorf("schema registry: %w", err)
	}
	pcl, err := kgo.NewClient(append(slices.Clone(e.kopts), kgo.ProducerLinger(0),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))...)
	if err != nil {
		return nil, err
	}
	defer pcl.Close()
	gen := &generator{cl: pcl, codec: codec, topic: in, tag: tag, model: "sim"}

	var arrivals []Arrival
	n := rs.preload
	if rs.sched != nil {
		arrivals = rs.sched.Arrivals()
		n = len(arrivals)
		r.Offered = Num(rs.sched.Offered())
	}
	r.arrivals = arrivals
	r.Requests = n
	for _, a := range arrivals {
		if a.DupOf >= 0 {
			r.Duplicates++
		}
	}
	rd, err := newReader(e.kopts, out, tag, n)
	if err != nil {
		return nil, err
	}
	rctx, stopReader := context.WithCancel(ctx)
	readerDone := make(chan struct{})
	go func() { rd.run(rctx); close(readerDone) }()
	defer func() { stopReader(); <-readerDone }()
	select {
	case <-rd.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if rs.preload > 0 {
		if err := gen.preload(ctx, rs.preload); err != nil {
			return nil, fmt.Errorf("preload: %w", err)
		}
	}

	// The processes: started together; each one's counters read as soon as
	// its admin server answers (before it has joined its group, so before
	// it has consumed anything), then every one ready.
	bin := e.opt.Bin
	if rs.bin != "" {
		bin = rs.bin
	}
	for _, m := range members {
		m.p, err = startProc(m.name, bin, m.args...)
		if err != nil {
			return nil, err
		}
	}
	defer func() {
		// A member stopped while its group rebalances waits in JoinGroup
		// for the others (static members do not leave), up to the
		// rebalance timeout: let the groups settle first.
		e.waitStable(context.WithoutCancel(ctx), groups, 10*time.Second)
		var wg sync.WaitGroup
		for _, m := range members {
			wg.Go(func() {
				if err := m.p.stop(15 * time.Second); err != nil {
					fmt.Fprintf(e.opt.Progress, "  (%v)\n", err)
				}
			})
		}
		wg.Wait()
	}()
	// Each process's counters are read the moment its admin server
	// answers: before it has joined its group, so before it consumed
	// anything (in parallel: a process read late could have started).
	var wg sync.WaitGroup
	errs := make([]error, len(members))
	for i, m := range members {
		wg.Go(func() {
			admin, err := m.p.waitAdmin(ctx, 60*time.Second)
			if err != nil {
				errs[i] = err
				return
			}
			m.c0 = read(ctx, m.p.pid(), admin)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	broker0 := read(ctx, e.brokerPID, "")
	self0 := cpuSeconds(os.Getpid())
	for _, m := range members {
		if err := m.p.waitReady(ctx, 90*time.Second); err != nil {
			return nil, err
		}
	}
	r.Setup = Num(time.Since(r.Started).Seconds())

	// The load.
	start := time.Now().Add(100 * time.Millisecond)
	if rs.preload > 0 {
		start = r.Started
	}
	var sched []int64
	if rs.sched != nil {
		sched = make([]int64, n)
		for i, a := range arrivals {
			sched[i] = start.Add(time.Duration(a.At * float64(time.Second))).UnixNano()
		}
	}
	genErr := make(chan error, 1)
	var sent []int64
	if rs.sched != nil {
		go func() {
			var err error
			sent, err = gen.run(ctx, arrivals, start)
			genErr <- err
		}()
	} else {
		genErr <- nil
	}
	died := make(chan *member, len(members))
	for _, m := range members {
		go func() {
			select {
			case <-m.p.done:
				died <- m
			case <-readerDone:
			}
		}()
	}
	// Peak RSS of every process, from /proc every 100 ms (a backlog's peak
	// lasts less than the once-a-second series would see).
	peakStop := make(chan struct{})
	peakDone := make(chan struct{})
	peaks := make([]float64, len(members)+1) // the broker last
	go func() {
		defer close(peakDone)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			for i, m := range members {
				peaks[i] = math.Max(peaks[i], rssBytes(m.p.pid()))
			}
			peaks[len(members)] = math.Max(peaks[len(members)], rssBytes(e.brokerPID))
			select {
			case <-peakStop:
				return
			case <-t.C:
			}
		}
	}()
	var sampleMu sync.Mutex
	sampleStop := make(chan struct{})
	sampleDone := make(chan struct{})
	var brokerSamples []counters
	go func() {
		defer close(sampleDone)
		if !rs.sample {
			return
		}
		for k := 1; ; k++ {
			select {
			case <-sampleStop:
				return
			case <-time.After(time.Until(start.Add(time.Duration(k) * time.Second))):
			}
			for _, m := range members {
				c := read(ctx, m.p.pid(), m.p.admin)
				sampleMu.Lock()
				m.samples = append(m.samples, c)
				sampleMu.Unlock()
			}
			bc := read(ctx, e.brokerPID, "")
			sampleMu.Lock()
			brokerSamples = append(brokerSamples, bc)
			sampleMu.Unlock()
		}
	}()

	stall := 30 * time.Second
	if e.opt.Quick {
		stall = 20 * time.Second
	}
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	lastPrint, lastCount, lastMove := time.Now(), 0, time.Now()
	generating := true
	total := 0.0
	if rs.sched != nil {
		total = rs.sched.Seconds()
	}
wait:
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case m := <-died:
			return nil, m.p.exited()
		case err := <-genErr:
			generating = false
			lastMove = time.Now()
			if err != nil {
				return nil, fmt.Errorf("load: %w", err)
			}
		case now := <-poll.C:
			count, _ := rd.answered()
			if count != lastCount {
				lastMove = now
			}
			if count >= n && !generating {
				break wait
			}
			if !generating && now.Sub(lastMove) > stall {
				r.Error = fmt.Sprintf("no result for %v: %d of %d answered", stall, count, n)
				break wait
			}
			if now.Sub(lastPrint) >= time.Second {
				elapsed := now.Sub(start).Seconds()
				line := fmt.Sprintf("%s · %.0f", rs.label, elapsed)
				if total > 0 {
					line += fmt.Sprintf("/%.0f s · offered %.0f/s", total, rs.sched.Offered())
				} else {
					line += fmt.Sprintf(" s · %d preloaded", n)
				}
				line += fmt.Sprintf(" · answered %d (%.0f/s)", count, float64(count-lastCount)/now.Sub(lastPrint).Seconds())
				if sched != nil {
					line += fmt.Sprintf(" · p99 so far %.1f ms", rd.liveP99(sched, now))
				}
				fmt.Fprintln(e.opt.Progress, line)
				lastPrint, lastCount = now, count
			}
		}
	}
	close(sampleStop)
	<-sampleDone
	close(peakStop)
	<-peakDone
	for i, m := range members {
		m.peakRSS = peaks[i]
	}
	brokerPeak := peaks[len(members)]
	for _, m := range members {
		m.c1 = read(ctx, m.p.pid(), m.p.admin)
	}
	broker1 := read(ctx, e.brokerPID, "")
	self1 := cpuSeconds(os.Getpid())
	r.Harness = &ProcResult{Name: "harness", PID: os.Getpid(), CPUSeconds: Num(self1 - self0),
		CPUMicrosPerReq: Num((self1 - self0) * 1e6 / float64(max(1, n))), AllocsPerRequest: Num(nan),
		PeakRSSMB: Num(rssBytes(os.Getpid()) / 1e6), PeakHeapMB: Num(nan)}
	r.LoadAvg[1] = Num(loadAvg())
	stopReader()
	<-readerDone
	r.analyze(rs, members, rd, sched, sent, start, broker0, broker1, brokerSamples, brokerPeak)
	if rs.hops && r.Error == "" {
		if r.Hops, r.HopsP99, err = e.hopTimes(ctx, chain); err != nil {
			return nil, err
		}
	}
	r.Seconds = Num(time.Since(r.Started).Seconds())
	return r, nil
}

// analyze turns what the run collected into its figures.
func (r *RunResult) analyze(rs runSpec, members []*member, rd *reader, sched, sent []int64, start time.Time,
	broker0, broker1 counters, brokerSamples []counters, brokerPeak float64) {
	n := r.Requests
	r.Answered, r.Repeats, r.Unrequested = rd.count, rd.repeats, rd.unrequested
	r.Complete = rd.count >= n && r.Error == ""
	for i := range n {
		if st := rd.status[i]; st != stNone {
			r.Statuses[statusNames[st]]++
		}
	}
	ok := func(i int) bool { return rd.status[i] == stSucceeded || rd.status[i] == stForwarded }
	for _, a := range r.arrivals {
		if a.DupOf >= 0 && a.DupOf < n && rd.status[a.DupOf] == stRejected {
			r.FreedDuplicates++
		}
	}

	// Latency of each request: +Inf without an answer, or with any answer
	// but a result (EXPIRED, REJECTED, FAILED): a request answered "too
	// late" is a miss however fast the answer (reference §1.1: drops count
	// as misses), or shedding everything would look fast.
	latOf := func(i int) float64 {
		if rd.seen[i] == 0 || !ok(i) || sent[i] == 0 {
			return math.Inf(1)
		}
		return float64(rd.seen[i]-sent[i]) / 1e6
	}
	var lags []float64
	for i, s := range sent {
		if s != 0 {
			lags = append(lags, float64(s-sched[i])/1e6)
		}
	}
	if sched != nil {
		var lat []float64
		inSLO := 0
		for i, a := range r.arrivals {
			if a.At < rs.warmup {
				continue
			}
			l := latOf(i)
			lat = append(lat, l)
			if l <= rs.objective*1000 {
				inSLO++
			}
		}
		r.lats = slices.Clone(lat)
		r.Latency = summarize(lat)
		if rs.objective > 0 && len(lat) > 0 {
			r.Latency.InSLO = Num(float64(inSLO) / float64(len(lat)))
		}
	}

	// Throughput. A preloaded backlog drains faster than the reader's
	// fetches are fine-grained (tens of thousands of results a fetch), so
	// its rate comes from the results' record timestamps (when the last hop
	// produced each, ms precision), between the 10% and the 90% result:
	// the steady drain, without the start-up and the tail.
	vis := make([]int64, 0, n)
	for _, s := range rd.seen {
		if s != 0 {
			vis = append(vis, s)
		}
	}
	slices.Sort(vis)
	r.Throughput, r.ThroughputSpan = Num(nan), Num(nan)
	if len(vis) >= 10 {
		if rs.preload > 0 {
			ts := make([]int64, 0, n)
			for i, s := range rd.seen {
				if s != 0 {
					ts = append(ts, rd.produced[i])
				}
			}
			slices.Sort(ts)
			a, b := ts[len(ts)/10], ts[len(ts)*9/10]
			if b > a {
				r.Throughput = Num(float64(len(ts)*9/10-len(ts)/10) / (float64(b-a) / 1e9))
			}
			if span := float64(ts[len(ts)-1]-ts[0]) / 1e9; span > 0 {
				r.ThroughputSpan = Num(float64(len(ts)) / span)
			}
		} else if span := float64(vis[len(vis)-1]-start.UnixNano()) / 1e9; span > 0 {
			r.Throughput = Num(float64(len(vis)) / span)
		}
	}

	// Processes.
	var calls, items, secs float64
	var miss Misses
	delta := func(a, b float64) int {
		if math.IsNaN(a) || math.IsNaN(b) {
			return 0
		}
		return int(math.Round(b - a))
	}
	for _, m := range members {
		switch m.role {
		case "dedup":
			miss.DedupExpired += delta(m.c0.expired, m.c1.expired)
			miss.Rejected += delta(m.c0.rejected, m.c1.rejected)
		case "infer":
			drops := delta(m.c0.earlyDrops, m.c1.earlyDrops)
			miss.EarlyDrops += drops
			miss.InferExpired += int(math.Round(m.c1.statuses["EXPIRED"]-m.c0.statuses["EXPIRED"])) - drops
		}
		pr := ProcResult{Name: m.name, PID: m.p.pid(), CPUSeconds: Num(m.c1.cpu - m.c0.cpu),
			AllocsPerRequest: Num(nan), PeakRSSMB: Num(math.Max(m.peakRSS, math.Max(m.c0.rss, m.c1.rss)) / 1e6), PeakHeapMB: Num(nan)}
		// Per request: per record the process consumed between the two
		// reads. The first read races the process's first fetch (it is
		// taken when its admin server answers, and consuming starts soon
		// after): what it consumed before is left out of both sides.
		per := float64(max(1, n))
		if d := m.c1.consumed - m.c0.consumed; d > 0 {
			per = d
		}
		pr.CPUMicrosPerReq = Num(float64(pr.CPUSeconds) * 1e6 / per)
		if !math.IsNaN(m.c0.mallocs) && !math.IsNaN(m.c1.mallocs) {
			pr.AllocsPerRequest = Num((m.c1.mallocs - m.c0.mallocs) / per)
		}
		heap := math.Max(m.c0.heap, m.c1.heap)
		for _, s := range m.samples {
			pr.PeakRSSMB = Num(math.Max(float64(pr.PeakRSSMB), s.rss/1e6))
			heap = math.Max(heap, s.heap)
		}
		if !math.IsNaN(heap) {
			pr.PeakHeapMB = Num(heap / 1e6)
		}
		r.Procs = append(r.Procs, pr)
		if m.role == "infer" && !math.IsNaN(m.c1.calls) && !math.IsNaN(m.c0.calls) {
			calls += m.c1.calls - m.c0.calls
			items += m.c1.items - m.c0.items
			secs += m.c1.callSeconds - m.c0.callSeconds
		}
	}
	if !math.IsNaN(broker0.cpu) && !math.IsNaN(broker1.cpu) {
		b := &ProcResult{Name: "broker", CPUSeconds: Num(broker1.cpu - broker0.cpu), AllocsPerRequest: Num(nan),
			PeakRSSMB: Num(math.Max(brokerPeak, math.Max(broker0.rss, broker1.rss)) / 1e6), PeakHeapMB: Num(nan)}
		for _, s := range brokerSamples {
			b.PeakRSSMB = Num(math.Max(float64(b.PeakRSSMB), s.rss/1e6))
		}
		b.CPUMicrosPerReq = Num(float64(b.CPUSeconds) * 1e6 / float64(max(1, n)))
		r.Broker = b
	}
	if rs.raw == 0 {
		if sched != nil {
			for i, a := range r.arrivals {
				if a.At >= rs.warmup && rd.status[i] == stSucceeded && latOf(i) > rs.objective*1000 {
					miss.Late++
				}
			}
		}
		r.Misses = &miss
		r.Model = &ModelResult{Calls: calls, Items: items, MeanBatch: Num(nan), MeanCallMs: Num(nan)}
		if calls > 0 {
			r.Model.MeanBatch = Num(items / calls)
			r.Model.MeanCallMs = Num(secs / calls * 1000)
		}
	}
	if len(lags) > 0 {
		sort.Float64s(lags)
		r.GenLagP99, r.GenLagMax = Num(percentile(lags, 0.99)), Num(lags[len(lags)-1])
	} else {
		r.GenLagP99, r.GenLagMax = Num(nan), Num(nan)
	}

	if sched == nil {
		return
	}
	// Per second: memory of every process, the mean batch, the p99 of the
	// requests created in the second.
	created := func(from, to float64) []float64 {
		var l []float64
		for i, a := range r.arrivals {
			if a.At >= from && a.At < to {
				l = append(l, latOf(i))
			}
		}
		return l
	}
	inSLO := func(from, to float64) Num {
		n, good := 0, 0
		for i, a := range r.arrivals {
			if a.At >= from && a.At < to {
				n++
				if latOf(i) <= rs.objective*1000 {
					good++
				}
			}
		}
		if n == 0 || rs.objective == 0 {
			return Num(nan)
		}
		return Num(float64(good) / float64(n))
	}
	inferAt := func(k int) (c, it float64) { // k: sample index, -1: the run's start
		for _, m := range members {
			if m.role != "infer" {
				continue
			}
			s := m.c0
			if k >= 0 && k < len(m.samples) {
				s = m.samples[k]
			} else if k >= len(m.samples) {
				s = m.c1
			}
			c += s.calls
			it += s.items
		}
		return c, it
	}
	if rs.sample && len(members) > 0 {
		for k := range len(members[0].samples) {
			s := Second{T: float64(k + 1), HeapMB: map[string]Num{}, RSSMB: map[string]Num{}, Batch: Num(nan)}
			for _, m := range members {
				if k < len(m.samples) {
					s.HeapMB[m.name] = Num(m.samples[k].heap / 1e6)
					s.RSSMB[m.name] = Num(m.samples[k].rss / 1e6)
				}
			}
			if k < len(brokerSamples) && !math.IsNaN(brokerSamples[k].rss) {
				s.RSSMB["broker"] = Num(brokerSamples[k].rss / 1e6)
			}
			c0, i0 := inferAt(k - 1)
			c1, i1 := inferAt(k)
			if c1 > c0 {
				s.Batch = Num((i1 - i0) / (c1 - c0))
			}
			l := created(float64(k), float64(k+1))
			if len(l) > 0 {
				s.P99 = summarize(l).P99
			} else {
				s.P99 = Num(nan)
			}
			r.Series = append(r.Series, s)
		}
	}
	// Per phase.
	for i, p := range rs.sched.Phases {
		from := rs.sched.PhaseStart(i)
		l := created(math.Max(from, rs.warmup), from+p.Seconds)
		pr := PhaseResult{Name: p.Name, Offered: Num(p.mean()), Latency: summarize(l), MeanBatch: Num(nan)}
		pr.Latency.InSLO = inSLO(math.Max(from, rs.warmup), from+p.Seconds)
		pr.Statuses = map[string]int{}
		for j, a := range r.arrivals {
			if a.At >= math.Max(from, rs.warmup) && a.At < from+p.Seconds && j < len(rd.status) && rd.status[j] != stNone {
				pr.Statuses[statusNames[rd.status[j]]]++
			}
		}
		if rs.sample {
			c0, i0 := inferAt(int(math.Round(from)) - 1)
			c1, i1 := inferAt(int(math.Round(from+p.Seconds)) - 1)
			if c1 > c0 {
				pr.MeanBatch = Num((i1 - i0) / (c1 - c0))
			}
		}
		r.Phases = append(r.Phases, pr)
	}
	// 100 ms bins.
	if rs.bins {
		end := rs.sched.Seconds()
		if len(vis) > 0 {
			end = math.Max(end, float64(vis[len(vis)-1]-start.UnixNano())/1e9)
		}
		nb := int(math.Ceil(end * 10))
		good := make([]float64, nb+1)
		byBin := make([][]float64, nb+1)
		for i, a := range r.arrivals {
			l := latOf(i)
			byBin[min(nb, int(a.At*10))] = append(byBin[min(nb, int(a.At*10))], l)
			if l <= rs.objective*1000 {
				b := int(float64(rd.seen[i]-start.UnixNano()) / 1e8)
				if b >= 0 && b <= nb {
					good[b]++
				}
			}
		}
		for b := range nb {
			bin := Bin{T: float64(b) / 10, Goodput: Num(good[b] * 10), P99: Num(nan)}
			if len(byBin[b]) > 0 {
				bin.P99 = summarize(byBin[b]).P99
			}
			r.Bins = append(r.Bins, bin)
		}
	}
}

// duplicatesAnswered says whether every duplicate was answered DUPLICATE,
// but for those admission freed (their key's request REJECTED), which may
// be answered otherwise.
func (r *RunResult) duplicatesAnswered() bool {
	d := r.Statuses["DUPLICATE"]
	return d <= r.Duplicates && d >= r.Duplicates-r.FreedDuplicates
}

// check says what is wrong with a run's own counts: the harness's
// invariants, not performance.
func (r *RunResult) check() error {
	var errs []error
	if !r.Complete {
		errs = append(errs, fmt.Errorf("%w: %d of %d (%s)", errIncomplete, r.Answered, r.Requests, r.Error))
	}
	if r.Unrequested > 0 {
		errs = append(errs, fmt.Errorf("%d results for requests this run did not send", r.Unrequested))
	}
	sum := 0
	for _, c := range r.Statuses {
		sum += c
	}
	if sum != r.Answered {
		errs = append(errs, fmt.Errorf("statuses add up to %d, answered %d", sum, r.Answered))
	}
	if r.Model != nil && r.Model.Items < float64(r.Statuses["SUCCEEDED"]) {
		errs = append(errs, fmt.Errorf("%d SUCCEEDED with %.0f model items", r.Statuses["SUCCEEDED"], r.Model.Items))
	}
	if !r.duplicatesAnswered() && r.Complete {
		errs = append(errs, fmt.Errorf("%d answered DUPLICATE, %d duplicates sent (%d of them after their key's request was REJECTED)",
			r.Statuses["DUPLICATE"], r.Duplicates, r.FreedDuplicates))
	}
	// Every EXPIRED and REJECTED answer is one a stage counted (a record
	// processed twice after a rebalance counts twice, so not equal): the
	// misses table explains every miss, or it says nothing.
	if m := r.Misses; m != nil && r.Complete {
		if e := m.DedupExpired + m.EarlyDrops + m.InferExpired; e < r.Statuses["EXPIRED"] {
			errs = append(errs, fmt.Errorf("%d answered EXPIRED, the stages counted %d (dedup %d, early drops %d, infer %d)",
				r.Statuses["EXPIRED"], e, m.DedupExpired, m.EarlyDrops, m.InferExpired))
		}
		if m.Rejected < r.Statuses["REJECTED"] {
			errs = append(errs, fmt.Errorf("%d answered REJECTED, dedup counted %d", r.Statuses["REJECTED"], m.Rejected))
		}
	}
	return errors.Join(errs...)
}

// String is the misses as the probe table prints them: dedup expired /
// rejected / early drops / infer expired / late; "n/a" without them (the
// raw chain).
func (m *Misses) String() string {
	if m == nil {
		return "n/a"
	}
	n := func(v int) string {
		if v < 1000 && v > -1000 {
			return strconv.Itoa(v) // fmtNum would print 0.00
		}
		return fmtNum(float64(v))
	}
	return fmt.Sprintf("%s / %s / %s / %s / %s", n(m.DedupExpired), n(m.Rejected), n(m.EarlyDrops), n(m.InferExpired), n(m.Late))
}
