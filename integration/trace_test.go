package integration

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

// trace logs, for request ids without an answer, every record that carries
// them in the pipeline's topics, so that a failure says where they stopped.
func (d *deployment) trace(ctx context.Context, t *testing.T, max int) {
	t.Helper()
	tp := pipeline.NewTopics(d.prefix)
	src, err := sr.NewClient(sr.URLs(env.registry))
	if err != nil {
		t.Log(err)
		return
	}
	codec, err := schemas.NewCodec(ctx, src, tp.Kinds())
	if err != nil {
		t.Log(err)
		return
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.brokers...))
	if err != nil {
		t.Log(err)
		return
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	seen := map[string][]string{} // request id -> where
	answered := map[string]bool{}
	for _, topic := range []string{tp.Requests, tp.Accepted, tp.Outcomes, tp.Results, tp.DedupState, tp.EmittedIDs} {
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			t.Log(err)
			return
		}
		parts := map[int32]kgo.Offset{}
		left := 0
		ends.Each(func(o kadm.ListedOffset) {
			if o.Offset > 0 {
				parts[o.Partition] = kgo.NewOffset().AtStart()
				left++
			}
		})
		if left == 0 {
			continue
		}
		rc, err := kgo.NewClient(kgo.SeedBrokers(env.brokers...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}))
		if err != nil {
			t.Log(err)
			return
		}
		done := map[int32]bool{}
		deadline := time.Now().Add(20 * time.Second)
		for len(done) < left && time.Now().Before(deadline) {
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			fs := rc.PollFetches(pctx)
			cancel()
			fs.EachRecord(func(r *kgo.Record) {
				end, _ := ends.Lookup(topic, r.Partition)
				if r.Offset >= end.Offset-1 {
					done[r.Partition] = true
				}
				id := ""
				switch topic {
				case tp.Requests, tp.Accepted:
					if q, err := codec.DecodeRequest(ctx, r.Value); err == nil {
						id = q.RequestID
					}
				case tp.Outcomes, tp.Results:
					if res, err := codec.DecodeResult(ctx, r.Value); err == nil {
						id = res.RequestID
						if topic == tp.Results {
							answered[id] = true
						}
					}
				default:
					if e, err := codec.DecodeStateEntry(ctx, r.Value); err == nil {
						id = e.RequestID
					}
				}
				if id != "" {
					seen[id] = append(seen[id], fmt.Sprintf("%s/%d@%d", strings.TrimPrefix(topic, d.prefix), r.Partition, r.Offset))
				}
			})
		}
		rc.Close()
	}
	var lost []string
	for id, where := range seen {
		if !answered[id] && strings.HasPrefix(where[0], "requests/") {
			lost = append(lost, id)
		}
	}
	sort.Strings(lost)
	t.Logf("trace: %d request ids without a result", len(lost))
	for i, id := range lost {
		if i == max {
			break
		}
		t.Logf("trace: %s: %s", id, strings.Join(seen[id], " "))
	}
}

// deadLetterReasons counts the deployment's dead letters by reason.
func (d *deployment) deadLetterReasons(ctx context.Context, t *testing.T) map[string]int {
	t.Helper()
	tp := pipeline.NewTopics(d.prefix)
	src, err := sr.NewClient(sr.URLs(env.registry))
	if err != nil {
		t.Fatal(err)
	}
	codec, err := schemas.NewCodec(ctx, src, tp.Kinds())
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, tp.DLQ)
	if err != nil {
		t.Fatal(err)
	}
	parts := map[int32]kgo.Offset{}
	left := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			parts[o.Partition] = kgo.NewOffset().AtStart()
			left[o.Partition] = o.Offset
		}
	})
	out := map[string]int{}
	if len(left) == 0 {
		return out
	}
	rc, err := kgo.NewClient(kgo.SeedBrokers(env.brokers...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{tp.DLQ: parts}))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	for len(left) > 0 && ctx.Err() == nil {
		rc.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			if dl, err := codec.DecodeDeadLetter(ctx, r.Value); err == nil {
				out[dl.Reason+"@"+dl.Stage]++
			}
			if r.Offset >= left[r.Partition]-1 {
				delete(left, r.Partition)
			}
		})
	}
	return out
}
