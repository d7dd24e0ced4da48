package client

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/asyncinfer/asyncinfer/connectors/sim"
	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
	"github.com/asyncinfer/asyncinfer/internal/stack"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/stages/infer"
	"github.com/asyncinfer/asyncinfer/topics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is kafkatest's cluster, with the pipeline's helpers below.
type env struct{ *kafkatest.Env }

// newEnv starts kfake and srfake with the pipeline's topics (default prefix)
// and the reply topics, all with the given partition count.
func newEnv(t *testing.T, partitions int32, replyTopics ...string) *env {
	t.Helper()
	e := kafkatest.New(t, partitions, replyTopics...)
	return &env{Env: e}
}

// run runs every stage of the real pipeline, with the simulated model
// "sim", until the end of the test.
func (e *env) run(t *testing.T, replyTopics ...string) *stack.Metrics {
	t.Helper()
	return e.runWith(t, stack.Options{}, replyTopics...)
}

// runWith is run with more options (the delivery mode, an instance id).
func (e *env) runWith(t *testing.T, o stack.Options, replyTopics ...string) *stack.Metrics {
	t.Helper()
	model, err := sim.New(sim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := stack.NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	g, err := topics.NewGraph(topics.GraphOptions{ReplyTopics: replyTopics})
	if err != nil {
		t.Fatal(err)
	}
	o.Conn = append([]kgo.Opt{kgo.SeedBrokers(e.Brokers...)}, o.Conn...)
	o.Graph = g
	o.Models = []infer.ModelConfig{{Name: "sim", Backend: model}}
	o.Metrics = m
	set, err := stack.Build(o, e.Codec, g.StageNames())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- set.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return m
}

func (e *env) client(t *testing.T, cfg Config) *Client {
	t.Helper()
	cfg.Conn = append([]kgo.Opt{kgo.SeedBrokers(e.Brokers...)}, cfg.Conn...)
	cfg.Registry = e.Registry
	c, err := New(kafkatest.Ctx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// produceResult writes a result as emit would, keyed by request id.
func (e *env) produceResult(t *testing.T, cl *kgo.Client, topic string, res *schemas.Result) {
	t.Helper()
	v, err := e.Codec.EncodeResult(topic, res)
	if err != nil {
		t.Fatal(err)
	}
	rec := &kgo.Record{Topic: topic, Key: []byte(res.RequestID), Value: v}
	if err := cl.ProduceSync(kafkatest.Ctx(t), rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// endOffsets sums the end offsets of topic.
func (e *env) endOffsets(t *testing.T, topic string) int64 {
	t.Helper()
	ends, err := e.Admin.ListEndOffsets(kafkatest.Ctx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

func request(key, model string) *schemas.Request {
	r := kafkatest.Request("", key, model)
	r.CreatedAtMs = 0 // Submit fills it
	return r
}

// waiting reports whether an Await is waiting for id.
func (c *Client) waiting(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.pending[id]
	return e != nil && e.waiters > 0
}

func (c *Client) subscribers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.subs)
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// Every request submitted through the client gets its one answer through
// Await, produced where the partitioning contract puts it.
func TestSubmitAwait(t *testing.T) {
	const partitions = 3
	e := newEnv(t, partitions)
	m := e.run(t)
	c := e.client(t, Config{})
	ctx := kafkatest.Ctx(t)

	const n = 30
	var ids []string
	keys := map[string]string{}
	for i := range n {
		key := ""
		if i%2 == 0 {
			key = fmt.Sprintf("key-%d", i)
		}
		req := request(key, "sim")
		id, err := c.Submit(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if id != req.RequestID || !uuidV4.MatchString(id) {
			t.Fatalf("Submit returned %q, request id %q: want the same random UUID", id, req.RequestID)
		}
		if req.CreatedAtMs == 0 || req.ReplyTopic != "" {
			t.Errorf("Submit filled created_at_ms=%d reply_topic=%q, want now and none", req.CreatedAtMs, req.ReplyTopic)
		}
		ids = append(ids, id)
		keys[id] = req.Key()
	}
	for _, id := range ids {
		res, err := c.Await(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if res.RequestID != id || res.Status != schemas.StatusSucceeded || len(res.Outputs) == 0 {
			t.Errorf("Await(%s) = %s %s %s outputs=%d, want SUCCEEDED with outputs", id, res.RequestID, res.Status, res.ErrorMessage, len(res.Outputs))
		}
	}
	results := e.Results(t, e.Topics.Results)
	for _, id := range ids {
		if len(results[id]) != 1 {
			t.Errorf("%s has %d results on %s, want 1", id, len(results[id]), e.Topics.Results)
		}
	}
	// The partitioning contract, as dedup checks it and as a test sees it.
	reqs := e.ReadAll(t, e.Topics.Requests)
	if len(reqs) != n {
		t.Fatalf("requests topic holds %d records, want %d", len(reqs), n)
	}
	for _, r := range reqs {
		req, err := e.Codec.DecodeRequest(ctx, r.Value)
		if err != nil {
			t.Fatal(err)
		}
		if string(r.Key) != keys[req.RequestID] {
			t.Errorf("%s keyed %q, want %q", req.RequestID, r.Key, keys[req.RequestID])
		}
		if want := pipeline.KeyPartition(r.Key, partitions); r.Partition != want {
			t.Errorf("key %q on partition %d, want %d", r.Key, r.Partition, want)
		}
	}
	if v := testutil.ToFloat64(m.Dedup.PartitionViolations); v != 0 {
		t.Errorf("dedup counted %v partitioning violations", v)
	}
}

// Each terminal status the package documentation describes reaches Await
// with the fields it names.
func TestTerminalStatuses(t *testing.T) {
	e := newEnv(t, 2)
	e.run(t)
	c := e.client(t, Config{})
	ctx := kafkatest.Ctx(t)

	original := request("shared-key", "sim")
	var originalID string
	for _, tc := range []struct {
		name   string
		req    *schemas.Request
		status schemas.Status
		check  func(*schemas.Result) error
	}{
		{"succeeded", original, schemas.StatusSucceeded, func(r *schemas.Result) error {
			originalID = r.RequestID
			if len(r.Outputs) == 0 || r.BatchSize == 0 {
				return fmt.Errorf("outputs %d, batch size %d", len(r.Outputs), r.BatchSize)
			}
			return nil
		}},
		{"unknown model", request("", "no-such-model"), schemas.StatusFailed, func(r *schemas.Result) error {
			if r.ErrorCode != infer.CodeUnknownModel {
				return fmt.Errorf("error code %q, want %s", r.ErrorCode, infer.CodeUnknownModel)
			}
			return nil
		}},
		{"deadline passed", func() *schemas.Request {
			r := request("", "sim")
			r.DeadlineMs = 1
			return r
		}(), schemas.StatusExpired, func(r *schemas.Result) error {
			if r.Reason != "deadline_passed" {
				return fmt.Errorf("reason %q, want deadline_passed", r.Reason)
			}
			return nil
		}},
		{"same idempotency key", request("shared-key", "sim"), schemas.StatusDuplicate, func(r *schemas.Result) error {
			if r.OriginalRequestID != originalID {
				return fmt.Errorf("original_request_id %q, want %q", r.OriginalRequestID, originalID)
			}
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := c.Submit(ctx, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			res, err := c.Await(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if res.RequestID != id || res.Status != tc.status {
				t.Fatalf("result %s %s (%s %s), want %s %s", res.RequestID, res.Status, res.ErrorCode, res.ErrorMessage, id, tc.status)
			}
			if err := tc.check(res); err != nil {
				t.Error(err)
			}
		})
	}
}

// An invalid request is an error naming the field, and nothing is produced.
func TestSubmitInvalid(t *testing.T) {
	e := newEnv(t, 2)
	c := e.client(t, Config{})
	for _, tc := range []struct {
		name string
		req  func() *schemas.Request
		want string
	}{
		{"nil", func() *schemas.Request { return nil }, "nil request"},
		{"empty model", func() *schemas.Request { return request("", "") }, "model is empty"},
		{"shape", func() *schemas.Request {
			r := request("", "sim")
			r.Inputs[0].Shape = []int64{3}
			return r
		}, `inputs[0] "x": shape [3] needs 3 elements, has 2`},
		{"tenant not UTF-8", func() *schemas.Request {
			r := request("", "sim")
			r.Tenant = "\xff"
			return r
		}, "tenant is not valid UTF-8"},
		{"parameter type", func() *schemas.Request {
			r := request("", "sim")
			r.Parameters = map[string]any{"n": 3}
			return r
		}, `parameters["n"] has type int`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Submit(kafkatest.Ctx(t), tc.req())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Submit: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if n := e.endOffsets(t, e.Topics.Requests); n != 0 {
		t.Errorf("requests topic holds %d records, want none", n)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) != 0 {
		t.Errorf("%d ids tracked, want none", len(c.pending))
	}
}

func TestNewErrors(t *testing.T) {
	e := newEnv(t, 1)
	conn := []kgo.Opt{kgo.SeedBrokers(e.Brokers...)}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no conn", Config{Registry: e.Registry}, "Conn is empty"},
		{"no registry", Config{Conn: conn}, "Registry is nil"},
		{"internal reply topic", Config{Conn: conn, Registry: e.Registry, ReplyTopic: e.Topics.Outcomes}, "internal topic"},
		{"missing reply topic", Config{Conn: conn, Registry: e.Registry, ReplyTopic: "nowhere"}, `topic "nowhere"`},
		{"wrong prefix", Config{Conn: conn, Registry: e.Registry, Prefix: "other."}, `topic "other.requests"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(kafkatest.Ctx(t), tc.cfg)
			if err == nil {
				c.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// A client with its own reply topic gets its results there, and only there;
// Results yields them too.
func TestReplyTopic(t *testing.T) {
	const replies = "app.replies"
	e := newEnv(t, 2, replies)
	e.run(t, replies)
	c := e.client(t, Config{ReplyTopic: replies})
	ctx := kafkatest.Ctx(t)

	const n = 10
	got := make(chan []*schemas.Result, 1)
	go func() {
		var rs []*schemas.Result
		for res, err := range c.Results(ctx) {
			if err != nil {
				t.Error(err)
				break
			}
			if rs = append(rs, res); len(rs) == n {
				break
			}
		}
		got <- rs
	}()
	kafkatest.Eventually(t, "the Results iteration to start", func() bool { return c.subscribers() == 1 })

	want := map[string]bool{}
	for range n {
		req := request("", "sim")
		id, err := c.Submit(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if req.ReplyTopic != replies {
			t.Errorf("Submit set reply_topic %q, want %q", req.ReplyTopic, replies)
		}
		want[id] = true
	}
	for id := range want {
		res, err := c.Await(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != schemas.StatusSucceeded || res.ReplyTopic != replies {
			t.Errorf("Await(%s): %s reply_topic %q, want SUCCEEDED on %s", id, res.Status, res.ReplyTopic, replies)
		}
	}
	for _, res := range <-got {
		if !want[res.RequestID] {
			t.Errorf("Results yielded %s, not submitted here", res.RequestID)
		}
		delete(want, res.RequestID)
	}
	if len(want) != 0 {
		t.Errorf("Results did not yield %d results", len(want))
	}
	if n := e.endOffsets(t, e.Topics.Results); n != 0 {
		t.Errorf("the shared results topic holds %d records, want none", n)
	}
	if got := len(e.Results(t, replies)); got != n {
		t.Errorf("%s holds results for %d ids, want %d", replies, got, n)
	}
}

// No result is missed, whenever Await is called.
func TestNoResultMissed(t *testing.T) {
	t.Run("await after the result is on the topic", func(t *testing.T) {
		e := newEnv(t, 2)
		e.run(t)
		c := e.client(t, Config{})
		ctx := kafkatest.Ctx(t)
		var ids []string
		for range 5 {
			id, err := c.Submit(ctx, request("", "sim"))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		kafkatest.Eventually(t, "every result on the results topic", func() bool {
			return len(e.Results(t, e.Topics.Results)) == len(ids)
		})
		for _, id := range ids {
			res, err := c.Await(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if res.RequestID != id || res.Status != schemas.StatusSucceeded {
				t.Errorf("Await(%s) = %s %s", id, res.RequestID, res.Status)
			}
		}
	})

	// A result produced right after New is read, even if it lands before
	// the client's first fetch. The broker holds every offset lookup made
	// after New until the result is written, so a client that looked up
	// "the end" only when it started fetching would start after it.
	t.Run("produced right after New", func(t *testing.T) {
		e := newEnv(t, 1)
		pr := e.Client(t)
		c := e.client(t, Config{})
		produced := make(chan struct{})
		e.Cluster.ControlKey(kmsg.ListOffsets.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
			e.Cluster.KeepControl()
			e.Cluster.SleepControl(func() { <-produced })
			return nil, nil, false
		})
		if err := c.track("after"); err != nil {
			t.Fatal(err)
		}
		e.produceResult(t, pr, e.Topics.Results, &schemas.Result{RequestID: "after", Status: schemas.StatusSucceeded})
		close(produced)
		if res, err := c.Await(kafkatest.Ctx(t), "after"); err != nil || res.RequestID != "after" {
			t.Fatalf("Await(after) = %v, %v", res, err)
		}
	})

	// Reading starts at the end offsets found at New, not at the start.
	t.Run("results from before New are not read", func(t *testing.T) {
		e := newEnv(t, 1)
		pr := e.Client(t)
		e.produceResult(t, pr, e.Topics.Results, &schemas.Result{RequestID: "before", Status: schemas.StatusSucceeded})
		c := e.client(t, Config{})
		ctx, cancel := context.WithCancel(kafkatest.Ctx(t))
		defer cancel()
		next := make(chan string, 1)
		go func() {
			for res, err := range c.Results(ctx) {
				if err != nil {
					t.Error(err)
					next <- ""
					return
				}
				next <- res.RequestID
				return
			}
		}()
		kafkatest.Eventually(t, "the Results iteration to start", func() bool { return c.subscribers() == 1 || len(next) > 0 })
		e.produceResult(t, pr, e.Topics.Results, &schemas.Result{RequestID: "later", Status: schemas.StatusSucceeded})
		if id := <-next; id != "later" {
			t.Errorf("Results yielded %q first, want later", id)
		}
	})

	t.Run("id submitted elsewhere, awaited before it is answered", func(t *testing.T) {
		e := newEnv(t, 2)
		c := e.client(t, Config{})
		ctx := kafkatest.Ctx(t)
		type answer struct {
			res *schemas.Result
			err error
		}
		done := make(chan answer, 1)
		go func() {
			res, err := c.Await(ctx, "elsewhere")
			done <- answer{res, err}
		}()
		kafkatest.Eventually(t, "Await to wait", func() bool { return c.waiting("elsewhere") })
		e.Produce(t, kafkatest.Request("elsewhere", "", "sim"))
		e.run(t)
		a := <-done
		if a.err != nil || a.res.RequestID != "elsewhere" || a.res.Status != schemas.StatusSucceeded {
			t.Fatalf("Await = %+v, %v", a.res, a.err)
		}
	})

	t.Run("partitions added after New", func(t *testing.T) {
		e := newEnv(t, 1)
		// The short metadata age and fetch wait only make the test quick:
		// kgo refreshes metadata at most every 5s, and a new partition
		// joins the fetches when the one in flight (up to 5s) returns.
		c := e.client(t, Config{Conn: []kgo.Opt{kgo.FetchMaxWait(50 * time.Millisecond), kgo.MetadataMinAge(10 * time.Millisecond)}, partitionCheck: 20 * time.Millisecond})
		ctx := kafkatest.Ctx(t)
		if _, err := e.Admin.CreatePartitions(ctx, 2, e.Topics.Results); err != nil {
			t.Fatal(err)
		}
		if err := c.track("on-2"); err != nil {
			t.Fatal(err)
		}
		pr := e.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		v, err := e.Codec.EncodeResult(e.Topics.Results, &schemas.Result{RequestID: "on-2", Status: schemas.StatusSucceeded})
		if err != nil {
			t.Fatal(err)
		}
		if err := pr.ProduceSync(ctx, &kgo.Record{Topic: e.Topics.Results, Partition: 2, Key: []byte("on-2"), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if res, err := c.Await(ctx, "on-2"); err != nil || res.RequestID != "on-2" {
			t.Fatalf("Await(on-2) = %v, %v", res, err)
		}
	})
}

// Results kept for Await are bounded: past MaxUnclaimed the oldest id nobody
// awaits is forgotten; an id being awaited never is.
func TestMaxUnclaimed(t *testing.T) {
	e := newEnv(t, 1)
	c := e.client(t, Config{MaxUnclaimed: 2})
	ctx := kafkatest.Ctx(t)
	pr := e.Client(t)
	done := make(chan error, 1)
	go func() {
		_, err := c.Await(ctx, "awaited")
		done <- err
	}()
	kafkatest.Eventually(t, "Await to wait", func() bool { return c.waiting("awaited") })
	for _, id := range []string{"a", "b", "c"} {
		if err := c.track(id); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"a", "b", "c", "awaited"} {
		e.produceResult(t, pr, e.Topics.Results, &schemas.Result{RequestID: id, Status: schemas.StatusSucceeded})
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"b", "c"} {
		if res, err := c.Await(ctx, id); err != nil || res.RequestID != id {
			t.Fatalf("Await(%s) = %v, %v", id, res, err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) != 0 || c.unclaimed.Len() != 0 {
		t.Errorf("still tracking %d ids (%d unclaimed), want none: a was forgotten, the others taken", len(c.pending), c.unclaimed.Len())
	}
}

// Repeats (at-least-once) reach Await once and Results every time; a result
// that does not decode is an error for the Await of its key and for Results.
func TestRepeatsAndUndecodable(t *testing.T) {
	e := newEnv(t, 1)
	c := e.client(t, Config{})
	ctx := kafkatest.Ctx(t)
	pr := e.Client(t)
	for _, id := range []string{"twice", "garbled"} {
		if err := c.track(id); err != nil {
			t.Fatal(err)
		}
	}
	type item struct {
		id  string
		err error
	}
	got := make(chan []item, 1)
	go func() {
		var items []item
		for res, err := range c.Results(ctx) {
			it := item{err: err}
			if res != nil {
				it.id = res.RequestID
			}
			if items = append(items, it); len(items) == 3 {
				break
			}
		}
		got <- items
	}()
	kafkatest.Eventually(t, "the Results iteration to start", func() bool { return c.subscribers() == 1 })

	first := &schemas.Result{RequestID: "twice", Status: schemas.StatusSucceeded, BatchSize: 1}
	e.produceResult(t, pr, e.Topics.Results, first)
	e.produceResult(t, pr, e.Topics.Results, &schemas.Result{RequestID: "twice", Status: schemas.StatusSucceeded, BatchSize: 2})
	if err := pr.ProduceSync(ctx, &kgo.Record{Topic: e.Topics.Results, Key: []byte("garbled"), Value: []byte{0, 0, 0, 0, 1, 0xff}}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	res, err := c.Await(ctx, "twice")
	if err != nil || res.BatchSize != 1 {
		t.Fatalf("Await(twice) = %+v, %v, want the first answer", res, err)
	}
	if _, err := c.Await(ctx, "garbled"); !errors.Is(err, schemas.ErrMalformed) {
		t.Errorf("Await(garbled): %v, want a malformed-message error", err)
	}
	items := <-got
	if len(items) != 3 || items[0].id != "twice" || items[1].id != "twice" || !errors.Is(items[2].err, schemas.ErrMalformed) {
		t.Errorf("Results yielded %+v, want twice, twice, a malformed-message error", items)
	}
}

// Close ends what waits, and later calls fail with ErrClosed.
func TestClose(t *testing.T) {
	e := newEnv(t, 1)
	c := e.client(t, Config{})
	ctx := kafkatest.Ctx(t)
	awaited := make(chan error, 1)
	go func() {
		_, err := c.Await(ctx, "never")
		awaited <- err
	}()
	ranged := make(chan error, 1)
	go func() {
		var last error
		for _, err := range c.Results(ctx) {
			last = err
		}
		ranged <- last
	}()
	kafkatest.Eventually(t, "Await and Results to wait", func() bool { return c.waiting("never") && c.subscribers() == 1 })
	c.Close()
	c.Close()
	if err := <-awaited; !errors.Is(err, ErrClosed) {
		t.Errorf("Await: %v, want ErrClosed", err)
	}
	if err := <-ranged; !errors.Is(err, ErrClosed) {
		t.Errorf("Results ended with %v, want ErrClosed", err)
	}
	if _, err := c.Submit(ctx, request("", "sim")); !errors.Is(err, ErrClosed) {
		t.Errorf("Submit after Close: %v, want ErrClosed", err)
	}
	if _, err := c.Await(ctx, "x"); !errors.Is(err, ErrClosed) {
		t.Errorf("Await after Close: %v, want ErrClosed", err)
	}
}
