package stack

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/connectors/sim"
	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/stages/infer"
	"github.com/asyncinfer/asyncinfer/topics"
)

// The conformance suite: what every stage of the graph must do on the
// runtime, checked for each one the same way (Benthos' integration
// definitions and goka's tester are the examples). A new stage gets a row in
// subjects and passes the same cases.

// subject is one stage under test: how to write valid input for it, which
// topic holds its answers, and whether it keeps state.
type subject struct {
	stage  string
	output string // where its answer to valid input goes
	// input is a valid input record for the stage, i-th of a run.
	input func(t *testing.T, e *kafkatest.Env, i int) *kgo.Record
	// clientSchema is a valid input written with a schema id the stage's
	// codec must look up in the registry.
	clientSchema func(t *testing.T, e *kafkatest.Env, i int) *kgo.Record
}

func subjects(e *kafkatest.Env) []subject {
	request := func(topic string) func(t *testing.T, e *kafkatest.Env, i int) *kgo.Record {
		return func(t *testing.T, e *kafkatest.Env, i int) *kgo.Record {
			r := kafkatest.Request(fmt.Sprintf("r%d", i), "", "m")
			v, err := e.Codec.EncodeRequest(topic, r)
			if err != nil {
				t.Fatal(err)
			}
			return &kgo.Record{Topic: topic, Key: []byte(r.Key()), Value: v}
		}
	}
	clientRequest := func(topic string) func(t *testing.T, e *kafkatest.Env, i int) *kgo.Record {
		return func(t *testing.T, e *kafkatest.Env, i int) *kgo.Record {
			r := kafkatest.Request(fmt.Sprintf("r%d", i), "", "m")
			return &kgo.Record{Topic: topic, Key: []byte(r.Key()), Value: e.ClientSchemaRequest(t, r)}
		}
	}
	outcome := func(t *testing.T, e *kafkatest.Env, i int) *kgo.Record {
		r := &schemas.Result{RequestID: fmt.Sprintf("r%d", i), Status: schemas.StatusSucceeded, Model: "m"}
		v, err := e.Codec.EncodeResult(e.Topics.Outcomes, r)
		if err != nil {
			t.Fatal(err)
		}
		return &kgo.Record{Topic: e.Topics.Outcomes, Key: []byte(r.RequestID), Value: v}
	}
	return []subject{
		{stage: topics.Dedup, output: e.Topics.Accepted, input: request(e.Topics.Requests), clientSchema: clientRequest(e.Topics.Requests)},
		{stage: topics.Infer, output: e.Topics.Outcomes, input: request(e.Topics.Accepted), clientSchema: clientRequest(e.Topics.Accepted)},
		{stage: topics.Emit, output: e.Topics.Results, input: outcome},
	}
}

// member is one stage's runner, running.
type member struct {
	set  *Set
	r    *pipeline.Runner
	done chan struct{} // closed when Run returned
	err  error
	stop context.CancelFunc
}

// wait is Run's error (after stop, or a failure).
func (m *member) wait() error { <-m.done; return m.err }

// exited reports whether Run returned.
func (m *member) exited() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

func startStage(t *testing.T, e *kafkatest.Env, stage string, model infer.Model, o Options) *member {
	t.Helper()
	if model == nil {
		var err error
		if model, err = sim.New(sim.Config{}); err != nil {
			t.Fatal(err)
		}
	}
	o.Conn = []kgo.Opt{kgo.SeedBrokers(e.Brokers...)}
	o.Graph = e.Graph
	if o.Models == nil {
		o.Models = []infer.ModelConfig{{Name: "m", Backend: model}}
	}
	set, err := Build(o, e.Codec, []string{stage})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{set: set, r: set.Runners[0], done: make(chan struct{}), stop: cancel}
	go func() { m.err = set.Run(ctx); close(m.done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-m.done:
		case <-time.After(time.Minute):
			t.Errorf("%s did not stop", stage)
		}
	})
	return m
}

func produce(t *testing.T, e *kafkatest.Env, rs ...*kgo.Record) {
	t.Helper()
	if err := e.Client(t).ProduceSync(kafkatest.Ctx(t), rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// committed adds up the group's committed offsets on topic (0 before the
// group exists).
func committed(t *testing.T, e *kafkatest.Env, group, topic string) int64 {
	offs, err := e.Admin.FetchOffsets(kafkatest.Ctx(t), group)
	if err != nil {
		return 0
	}
	var n int64
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic && o.Err == nil {
			n += o.At
		}
	})
	return n
}

// Undecodable input goes to the dead letters, with its reason and source in
// the headers, nothing else is produced for it, and its offset is committed:
// the partition does not stall on it.
func TestConformanceMalformedToDeadLetters(t *testing.T) {
	for _, sj := range subjects(kafkatest.New(t, 1)) {
		t.Run(sj.stage, func(t *testing.T) {
			e := kafkatest.New(t, 1)
			st := e.Stage(t, sj.stage)
			produce(t, e, &kgo.Record{Topic: st.Input, Key: []byte("k"), Value: []byte("\x00\x00\x00\x00\x01garbage")}, sj.input(t, e, 0))
			m := startStage(t, e, sj.stage, nil, Options{})
			kafkatest.Eventually(t, "both inputs committed", func() bool { return committed(t, e, st.Group, st.Input) == 2 })
			dl := e.ReadCommitted(t, e.Topics.DLQ)
			if len(dl) != 1 {
				t.Fatalf("%d dead letters, want 1", len(dl))
			}
			want := map[string]string{pipeline.HeaderReason: pipeline.ReasonUndecodable, pipeline.HeaderStage: sj.stage,
				pipeline.HeaderSourceTopic: st.Input, pipeline.HeaderSourcePartition: "0", pipeline.HeaderSourceOffset: "0"}
			for k, v := range want {
				if got, ok := pipeline.Header(dl[0].Headers, k); !ok || string(got) != v {
					t.Errorf("dead letter header %s = %q, want %q", k, got, v)
				}
			}
			if n := len(e.ReadCommitted(t, sj.output)); n != 1 {
				t.Errorf("%s holds %d records, want only the valid input's answer", sj.output, n)
			}
			if n := testutil.ToFloat64(m.r.Metrics().Undecodable.WithLabelValues(sj.stage)); n != 1 {
				t.Errorf("undecodable counted %v, want 1", n)
			}
		})
	}
}

// The committed offset never passes a record whose effects are not durable:
// with the broker holding the stage's output, nothing is committed; once it
// lets go, everything is.
func TestConformanceNoCommitPastUnfinished(t *testing.T) {
	for _, sj := range subjects(kafkatest.New(t, 1)) {
		t.Run(sj.stage, func(t *testing.T) {
			e := kafkatest.New(t, 1)
			st := e.Stage(t, sj.stage)
			const n = 5
			for i := range n {
				produce(t, e, sj.input(t, e, i))
			}
			release := e.GateProduce(t, sj.output)
			m := startStage(t, e, sj.stage, nil, Options{})
			kafkatest.Eventually(t, "every input handed to the stage", func() bool {
				return testutil.ToFloat64(m.r.Metrics().Consumed.WithLabelValues(sj.stage)) == n
			})
			// The commit loop runs every 200ms: a commit that passed an
			// unfinished record would show within a few of its rounds. The
			// produce of the first output is held, so nothing may be.
			for range 5 {
				if c := committed(t, e, st.Group, st.Input); c != 0 {
					t.Fatalf("committed %d with the outputs held by the broker", c)
				}
				time.Sleep(200 * time.Millisecond)
			}
			release()
			kafkatest.Eventually(t, "committed after the outputs", func() bool { return committed(t, e, st.Group, st.Input) == n })
		})
	}
}

// A stage whose partition has state is not handed a record before the
// partition's state is restored: a decision on half a window would accept
// a duplicate.
func TestConformanceRestoreBeforeFirstRecord(t *testing.T) {
	for _, sj := range subjects(kafkatest.New(t, 1)) {
		e := kafkatest.New(t, 1)
		st := e.Stage(t, sj.stage)
		if st.Changelog == nil {
			continue
		}
		t.Run(sj.stage, func(t *testing.T) {
			produce(t, e, sj.input(t, e, 0))
			release := e.GateListOffsets(t, st.Changelog.Topic)
			m := startStage(t, e, sj.stage, nil, Options{})
			kafkatest.Eventually(t, "assigned and restoring", func() bool {
				s := m.r.Status()
				return len(s.Partitions) == 1 && s.Partitions[0].Restoring
			})
			if c := testutil.ToFloat64(m.r.Metrics().Consumed.WithLabelValues(sj.stage)); c != 0 {
				t.Fatalf("%v records handed out while the state restores", c)
			}
			release()
			kafkatest.Eventually(t, "the record handled after the restore", func() bool {
				return testutil.ToFloat64(m.r.Metrics().Consumed.WithLabelValues(sj.stage)) == 1
			})
		})
	}
}

// A registry that cannot be reached does not stop a stage, nor dead-letter
// good input: the partition waits at the record that needs the registry
// (paused, rewound, retried with backoff; readiness says why), and goes on
// when the registry is back. In exactly-once mode the outage outlasts the
// transaction timeout: units without the held record commit meanwhile.
// Records whose schema id the registry does not know are dead-lettered once
// it answers.
func TestConformanceRegistryOutage(t *testing.T) {
	for _, eos := range []bool{false, true} {
		for _, sj := range subjects(kafkatest.New(t, 1)) {
			if sj.clientSchema == nil {
				continue // emit reads what the pipeline wrote: ids it registered
			}
			name := sj.stage + "/at-least-once"
			if eos {
				name = sj.stage + "/exactly-once"
			}
			t.Run(name, func(t *testing.T) {
				e := kafkatest.New(t, 1)
				st := e.Stage(t, sj.stage)
				up := e.RegistryDown(t)
				unknown := func(i int) *kgo.Record {
					rec := sj.input(t, e, i)
					v := append([]byte(nil), rec.Value...)
					v[1], v[2], v[3], v[4] = 0, 0, 0x27, 0x0f // schema id 9999
					rec.Value = v
					return rec
				}
				produce(t, e, sj.input(t, e, 0), sj.clientSchema(t, e, 1), sj.input(t, e, 2), unknown(3), sj.input(t, e, 4))
				m := startStage(t, e, sj.stage, nil, Options{ExactlyOnce: eos, InstanceID: "c0", TxnTimeout: 300 * time.Millisecond})
				kafkatest.Eventually(t, "the first record answered, the partition held at the second", func() bool {
					return len(e.ReadCommitted(t, sj.output)) == 1 && m.r.Status().Waiting != ""
				})
				// The held partition is the input's (infer's other lanes
				// are empty and flow).
				if s := m.r.Status(); s.Ready || !slices.ContainsFunc(s.Partitions, func(p pipeline.PartitionStatus) bool {
					return p.Topic == st.Input && contains(p.PausedBy, pipeline.PauseRegistry)
				}) {
					t.Errorf("while the registry is down: %+v, want not ready, paused by %s", s, pipeline.PauseRegistry)
				}
				kafkatest.Eventually(t, "committed up to the held record", func() bool { return committed(t, e, st.Group, st.Input) == 1 })
				if eos {
					// Longer than the transaction timeout: the stage rides
					// it out without aborting what it holds.
					time.Sleep(3 * 300 * time.Millisecond)
				}
				if m.exited() {
					t.Fatalf("the stage stopped during the outage: %v", m.wait())
				}
				if c := committed(t, e, st.Group, st.Input); c != 1 {
					t.Errorf("committed %d during the outage, want 1 (up to the held record)", c)
				}
				up()
				kafkatest.Eventually(t, "everything after the held record handled", func() bool {
					return committed(t, e, st.Group, st.Input) == 5
				})
				if n := len(e.ReadCommitted(t, sj.output)); n != 4 {
					t.Errorf("%s holds %d answers, want 4 (the unknown schema id is dead-lettered)", sj.output, n)
				}
				dl := e.ReadCommitted(t, e.Topics.DLQ)
				if len(dl) != 1 {
					for _, r := range dl {
						off, _ := pipeline.Header(r.Headers, pipeline.HeaderSourceOffset)
						reason, _ := pipeline.Header(r.Headers, pipeline.HeaderReason)
						t.Logf("dead letter of offset %s: %s", off, reason)
					}
					t.Fatalf("%d dead letters, want 1 (the unknown schema id)", len(dl))
				}
				if off, _ := pipeline.Header(dl[0].Headers, pipeline.HeaderSourceOffset); string(off) != "3" {
					t.Errorf("dead letter of offset %s, want 3", off)
				}
				if !m.r.Status().Ready {
					t.Errorf("not ready after the outage: %+v", m.r.Status())
				}
			})
		}
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// failing is a processor that fails at one offset and holds another
// unfinished forever: the runner must stop at once, hand nothing more out,
// and not wait its drain for work nobody will finish.
type failing struct {
	failAt, holdAt int64
	seen           atomic.Int64
}

func (f *failing) Process(c *pipeline.Context, _ []byte) {
	f.seen.Add(1)
	switch c.Record().Offset {
	case f.holdAt:
		// never finished
	case f.failAt:
		c.Fail(fmt.Errorf("injected failure at %d", f.failAt))
	default:
		c.Finish()
	}
}

// A stage that fails stops promptly: the rest of its poll is not handed
// out, and Run returns without waiting the drain (an hour here) for work
// that was abandoned.
func TestConformanceFailStopsPromptly(t *testing.T) {
	for _, eos := range []bool{false, true} {
		t.Run(strconv.FormatBool(eos), func(t *testing.T) {
			e := kafkatest.New(t, 1)
			for i := range 8 {
				e.ProduceRaw(t, e.Topics.Accepted, nil, []byte{byte(i)})
			}
			f := &failing{failAt: 3, holdAt: 1}
			st := e.Stage(t, topics.Infer)
			opts := []pipeline.Option{pipeline.DrainTimeout(time.Hour)}
			if eos {
				opts = append(opts, pipeline.ExactlyOnce(5*time.Minute), pipeline.InstanceID("f0"))
			}
			r, err := pipeline.New(st, pipeline.Raw, f, e.Opts(opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- r.Run(context.Background()) }()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "injected failure") {
					t.Fatalf("Run returned %v, want the injected failure", err)
				}
			case <-kafkatest.Ctx(t).Done():
				t.Fatal("Run did not return after the failure: it waits for abandoned work")
			}
			if n := f.seen.Load(); n != 4 {
				t.Errorf("%d records handed out, want 4 (hand-out stops at the failure)", n)
			}
			if c := committed(t, e, st.Group, st.Input); c > 1 {
				t.Errorf("committed %d: past the record held unfinished", c)
			}
		})
	}
}

// blocking is a model that holds every call until released, and counts the
// requests it was called for.
type blocking struct {
	release chan struct{}
	mu      sync.Mutex
	calls   map[string]int
}

func (b *blocking) Infer(ctx context.Context, batch []*schemas.Request) ([][]schemas.Tensor, error) {
	select {
	case <-b.release:
	case <-ctx.Done():
		return nil, pipeline.Transient(ctx.Err())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([][]schemas.Tensor, len(batch))
	for i, r := range batch {
		b.calls[r.RequestID]++
		out[i] = []schemas.Tensor{{Name: "y", Datatype: "FP64", Shape: []int64{1}, FP64: []float64{1}}}
	}
	return out, nil
}

// Work that goes stale produces nothing and takes no model time: infer's
// partition is revoked (a second member joins) while its requests wait for
// the model; the call is cancelled, and each request is answered once, by
// the member that owns it now.
func TestConformanceStaleWorkProducesNothing(t *testing.T) {
	// One lane: the second member must get one of the two partitions the
	// requests are on.
	e := kafkatest.NewGraph(t, 2, topics.GraphOptions{Lanes: []topics.Lane{{Name: "normal"}}})
	pcl := e.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	const n = 20
	for i := range n {
		r := kafkatest.Request(fmt.Sprintf("r%d", i), "", "m")
		v, err := e.Codec.EncodeRequest(e.Topics.Accepted, r)
		if err != nil {
			t.Fatal(err)
		}
		if err := pcl.ProduceSync(kafkatest.Ctx(t), &kgo.Record{Topic: e.Topics.Accepted, Partition: int32(i % 2), Key: []byte(r.RequestID), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	first := &blocking{release: make(chan struct{}), calls: map[string]int{}}
	// One request per call: the call in flight holds one partition's
	// request, the rest wait in the queue.
	a := startStage(t, e, topics.Infer, nil, Options{InstanceID: "a",
		Models: []infer.ModelConfig{{Name: "m", Backend: first, MaxBatchItems: 1}},
		Runner: []pipeline.Option{pipeline.DrainTimeout(200 * time.Millisecond), pipeline.SessionTimeout(6 * time.Second)}})
	kafkatest.Eventually(t, "every request queued on the first member", func() bool {
		return testutil.ToFloat64(a.r.Metrics().Consumed.WithLabelValues(topics.Infer)) == n
	})
	second, err := sim.New(sim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	b := startStage(t, e, topics.Infer, second, Options{InstanceID: "b", Runner: []pipeline.Option{pipeline.SessionTimeout(6 * time.Second)}})
	kafkatest.Eventually(t, "the second member answered its partition", func() bool { return second.Items() > 0 && len(b.r.Status().Partitions) == 1 })
	close(first.release)
	kafkatest.Eventually(t, "every request answered", func() bool { return len(e.Results(t, e.Topics.Outcomes)) == n })
	a.stop()
	if err := a.wait(); err != nil {
		t.Fatal(err)
	}
	for id, rs := range e.Results(t, e.Topics.Outcomes) {
		if len(rs) != 1 {
			t.Errorf("%s answered %d times", id, len(rs))
		}
	}
	moved := b.r.Status().Partitions[0].Partition
	first.mu.Lock()
	defer first.mu.Unlock()
	for id := range first.calls {
		i, _ := strconv.Atoi(id[1:])
		if int32(i%2) == moved {
			t.Errorf("the first member called the model for %s after its partition moved", id)
		}
	}
	if dropped := testutil.ToFloat64(a.set.Infer.Metrics().Stale.WithLabelValues("m")); dropped == 0 {
		t.Error("no stale request dropped: the revoke did not reach the queue")
	}
}

// outage is a model that fails every call transiently until up is called,
// and counts the requests of its successful calls.
type outage struct {
	down  atomic.Bool
	mu    sync.Mutex
	calls map[string]int
}

func (o *outage) Infer(_ context.Context, batch []*schemas.Request) ([][]schemas.Tensor, error) {
	if o.down.Load() {
		return nil, pipeline.Transient(fmt.Errorf("model down"))
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([][]schemas.Tensor, len(batch))
	for i, r := range batch {
		o.calls[r.RequestID]++
		out[i] = []schemas.Tensor{{Name: "y", Datatype: "FP64", Shape: []int64{1}, FP64: []float64{1}}}
	}
	return out, nil
}

// Exactly-once, a model outage much longer than the transaction timeout
// (failure 1 of the runtime issue: infer stopped with "the queue of model m
// is full although it is sized to the in-flight bound"): units abort while
// the model is down, the work they leave queued is stale and dropped, the
// circuit's pause keeps the records in Kafka, and when the model is back
// every request is answered exactly once, with no model call for stale work.
func TestInferOutageLongerThanTransactionTimeout(t *testing.T) {
	e := kafkatest.New(t, 2)
	const n = 300
	var rs []*kgo.Record
	for i := range n {
		r := kafkatest.Request(fmt.Sprintf("r%d", i), "", "m")
		v, err := e.Codec.EncodeRequest(e.Topics.Accepted, r)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, &kgo.Record{Topic: e.Topics.Accepted, Key: []byte(r.RequestID), Value: v})
	}
	model := &outage{calls: map[string]int{}}
	model.down.Store(true)
	produce(t, e, rs...)
	m := startStage(t, e, topics.Infer, model, Options{ExactlyOnce: true, InstanceID: "i0", MaxInflight: 64,
		TxnTimeout: 500 * time.Millisecond})
	kafkatest.Eventually(t, "several units aborted during the outage", func() bool {
		return testutil.ToFloat64(m.r.Metrics().Aborts.WithLabelValues(topics.Infer)) >= 4
	})
	model.down.Store(false)
	kafkatest.Eventually(t, "every request answered", func() bool { return len(e.Results(t, e.Topics.Outcomes)) == n })
	if m.exited() {
		t.Fatalf("infer stopped: %v", m.wait())
	}
	for id, got := range e.Results(t, e.Topics.Outcomes) {
		if len(got) != 1 || got[0].Status != schemas.StatusSucceeded {
			t.Errorf("%s: %d answers (%v), want one SUCCEEDED", id, len(got), got)
		}
	}
	model.mu.Lock()
	defer model.mu.Unlock()
	extra := 0
	for _, c := range model.calls {
		extra += c - 1
	}
	// A unit can still abort after the outage (a slow machine); its
	// requests are then called again. Stale work from the outage must not
	// be: that would be hundreds of calls, one per request queued then.
	if extra > 64 {
		t.Errorf("%d model items beyond one per request: stale work was sent to the model", extra)
	}
}
