package pipeline_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
)

// fenceID bumps the epoch of a transactional id, as the instance that takes
// a frozen peer's partitions does (or the broker, timing its transaction
// out): its open transaction is aborted.
func fenceID(t *testing.T, cl *kgo.Client, id string) {
	t.Helper()
	kafkatest.Eventually(t, "the transactional id fenced", func() bool {
		req := kmsg.NewPtrInitProducerIDRequest()
		req.TransactionalID = &id
		req.TransactionTimeoutMillis = 60000
		req.ProducerID, req.ProducerEpoch = -1, -1
		resp, err := req.RequestWith(context.Background(), cl)
		return err == nil && kerr.ErrorForCode(resp.ErrorCode) == nil
	})
}

// An instance whose transaction was aborted by someone else while it held
// a unit open (it was frozen, and a peer fenced it) is not a zombie: no
// other process has its instance id. It renews its producer and group
// member, and goes on: no exit, every input committed once.
func TestEOSFencedByAPeerRenews(t *testing.T) {
	e := kafkatest.New(t, 1)
	const n = 10
	for i := range n {
		e.ProduceRaw(t, e.Topics.Accepted, nil, []byte{byte(i)})
	}
	cp := newCopier(t, func(off int64) bool { return off >= 5 })
	r, stop := runEOS(t, e, cp, "a", time.Minute)
	kafkatest.Eventually(t, "the unit is open with outputs written", func() bool {
		return len(e.ReadAll(t, e.Topics.Outcomes)) >= 5
	})
	fenceID(t, e.Client(t), "eos/a")
	close(cp.release) // the instance thaws: its unit ends fenced
	kafkatest.Eventually(t, "every input committed", func() bool {
		return e.Committed(t, "eos", e.Topics.Accepted)[0] == n
	})
	if got := testutil.ToFloat64(r.Metrics().Renewals.WithLabelValues("test")); got != 1 {
		t.Errorf("%v renewals, want 1", got)
	}
	if err := stop(); err != nil {
		t.Fatalf("the run ended with %v, want nil: a fence by a peer is no reason to stop", err)
	}
	for off, k := range byOffset(e.ReadCommitted(t, e.Topics.Outcomes)) {
		if k != 1 {
			t.Errorf("offset %d copied %d times in committed output, want 1", off, k)
		}
	}
	if got := len(byOffset(e.ReadCommitted(t, e.Topics.Outcomes))); got != n {
		t.Logf("committed: %v; all: %v", byOffset(e.ReadCommitted(t, e.Topics.Outcomes)), byOffset(e.ReadAll(t, e.Topics.Outcomes)))
		t.Errorf("%d inputs copied, want %d", got, n)
	}
}

// A departed instance's open transaction (a transactional id of the
// stage's, with no member of the group behind it: frozen, partitioned
// away) holds the last stable offset of what it wrote. A live instance of
// the stage fences it instead of waiting for the broker's timeout (a
// minute here): read_committed readers of the topic go on, and the
// departed instance's records stay invisible.
func TestEOSDepartedPeerIsFenced(t *testing.T) {
	e := kafkatest.New(t, 1)
	departed := e.Client(t, kgo.TransactionalID("eos/gone"), kgo.TransactionTimeout(time.Minute))
	ctx := kafkatest.Ctx(t)
	if err := departed.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := departed.ProduceSync(ctx, &kgo.Record{Topic: e.Topics.Outcomes, Key: []byte{200}, Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	const n = 3
	for i := range n {
		e.ProduceRaw(t, e.Topics.Accepted, nil, []byte{byte(i)})
	}
	r, stop := runEOS(t, e, newCopier(t, nil), "a", 2*time.Second)
	kafkatest.Eventually(t, "the live instance's outputs readable past the departed one's transaction", func() bool {
		return len(e.ReadCommitted(t, e.Topics.Outcomes)) == n
	})
	if got := testutil.ToFloat64(r.Metrics().Fenced.WithLabelValues("test")); got != 1 {
		t.Errorf("%v transactions fenced, want 1", got)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if k := byOffset(e.ReadCommitted(t, e.Topics.Outcomes))[200]; k != 0 {
		t.Errorf("the departed instance's record is readable (%d), want it aborted", k)
	}
	// The departed instance, back, finds itself fenced.
	if err := departed.EndTransaction(ctx, kgo.TryCommit); err == nil {
		t.Error("the departed instance committed after it was fenced")
	}
}
