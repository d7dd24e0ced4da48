package dedup_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/stages/dedup"
)

// lateOnce hands one record to dedup only after its unit has timed out and
// was aborted (its Done closed), the first time it is delivered, so that the
// unit (with the records dedup did handle) is aborted.
type lateOnce struct {
	*dedup.Stage
	offset int64
	once   sync.Once
	wg     sync.WaitGroup
}

func (l *lateOnce) Process(c *pipeline.Context, h *schemas.RequestHead) {
	late := false
	if c.Record().Offset == l.offset {
		l.once.Do(func() { late = true })
	}
	if late {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			<-c.Done() // its unit aborted: the work is stale
			l.Stage.Process(c, h)
		}()
		return
	}
	l.Stage.Process(c, h)
}

// In exactly-once mode, a request whose unit was aborted after dedup had
// staged its idempotency key is, when read again, accepted once — not
// answered DUPLICATE of itself — and a later request with the same key is
// the duplicate. read_committed readers see one accepted copy of each.
func TestEOSRequestReadAgainAfterAbortIsAcceptedOnce(t *testing.T) {
	e := kafkatest.New(t, 1)
	orig := kafkatest.Request("orig", "key-1", "m")
	other := kafkatest.Request("other", "key-2", "m")
	e.Produce(t, orig, other) // offsets 0 and 1: one unit

	const timeout = 300 * time.Millisecond
	st, err := dedup.New(dedup.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &lateOnce{Stage: st, offset: 1}
	r, err := pipeline.New(e.Stage(t, "dedup"), dedup.Decoder(e.Codec), h,
		e.Opts(pipeline.InstanceID("d0"), pipeline.ExactlyOnce(timeout))...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		h.wg.Wait() // the late record reaches dedup (stale) before the runner stops
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	kafkatest.Eventually(t, "the first unit aborted", func() bool {
		return testutil.ToFloat64(r.Metrics().Aborts.WithLabelValues("dedup")) >= 1
	})
	kafkatest.Eventually(t, "both accepted", func() bool { return len(e.ReadCommitted(t, e.Topics.Accepted)) == 2 })
	dup := kafkatest.Request("dup", "key-1", "m")
	e.Produce(t, dup)
	kafkatest.Eventually(t, "the duplicate answered", func() bool { return len(e.ReadCommitted(t, e.Topics.Outcomes)) == 1 })

	accepted := map[string]int{}
	for _, rec := range e.ReadCommitted(t, e.Topics.Accepted) {
		req, err := e.Codec.DecodeRequest(context.Background(), rec.Value)
		if err != nil {
			t.Fatal(err)
		}
		accepted[req.RequestID]++
	}
	if accepted["orig"] != 1 || accepted["other"] != 1 || len(accepted) != 2 {
		t.Errorf("accepted (read_committed) = %v, want orig and other once each", accepted)
	}
	if n := len(e.ReadAll(t, e.Topics.Accepted)); n <= 2 {
		t.Errorf("read_uncommitted holds %d accepted records: the aborted unit's copy of orig should be there", n)
	}
	outs := e.ReadCommitted(t, e.Topics.Outcomes)
	res, err := e.Codec.DecodeResult(context.Background(), outs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	if res.RequestID != "dup" || res.Status != schemas.StatusDuplicate || res.OriginalRequestID != "orig" {
		t.Errorf("outcome %+v, want dup DUPLICATE of orig", res)
	}
}
