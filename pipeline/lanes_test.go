package pipeline_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
	"github.com/asyncinfer/asyncinfer/pipeline"
)

// byTopic counts the records handed out per input topic and copies each to
// the "out" edge.
type byTopic struct {
	t  testing.TB
	mu sync.Mutex
	n  map[string]int
}

func (b *byTopic) Process(c *pipeline.Context, _ []byte) {
	b.mu.Lock()
	b.n[c.Record().Topic]++
	b.mu.Unlock()
	copyOut(b.t, c)
}

func (b *byTopic) count(topic string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n[topic]
}

// A stage with several inputs (infer's priority lanes) reads every one of
// them in one group and commits each, in both delivery modes; a lane paused
// for PauseLane keeps its records in Kafka while the others flow, and they
// come once it resumes.
func TestSeveralInputs(t *testing.T) {
	for _, eos := range []bool{false, true} {
		t.Run(fmt.Sprintf("exactly-once=%v", eos), func(t *testing.T) {
			e := kafkatest.New(t, 2)
			high := e.Graph.Lanes[0].Topic
			st := testStage(e, "g", false)
			st.Lanes = []string{high, e.Topics.Accepted}
			opts := []pipeline.Option{pipeline.CommitInterval(10 * time.Millisecond)}
			if eos {
				opts = append(opts, pipeline.ExactlyOnce(5*time.Second), pipeline.InstanceID("i"))
			}
			p := &byTopic{t: t, n: map[string]int{}}
			r := newRunner(t, e, st, p, opts...)
			r.Pauses().PauseTopic(pipeline.PauseLane, e.Topics.Accepted)
			stop := run(t, r)
			const n = 10
			for i := 0; i < n; i++ {
				e.ProduceRaw(t, high, []byte{byte(i)}, []byte{byte(i)})
				e.ProduceRaw(t, e.Topics.Accepted, []byte{byte(i)}, []byte{byte(i)})
			}
			kafkatest.Eventually(t, "the high lane served", func() bool { return p.count(high) == n })
			committed := func(topic string) int64 {
				var sum int64
				for _, c := range e.Committed(t, "g", topic) {
					sum += c
				}
				return sum
			}
			kafkatest.Eventually(t, "the high lane committed", func() bool { return committed(high) == n })
			if got := p.count(e.Topics.Accepted); got != 0 {
				t.Fatalf("%d records of the paused lane handed out", got)
			}
			r.Pauses().ResumeTopic(pipeline.PauseLane, e.Topics.Accepted)
			kafkatest.Eventually(t, "the other lane once resumed", func() bool {
				return p.count(e.Topics.Accepted) == n && committed(e.Topics.Accepted) == n
			})
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if got := len(e.ReadCommitted(t, e.Topics.Outcomes)); got != 2*n {
				t.Errorf("%d outputs, want %d", got, 2*n)
			}
		})
	}
}
