// Package kafkatest gives tests an in-process Kafka (kfake) and schema
// registry (srfake) with the pipeline's topics created and a codec bound to
// them, plus helpers to produce requests and read topics back.
package kafkatest

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/asyncinfer/asyncinfer/internal/partread"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/topics"
)

// MaxMessageBytes is the data topics' max.message.bytes in tests, as in a
// default deployment.
const MaxMessageBytes = 1 << 20

// Env is one test's cluster.
type Env struct {
	Cluster  *kfake.Cluster
	Brokers  []string
	Topics   pipeline.Topics
	Graph    topics.Graph // the default graph, with the reply topics
	Codec    *schemas.Codec
	Admin    *kadm.Client
	Registry *sr.Client
	SR       *srfake.Registry // the registry itself, for fault injection
	srDown   atomic.Bool
	// ClientOpts are added to every client Client makes (the superuser's
	// credentials on a secured cluster).
	ClientOpts []kgo.Opt
}

// New starts a one-broker kfake and srfake, creates the topics with the given
// partition count, and the reply topics, and binds a codec, also to
// replyTopics (as results).
// Everything is closed at the end of t.
func New(t testing.TB, partitions int32, replyTopics ...string) *Env {
	t.Helper()
	return NewSecured(t, partitions, nil, nil, replyTopics...)
}

// NewGraph is New for the graph o declares (one lane, say).
func NewGraph(t testing.TB, partitions int32, o topics.GraphOptions) *Env {
	t.Helper()
	return newEnv(t, partitions, nil, nil, o)
}

// NewSecured is New with extra cluster options (SASL, ACLs, users) and the
// client options the test's own clients use (a superuser's credentials).
func NewSecured(t testing.TB, partitions int32, cluster []kfake.Opt, client []kgo.Opt, replyTopics ...string) *Env {
	t.Helper()
	return newEnv(t, partitions, cluster, client, topics.GraphOptions{ReplyTopics: replyTopics})
}

func newEnv(t testing.TB, partitions int32, cluster []kfake.Opt, client []kgo.Opt, o topics.GraphOptions) *Env {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, cluster...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	reg := srfake.New()
	t.Cleanup(reg.Close)
	g, err := topics.NewGraph(o)
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{Cluster: c, Brokers: c.ListenAddrs(), Topics: g.Topics, Graph: g, ClientOpts: client, SR: reg}
	reg.Intercept(func(w http.ResponseWriter, _ *http.Request) bool {
		if !e.srDown.Load() {
			return false
		}
		// Unreachable: the connection is cut without an answer.
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return true
			}
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	})
	cl := e.Client(t)
	e.Admin = kadm.NewClient(cl)
	ctx := Ctx(t)
	// The size limits of a default deployment (config.Defaults).
	if err := topics.CreateTopics(ctx, e.Admin, g, topics.Layout{Partitions: partitions, MaxMessageBytes: MaxMessageBytes,
		DLQMaxMessageBytes: 8 << 20}, 1); err != nil {
		t.Fatal(err)
	}
	src, err := sr.NewClient(sr.URLs(reg.URL()))
	if err != nil {
		t.Fatal(err)
	}
	e.Registry = src
	e.Codec, err = schemas.NewCodec(ctx, src, g.Kinds(), schemas.MaxMessageBytes(MaxMessageBytes*pipeline.DecodeLimitFactor),
		schemas.DecodeBudget(MaxMessageBytes*schemas.DecodeBudgetFactor), schemas.MaxDeadLetterBytes(8<<20))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// Ctx is a context that ends with the test (or after a minute, so that a
// hung test fails instead of hanging the suite).
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// Client is a plain client of the cluster, closed at the end of t.
func (e *Env) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(slices.Concat([]kgo.Opt{kgo.SeedBrokers(e.Brokers...), kgo.ProducerLinger(0)}, e.ClientOpts, opts)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// Conn are the runner connection options for this cluster.
func (e *Env) Conn() pipeline.Option { return pipeline.ConnOpts(kgo.SeedBrokers(e.Brokers...)) }

// Opts are the runner options for this cluster (connection, codec, the
// topics' size limit), followed by more.
func (e *Env) Opts(more ...pipeline.Option) []pipeline.Option {
	return append([]pipeline.Option{e.Conn(), pipeline.WithCodec(e.Codec), pipeline.MaxRecordBytes(MaxMessageBytes)}, more...)
}

// Stage is the graph's stage of that name.
func (e *Env) Stage(t testing.TB, name string) topics.Stage {
	t.Helper()
	st, ok := e.Graph.Stage(name)
	if !ok {
		t.Fatalf("no stage %q", name)
	}
	return st
}

// Produce produces requests to the requests topic, keyed by idempotency key.
func (e *Env) Produce(t testing.TB, reqs ...*schemas.Request) {
	t.Helper()
	cl := e.Client(t)
	var rs []*kgo.Record
	for _, r := range reqs {
		v, err := e.Codec.EncodeRequest(e.Topics.Requests, r)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, &kgo.Record{Topic: e.Topics.Requests, Key: []byte(r.Key()), Value: v})
	}
	if err := cl.ProduceSync(Ctx(t), rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// ProduceRaw produces arbitrary bytes to topic.
func (e *Env) ProduceRaw(t testing.TB, topic string, key, value []byte) {
	t.Helper()
	if err := e.Client(t).ProduceSync(Ctx(t), &kgo.Record{Topic: topic, Key: key, Value: value}).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// ReadAll reads every record of topic up to its current end offsets.
func (e *Env) ReadAll(t testing.TB, topic string) []*kgo.Record {
	t.Helper()
	return e.read(t, topic, false)
}

// StateEntries reads every entry of a changelog, in order: a record holds
// one entry or, written together, several (StateEntry.More).
func (e *Env) StateEntries(t testing.TB, topic string) []schemas.StateEntry {
	t.Helper()
	var out []schemas.StateEntry
	for _, r := range e.ReadAll(t, topic) {
		if r.Value == nil {
			continue
		}
		se, err := e.Codec.DecodeStateEntry(Ctx(t), r.Value)
		if err != nil {
			t.Fatalf("changelog %s/%d@%d: %v", r.Topic, r.Partition, r.Offset, err)
		}
		more := se.More
		se.More = nil
		out = append(out, *se)
		out = append(out, more...)
	}
	return out
}

// ReadCommitted reads every committed record of topic up to its last stable
// offset, as a read_committed consumer sees them: aborted transactions'
// records are not there.
func (e *Env) ReadCommitted(t testing.TB, topic string) []*kgo.Record {
	t.Helper()
	return e.read(t, topic, true)
}

func (e *Env) read(t testing.TB, topic string, committed bool) []*kgo.Record {
	t.Helper()
	ctx := Ctx(t)
	list := e.Admin.ListEndOffsets
	if committed {
		list = e.Admin.ListCommittedOffsets
	}
	ends, err := list(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	ranges := map[int32]partread.Range{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			ranges[o.Partition] = partread.Range{Start: -2, End: o.Offset}
		}
	})
	var out []*kgo.Record
	cl := slices.Concat([]kgo.Opt{kgo.SeedBrokers(e.Brokers...)}, e.ClientOpts)
	if err := partread.Read(ctx, cl, map[string]map[int32]partread.Range{topic: ranges}, partread.Options{Uncommitted: !committed},
		func(r *kgo.Record) { out = append(out, r) }); err != nil {
		t.Fatalf("reading %s: %v", topic, err)
	}
	return out
}

// Results decodes every record of a result-typed topic, by request id.
func (e *Env) Results(t testing.TB, topic string) map[string][]*schemas.Result {
	t.Helper()
	out := map[string][]*schemas.Result{}
	for _, r := range e.ReadCommitted(t, topic) {
		res, err := e.Codec.DecodeResult(context.Background(), r.Value)
		if err != nil {
			t.Fatalf("%s@%d/%d: %v", topic, r.Partition, r.Offset, err)
		}
		out[res.RequestID] = append(out[res.RequestID], res)
	}
	return out
}

// Committed is the group's committed offsets on topic, by partition.
func (e *Env) Committed(t testing.TB, group, topic string) map[int32]int64 {
	t.Helper()
	offs, err := e.Admin.FetchOffsets(Ctx(t), group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return map[int32]int64{} // nothing committed yet
	}
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int64{}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic {
			out[o.Partition] = o.At
		}
	})
	return out
}

// Eventually polls cond every 20ms until it holds or the test's minute
// runs out.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	ctx := Ctx(t)
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Request is a valid request for model m.
func Request(id, key, m string) *schemas.Request {
	return &schemas.Request{
		RequestID: id, IdempotencyKey: key, Model: m, CreatedAtMs: time.Now().UnixMilli(),
		Inputs: []schemas.Tensor{{Name: "x", Datatype: "FP32", Shape: []int64{2}, FP32: []float32{1, 2}}},
	}
}

// RegistryDown makes the schema registry unreachable (every request's
// connection is cut) until the returned up is called (also at the end of t).
func (e *Env) RegistryDown(t testing.TB) (up func()) {
	e.srDown.Store(true)
	var once sync.Once
	up = func() { once.Do(func() { e.srDown.Store(false) }) }
	t.Cleanup(up)
	return up
}

// ClientSchemaRequest encodes r as a client with its own version of the
// request schema would: the embedded schema with one more optional string
// field, registered under its own subject, so that its id is one the
// pipeline's codec has not seen and must look up in the registry.
func (e *Env) ClientSchemaRequest(t testing.TB, r *schemas.Request) []byte {
	t.Helper()
	id := e.clientSchemaID(t)
	v, err := e.Codec.EncodeRequest(e.Topics.Requests, r)
	if err != nil {
		t.Fatal(err)
	}
	out := append([]byte(nil), v...)
	binary.BigEndian.PutUint32(out[1:5], uint32(id))
	return append(out, 0) // the extra field, "" (length 0)
}

var clientSchemaMu sync.Mutex

func (e *Env) clientSchemaID(t testing.TB) int {
	t.Helper()
	clientSchemaMu.Lock()
	defer clientSchemaMu.Unlock()
	var doc map[string]any
	if err := json.Unmarshal([]byte(schemas.Schema(schemas.KindRequest)), &doc); err != nil {
		t.Fatal(err)
	}
	doc["fields"] = append(doc["fields"].([]any), map[string]any{"name": "client_extra", "type": "string", "default": ""})
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := e.SR.RegisterSchema("client-own-request-value", sr.Schema{Schema: string(b), Type: sr.TypeAvro})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// GateProduce makes the broker hold every produce request that writes to
// topic until the returned release is called (also at the end of t).
func (e *Env) GateProduce(t testing.TB, topic string) (release func()) {
	t.Helper()
	td, err := e.Admin.ListTopics(Ctx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	id := td[topic].ID // produce v13+ names topics by id
	return e.gate(t, kmsg.Produce, func(req kmsg.Request) bool {
		for _, tp := range req.(*kmsg.ProduceRequest).Topics {
			if tp.Topic == topic || (tp.TopicID != [16]byte{} && tp.TopicID == id) {
				return true
			}
		}
		return false
	})
}

// GateListOffsets makes the broker hold every ListOffsets request for topic
// (a state restore's first request) until release is called.
func (e *Env) GateListOffsets(t testing.TB, topic string) (release func()) {
	return e.gate(t, kmsg.ListOffsets, func(req kmsg.Request) bool {
		for _, tp := range req.(*kmsg.ListOffsetsRequest).Topics {
			if tp.Topic == topic {
				return true
			}
		}
		return false
	})
}

func (e *Env) gate(t testing.TB, key kmsg.Key, match func(kmsg.Request) bool) (release func()) {
	open := make(chan struct{})
	var released atomic.Bool
	e.Cluster.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if released.Load() {
			e.Cluster.DropControl()
			return nil, nil, false
		}
		e.Cluster.KeepControl()
		if match(req) {
			e.Cluster.SleepControl(func() { <-open })
		}
		return nil, nil, false
	})
	var once sync.Once
	release = func() { once.Do(func() { released.Store(true); close(open) }) }
	t.Cleanup(release)
	return release
}
