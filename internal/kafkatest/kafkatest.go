// Package kafkatest gives tests an in-process Kafka (kfake) and schema
// registry (srfake) with the pipeline's topics created and a codec bound to
// them, plus helpers to produce requests and read topics back.
package kafkatest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

// Env is one test's cluster.
type Env struct {
	Cluster  *kfake.Cluster
	Brokers  []string
	Topics   pipeline.Topics
	Codec    *schemas.Codec
	Admin    *kadm.Client
	Registry *sr.Client
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

// NewSecured is New with extra cluster options (SASL, ACLs, users) and the
// client options the test's own clients use (a superuser's credentials).
func NewSecured(t testing.TB, partitions int32, cluster []kfake.Opt, client []kgo.Opt, replyTopics ...string) *Env {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, cluster...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	reg := srfake.New()
	t.Cleanup(reg.Close)
	e := &Env{Cluster: c, Brokers: c.ListenAddrs(), Topics: pipeline.NewTopics(""), ClientOpts: client}
	cl := e.Client(t)
	e.Admin = kadm.NewClient(cl)
	ctx := Ctx(t)
	if err := pipeline.CreateTopics(ctx, e.Admin, pipeline.TopicLayout{Topics: e.Topics, Partitions: partitions}, 1); err != nil {
		t.Fatal(err)
	}
	for _, r := range replyTopics {
		resp, err := e.Admin.CreateTopic(ctx, partitions, 1, nil, r)
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	src, err := sr.NewClient(sr.URLs(reg.URL()))
	if err != nil {
		t.Fatal(err)
	}
	e.Registry = src
	e.Codec, err = schemas.NewCodec(ctx, src, e.Topics.Kinds(replyTopics...))
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

// DLQ is the runner option for the dead-letter topic.
func (e *Env) DLQ() pipeline.Option {
	return pipeline.DeadLetters(e.Topics.DLQ, pipeline.NewDeadLetterEncoder(e.Codec, e.Topics.DLQ))
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
	list, iso := e.Admin.ListEndOffsets, kgo.ReadUncommitted()
	if committed {
		list, iso = e.Admin.ListCommittedOffsets, kgo.ReadCommitted()
	}
	ends, err := list(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	left := map[int32]int64{}
	parts := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			left[o.Partition] = o.Offset
			parts[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	if len(left) == 0 {
		return nil
	}
	// Control records (transaction markers) are kept so that the offsets
	// reach the end when a partition ends in one; they are not returned.
	cl := e.Client(t, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
		kgo.FetchIsolationLevel(iso), kgo.KeepControlRecords())
	var out []*kgo.Record
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: %v (left %v)", topic, ctx.Err(), left)
		}
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := left[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
			if r.Offset >= end-1 {
				delete(left, r.Partition)
			}
		})
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
