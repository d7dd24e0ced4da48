package pipeline_test

import (
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
			td, err := e.Admin.ListTopics(kafkatest.Ctx(t), e.Topics.Outcomes)
			if err != nil {
				t.Fatal(err)
			}
			outID := td[e.Topics.Outcomes].ID
			// The first two produce requests that carry outputs fail, every
			// partition in them, with tc.err.
			var failed atomic.Int32
			e.Cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
				e.Cluster.KeepControl()
				pr := req.(*kmsg.ProduceRequest)
				outputs := false
				for _, rt := range pr.Topics {
					outputs = outputs || rt.Topic == e.Topics.Outcomes || rt.TopicID == outID // by name or by id, as the version says
				}
				if !outputs || failed.Load() >= 2 {
					return nil, nil, false
				}
				failed.Add(1)
				resp := pr.ResponseKind().(*kmsg.ProduceResponse)
				for _, rt := range pr.Topics {
					st := kmsg.NewProduceResponseTopic()
					st.Topic, st.TopicID = rt.Topic, rt.TopicID
					for _, rp := range rt.Partitions {
						sp := kmsg.NewProduceResponseTopicPartition()
						sp.Partition, sp.ErrorCode, sp.BaseOffset = rp.Partition, tc.err.Code, -1
						st.Partitions = append(st.Partitions, sp)
					}
					resp.Topics = append(resp.Topics, st)
				}
				return resp, nil, true
			})
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
