package dedup_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/stages/dedup"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const group = "asyncinfer.dedup"

type member struct {
	stage *dedup.Stage
	r     *pipeline.Runner
	m     *dedup.Metrics
	stop  func()
}

// start runs one dedup member until stop (graceful) or r.Kill (a crash).
func start(t *testing.T, e *kafkatest.Env, opts ...pipeline.Option) *member {
	t.Helper()
	m, err := dedup.NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := dedup.New(dedup.Config{}, m)
	if err != nil {
		t.Fatal(err)
	}
	r, err := pipeline.New(e.Stage(t, "dedup"), dedup.Decoder(e.Codec), st,
		e.Opts(append([]pipeline.Option{pipeline.SessionTimeout(6 * time.Second)}, opts...)...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	mem := &member{stage: st, r: r, m: m}
	var stopped bool
	mem.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil && err.Error() != "killed" {
			t.Errorf("dedup runner: %v", err)
		}
	}
	t.Cleanup(mem.stop)
	return mem
}

func decisions(m *dedup.Metrics, d string) int {
	return int(testutil.ToFloat64(m.Decisions.WithLabelValues(d)))
}

func requests(prefix string, n int) []*schemas.Request {
	out := make([]*schemas.Request, n)
	for i := range out {
		out[i] = kafkatest.Request(fmt.Sprintf("%s-%d", prefix, i), fmt.Sprintf("key-%d", i), "m")
	}
	return out
}

// A member that dies after producing its outputs and changelog, before
// committing, gets its records re-delivered to the next member, which finds
// them in the restored window and drops them silently: the accepted topic
// holds each request once.
func TestKilledBeforeCommitRedeliversAndDropsSilently(t *testing.T) {
	e := kafkatest.New(t, 2)
	const n = 50
	e.Produce(t, requests("a", n)...)

	// A commit interval of an hour: nothing is committed before the kill.
	first := start(t, e, pipeline.CommitInterval(time.Hour))
	kafkatest.Eventually(t, "changelog of every request", func() bool {
		return len(e.StateEntries(t, e.Topics.DedupState)) == n
	})
	first.r.Kill()
	first.stop()
	if c := e.Committed(t, group, e.Topics.Requests); len(c) != 0 {
		t.Fatalf("committed %v before the kill; the test needs nothing committed", c)
	}

	second := start(t, e)
	kafkatest.Eventually(t, "re-delivered records handled", func() bool {
		return decisions(second.m, "redelivery") == n
	})
	second.stop()
	if got := decisions(second.m, "accepted"); got != 0 {
		t.Errorf("second member accepted %d requests again, want 0", got)
	}
	if got := len(e.ReadAll(t, e.Topics.Accepted)); got != n {
		t.Errorf("accepted topic holds %d records, want %d", got, n)
	}
	committed := e.Committed(t, group, e.Topics.Requests)
	total := int64(0)
	for _, o := range committed {
		total += o
	}
	if total != n {
		t.Errorf("committed offsets %v add up to %d, want %d", committed, total, n)
	}
}

// The window survives a restart: it is rebuilt from the changelog, so a new
// request with a known key is a DUPLICATE of the original.
func TestStateSurvivesRestart(t *testing.T) {
	e := kafkatest.New(t, 2)
	const n = 20
	e.Produce(t, requests("orig", n)...)
	first := start(t, e)
	kafkatest.Eventually(t, "originals accepted", func() bool { return decisions(first.m, "accepted") == n })
	first.stop()

	second := start(t, e)
	e.Produce(t, requests("again", n)...) // new ids, same keys
	kafkatest.Eventually(t, "duplicates answered", func() bool { return decisions(second.m, "duplicate") == n })
	second.stop()
	outs := e.Results(t, e.Topics.Outcomes)
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("again-%d", i)
		rs := outs[id]
		if len(rs) != 1 || rs[0].Status != schemas.StatusDuplicate || rs[0].OriginalRequestID != fmt.Sprintf("orig-%d", i) {
			t.Fatalf("%s: got %+v, want one DUPLICATE of orig-%d", id, rs, i)
		}
	}
}

// When a second member joins, partitions move to it; it restores their
// windows before deciding, so duplicates are still recognised.
func TestStateFollowsRebalance(t *testing.T) {
	e := kafkatest.New(t, 4)
	const n = 40
	e.Produce(t, requests("orig", n)...)
	first := start(t, e, pipeline.InstanceID("a"))
	kafkatest.Eventually(t, "originals accepted", func() bool { return decisions(first.m, "accepted") == n })

	second := start(t, e, pipeline.InstanceID("b"))
	kafkatest.Eventually(t, "second member owns partitions", func() bool {
		gi := e.Cluster.GroupInfo(group)
		return gi != nil && len(gi.Members) == 2 && second.r.Window().Len() > 0
	})
	e.Produce(t, requests("again", n)...)
	kafkatest.Eventually(t, "every duplicate answered", func() bool {
		return decisions(first.m, "duplicate")+decisions(second.m, "duplicate") == n
	})
	if decisions(second.m, "duplicate") == 0 {
		t.Error("the second member answered no duplicate: the rebalance moved no partition to it")
	}
	if a := decisions(first.m, "accepted") + decisions(second.m, "accepted"); a != n {
		t.Errorf("accepted %d, want %d (a duplicate was accepted)", a, n)
	}
}

// Undecodable bytes get one dead letter and nothing else; an invalid
// request gets FAILED; an expired one EXPIRED.
func TestAnswersWhatCannotBeServed(t *testing.T) {
	e := kafkatest.New(t, 1)
	e.ProduceRaw(t, e.Topics.Requests, []byte("k"), []byte("\xffnot avro"))
	bad := kafkatest.Request("bad", "", "m")
	bad.Inputs[0].Shape = []int64{3}
	late := kafkatest.Request("late", "", "m")
	late.DeadlineMs = time.Now().Add(-time.Minute).UnixMilli()
	e.Produce(t, bad, late)
	m := start(t, e)
	kafkatest.Eventually(t, "three decisions", func() bool {
		undecodable := int(testutil.ToFloat64(m.r.Metrics().Undecodable.WithLabelValues("dedup")))
		return undecodable+decisions(m.m, "invalid")+decisions(m.m, "expired") == 3
	})
	m.stop()
	dl := e.ReadAll(t, e.Topics.DLQ)
	if len(dl) != 1 {
		t.Fatalf("dlq has %d records, want 1", len(dl))
	}
	d, err := e.Codec.DecodeDeadLetter(context.Background(), dl[0].Value)
	if err != nil || d.Reason != "undecodable" || d.SourceTopic != e.Topics.Requests || string(d.Payload) != "\xffnot avro" {
		t.Fatalf("dead letter %+v, %v", d, err)
	}
	outs := e.Results(t, e.Topics.Outcomes)
	if r := outs["bad"]; len(r) != 1 || r[0].Status != schemas.StatusFailed || r[0].ErrorCode != dedup.CodeInvalidRequest {
		t.Errorf("bad: %+v", r)
	}
	if r := outs["late"]; len(r) != 1 || r[0].Status != schemas.StatusExpired || r[0].Reason != "deadline_passed" {
		t.Errorf("late: %+v", r)
	}
	if len(e.ReadAll(t, e.Topics.Accepted)) != 0 {
		t.Error("something was accepted")
	}
}

// Every size limit of the path agrees and whatever does not fit is
// answered: a valid request between the producer's default limit
// (1,000,012 bytes) and the topic's (1 MiB) is accepted; one so close to the
// topic's limit that the pipeline's headers would not fit is answered
// FAILED, REQUEST_TOO_LARGE; a malformed record with a 600 KB key and a
// 440 KB value gets a dead letter that fits (the key hashed, the payload
// cut), so the partition moves on. None of it stops the stage.
func TestSizeLimitsAgree(t *testing.T) {
	e := kafkatest.New(t, 1)
	big := func(id string, bytes int) *kgo.Record {
		r := kafkatest.Request(id, "", "m")
		r.Inputs = []schemas.Tensor{{Name: "x", Datatype: "BOOL", Shape: []int64{int64(bytes)}, Raw: make([]byte, bytes)}}
		v, err := e.Codec.EncodeRequest(e.Topics.Requests, r)
		if err != nil {
			t.Fatal(err)
		}
		return &kgo.Record{Topic: e.Topics.Requests, Key: []byte(r.Key()), Value: v}
	}
	fits := big("fits", 1_020_000)
	tight := big("tight", kafkatest.MaxMessageBytes-300)
	junk := &kgo.Record{Topic: e.Topics.Requests, Key: bytes.Repeat([]byte("k"), 600_000), Value: append([]byte{0xff}, bytes.Repeat([]byte("x"), 440_000)...)}
	cl := e.Client(t, kgo.ProducerBatchMaxBytes(kafkatest.MaxMessageBytes))
	for _, r := range []*kgo.Record{fits, tight, junk} {
		if err := cl.ProduceSync(kafkatest.Ctx(t), r).FirstErr(); err != nil {
			t.Fatalf("the client's %d-byte record: %v", pipeline.BatchSize(r), err)
		}
	}
	m := start(t, e)
	kafkatest.Eventually(t, "all three handled", func() bool {
		return len(e.Committed(t, group, e.Topics.Requests)) > 0 && e.Committed(t, group, e.Topics.Requests)[0] == 3
	})
	m.stop()
	acc := e.ReadCommitted(t, e.Topics.Accepted)
	if len(acc) != 1 || string(acc[0].Key) != "fits" {
		t.Errorf("accepted %d records, want the one that fits", len(acc))
	}
	outs := e.Results(t, e.Topics.Outcomes)
	if r := outs["tight"]; len(r) != 1 || r[0].Status != schemas.StatusFailed || r[0].ErrorCode != dedup.CodeRequestTooLarge {
		t.Errorf("tight: %+v, want FAILED %s", r, dedup.CodeRequestTooLarge)
	}
	dl := e.ReadCommitted(t, e.Topics.DLQ)
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}
	d, err := e.Codec.DecodeDeadLetter(context.Background(), dl[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(junk.Value)
	if d.PayloadSize != int64(len(junk.Value)) || !bytes.Equal(d.PayloadSHA256, sum[:]) || !bytes.HasPrefix(junk.Value, d.Payload) ||
		(!d.Truncated && len(d.Payload) != len(junk.Value)) || len(dl[0].Key) > 300 {
		t.Errorf("dead letter: truncated=%v payload %d of %d bytes, key %d bytes; want the payload (or a prefix) with its size and SHA-256, the key hashed",
			d.Truncated, len(d.Payload), d.PayloadSize, len(dl[0].Key))
	}
	if n := pipeline.BatchSize(dl[0]); n > kafkatest.MaxMessageBytes {
		t.Errorf("dead letter of %d bytes over the limit %d", n, kafkatest.MaxMessageBytes)
	}
}

// Deduplication holds whatever partitioner a client uses: requests with one
// idempotency key written to every partition (as librdkafka's default
// consistent_random partitioner, beside a murmur2 client, would scatter
// them) are re-routed to their key's partition, so exactly one is accepted
// and every other is answered DUPLICATE; the stage says a producer ignores
// the rule.
func TestMisplacedRequestsAreRerouted(t *testing.T) {
	e := kafkatest.New(t, 4)
	cl := e.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	const keys = 5
	for k := range keys {
		for p := range int32(4) {
			r := kafkatest.Request(fmt.Sprintf("r%d-p%d", k, p), fmt.Sprintf("key-%d", k), "m")
			v, err := e.Codec.EncodeRequest(e.Topics.Requests, r)
			if err != nil {
				t.Fatal(err)
			}
			if err := cl.ProduceSync(kafkatest.Ctx(t), &kgo.Record{Topic: e.Topics.Requests, Partition: p, Key: []byte(r.Key()), Value: v}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	m := start(t, e)
	kafkatest.Eventually(t, "every request decided", func() bool {
		return decisions(m.m, "accepted")+decisions(m.m, "duplicate") == keys*4
	})
	if a := decisions(m.m, "accepted"); a != keys {
		t.Errorf("accepted %d, want %d: one per idempotency key", a, keys)
	}
	if r := decisions(m.m, "rerouted"); r != keys*3 {
		t.Errorf("re-routed %d, want %d (three of each key's four were misplaced)", r, keys*3)
	}
	if ns := m.stage.Notices(); len(ns) != 1 || !strings.Contains(ns[0], "ignores the partitioning rule") {
		t.Errorf("notices %q, want one saying a producer ignores the partitioning rule", ns)
	}
	m.stop()
	for _, rec := range e.ReadCommitted(t, e.Topics.Accepted) {
		if want := pipeline.KeyPartition(rec.Key, 4); rec.Partition != want {
			t.Errorf("accepted %s from partition %d, its key's is %d", rec.Key, rec.Partition, want)
		}
	}
}

// Values above the topic's limit can only come out of a compressed batch.
// A request of 1.5 MB is still answered (FAILED, REQUEST_TOO_LARGE); one
// whose request id alone is 900 KB cannot be (no answer naming it fits) and
// gets a dead letter; neither stops the stage.
func TestCompressedOversize(t *testing.T) {
	e := kafkatest.New(t, 1)
	cl := e.Client(t, kgo.ProducerBatchCompression(kgo.ZstdCompression()), kgo.ProducerBatchMaxBytes(64<<20))
	big := kafkatest.Request("big", "", "m")
	big.Inputs = []schemas.Tensor{{Name: "x", Datatype: "BOOL", Shape: []int64{1_500_000}, Raw: make([]byte, 1_500_000)}}
	hugeID := kafkatest.Request(strings.Repeat("i", 900_000), "", "m")
	for _, r := range []*schemas.Request{big, hugeID} {
		v, err := e.Codec.EncodeRequest(e.Topics.Requests, r)
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(kafkatest.Ctx(t), &kgo.Record{Topic: e.Topics.Requests, Key: []byte("k"), Value: v}).FirstErr(); err != nil {
			t.Fatalf("compressed produce: %v", err)
		}
	}
	m := start(t, e)
	kafkatest.Eventually(t, "both handled", func() bool { return e.Committed(t, group, e.Topics.Requests)[0] == 2 })
	m.stop()
	if r := e.Results(t, e.Topics.Outcomes)["big"]; len(r) != 1 || r[0].ErrorCode != dedup.CodeRequestTooLarge {
		t.Errorf("big: %+v, want FAILED %s", r, dedup.CodeRequestTooLarge)
	}
	dl := e.ReadCommitted(t, e.Topics.DLQ)
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1 (the request no answer can name)", len(dl))
	}
	if reason, _ := pipeline.Header(dl[0].Headers, pipeline.HeaderReason); string(reason) != pipeline.ReasonTooLarge {
		t.Errorf("dead letter reason %q, want %s", reason, pipeline.ReasonTooLarge)
	}
}

// Long request ids and idempotency keys are remembered: a request whose id
// is 400 KB (no idempotency key: the id is the key) was forwarded, but its
// state entry (the key twice, the id once: 1.2 MB) did not fit the
// changelog, so the input was dead-lettered produce_failed after its output
// was written (lost, in exactly-once mode). The state keeps long ids as
// their SHA-256: the entry fits, a re-delivery is dropped silently, and a
// second request with the same key is DUPLICATE.
func TestLongIDsAreRemembered(t *testing.T) {
	e := kafkatest.New(t, 1)
	long := strings.Repeat("i", 400_000)
	first := kafkatest.Request(long, "", "m")
	again := kafkatest.Request("again", long, "m") // the same key, another request id
	e.Produce(t, first, first, again)
	m := start(t, e)
	kafkatest.Eventually(t, "all three handled", func() bool {
		c := e.Committed(t, group, e.Topics.Requests)
		return len(c) > 0 && c[0] == 3
	})
	m.stop()
	if n := len(e.ReadCommitted(t, e.Topics.DLQ)); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
	if n := len(e.ReadCommitted(t, e.Topics.Accepted)); n != 1 {
		t.Errorf("%d accepted, want the first only", n)
	}
	if got := decisions(m.m, "redelivery"); got != 1 {
		t.Errorf("%d re-deliveries dropped, want 1", got)
	}
	dup := e.Results(t, e.Topics.Outcomes)["again"]
	if len(dup) != 1 || dup[0].Status != schemas.StatusDuplicate || dup[0].OriginalRequestID != pipeline.StateRef(long) {
		t.Errorf("again: %+v, want DUPLICATE of %s", dup, pipeline.StateRef(long))
	}
	for _, r := range e.ReadCommitted(t, e.Topics.DedupState) {
		if n := pipeline.BatchSize(r); n > 4096 {
			t.Errorf("a state entry of %d bytes", n)
		}
	}
}
