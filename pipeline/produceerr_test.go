package pipeline_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
	"github.com/asyncinfer/asyncinfer/pipeline"
)

// A produce error that is the broker's, not the record's, never makes a
// valid input a dead letter: the outputs are produced again. franz-go
// marks UNKNOWN_SERVER_ERROR (a broker restarting) and the sequence errors
// of a transaction cut short as final, and the runner took that as "the
// record is refused": one such answer dead-lettered every input whose
// outputs were in the request, in both modes.
func TestBrokerProduceErrorsAreNotDeadLettered(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  *kerr.Error
		eos  bool
	}{
		{"at-least-once/unknown server error", kerr.UnknownServerError, false},
		{"exactly-once/unknown server error", kerr.UnknownServerError, true},
		{"exactly-once/out of order sequence", kerr.OutOfOrderSequenceNumber, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := kafkatest.New(t, 1)
			const n = 6
			for i := range n {
				e.ProduceRaw(t, e.Topics.Accepted, nil, []byte{byte(i)})
			}
			// The first two produce requests that carry outputs fail, every
			// partition in them, with tc.err.
			failed := failProduces(t, e, e.Topics.Outcomes, 2, tc.err)
			opts := []pipeline.Option{pipeline.InstanceID("x")}
			if tc.eos {
				opts = append(opts, pipeline.ExactlyOnce(10*time.Second), pipeline.SessionTimeout(6*time.Second))
			}
			r := newRunner(t, e, testStage(e, "perr", true), newCopier(t, nil), opts...)
			stop := run(t, r)
			kafkatest.Eventually(t, "every input committed", func() bool {
				return e.Committed(t, "perr", e.Topics.Accepted)[0] == n
			})
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if dl := e.ReadCommitted(t, e.Topics.DLQ); len(dl) != 0 {
				for _, r := range dl {
					reason, _ := pipeline.Header(r.Headers, pipeline.HeaderReason)
					off, _ := pipeline.Header(r.Headers, pipeline.HeaderSourceOffset)
					t.Logf("dead letter of offset %s: %s", off, reason)
				}
				t.Errorf("%d dead letters, want none: the errors were the broker's", len(dl))
			}
			if got := failed.Load(); got != 2 {
				t.Errorf("%d produce requests failed, want 2: the outputs were not produced again", got)
			}
			copies := byOffset(e.ReadCommitted(t, e.Topics.Outcomes))
			for off := range int64(n) {
				if k := copies[off]; k == 0 || (tc.eos && k != 1) {
					t.Errorf("offset %d copied %d times, want %s", off, k, map[bool]string{true: "once", false: "at least once"}[tc.eos])
				}
			}
		})
	}
}

// A dead letter whose produce gets an error of the broker's is produced
// again: the stage does not stop (it did, on UNKNOWN_SERVER_ERROR).
func TestDeadLetterProduceErrorIsWaitedOut(t *testing.T) {
	e := kafkatest.New(t, 1)
	const n = 3
	for i := range n {
		e.ProduceRaw(t, e.Topics.Accepted, nil, []byte{byte(i)})
	}
	refused := failProduces(t, e, e.Topics.Outcomes, 1, kerr.MessageTooLarge)
	dlFailed := failProduces(t, e, e.Topics.DLQ, 1, kerr.UnknownServerError)
	r := newRunner(t, e, testStage(e, "dlerr", true), newCopier(t, nil))
	stop := run(t, r)
	kafkatest.Eventually(t, "every input committed", func() bool {
		return e.Committed(t, "dlerr", e.Topics.Accepted)[0] == n
	})
	if err := stop(); err != nil {
		t.Fatalf("the stage stopped: %v", err)
	}
	if refused.Load() != 1 || dlFailed.Load() != 1 {
		t.Fatalf("%d output and %d dead letter produces failed, want 1 and 1: the test did not inject its errors", refused.Load(), dlFailed.Load())
	}
	dl := e.ReadCommitted(t, e.Topics.DLQ)
	offs := map[string]int{}
	for _, r := range dl {
		off, _ := pipeline.Header(r.Headers, pipeline.HeaderSourceOffset)
		offs[string(off)]++
	}
	// The refused request held the first outputs (at least offset 0); every
	// input of it is dead-lettered once the broker takes dead letters again.
	if offs["0"] == 0 {
		t.Errorf("dead letters by source offset %v: offset 0, whose output was refused, is not among them", offs)
	}
	copies := byOffset(e.ReadCommitted(t, e.Topics.Outcomes))
	for off := range int64(n) {
		if copies[off] == 0 && offs[fmt.Sprint(off)] == 0 {
			t.Errorf("offset %d neither copied nor dead-lettered", off)
		}
	}
}

// failProduces makes the first k produce requests that carry topic fail,
// every partition in them, with code; it returns how many failed so far.
func failProduces(t *testing.T, e *kafkatest.Env, topic string, k int32, code *kerr.Error) *atomic.Int32 {
	t.Helper()
	td, err := e.Admin.ListTopics(kafkatest.Ctx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	id := td[topic].ID
	var failed atomic.Int32
	e.Cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		e.Cluster.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		carries := false
		for _, rt := range pr.Topics {
			carries = carries || rt.Topic == topic || rt.TopicID == id // by name or by id, as the version says
		}
		if !carries || failed.Load() >= k {
			return nil, nil, false
		}
		failed.Add(1)
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range pr.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode, sp.BaseOffset = rp.Partition, code.Code, -1
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	return &failed
}
