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

	"github.com/asyncinfer/asyncinfer/internal/partread"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

// readTopics reads the given topics of the deployment from their start to
// their last stable offsets, read_committed (as verify does: aborted
// records are not there, and a log that ends in a transaction marker is
// read to its end), and calls fn for every record.
func (d *deployment) readTopics(ctx context.Context, fn func(*kgo.Record), topics ...string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.brokers...))
	if err != nil {
		return err
	}
	ends, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, topics...)
	cl.Close()
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return err
	}
	ranges := map[string]map[int32]partread.Range{}
	ends.Each(func(o kadm.ListedOffset) {
		if ranges[o.Topic] == nil {
			ranges[o.Topic] = map[int32]partread.Range{}
		}
		ranges[o.Topic][o.Partition] = partread.Range{Start: -2, End: o.Offset}
	})
	return partread.Read(ctx, []kgo.Opt{kgo.SeedBrokers(env.brokers...)}, ranges,
		partread.Options{Idle: 20 * time.Second, MaxBytes: 16 << 20}, fn)
}

// codec is a codec of the deployment's topics, with the limits of the
// default configuration.
func (d *deployment) codec(ctx context.Context, t *testing.T) *schemas.Codec {
	t.Helper()
	src, err := sr.NewClient(sr.URLs(env.registry))
	if err != nil {
		t.Fatal(err)
	}
	codec, err := schemas.NewCodec(ctx, src, pipeline.NewTopics(d.prefix).Kinds(),
		schemas.MaxMessageBytes(1<<20*pipeline.DecodeLimitFactor))
	if err != nil {
		t.Fatal(err)
	}
	return codec
}

// trace logs, for request ids without an answer, every record that carries
// them in the pipeline's topics, so that a failure says where they stopped.
func (d *deployment) trace(ctx context.Context, t *testing.T, max int) {
	t.Helper()
	tp := pipeline.NewTopics(d.prefix)
	codec := d.codec(ctx, t)
	seen := map[string][]string{} // request id -> where
	answered := map[string]bool{}
	err := d.readTopics(ctx, func(r *kgo.Record) {
		id := ""
		switch r.Topic {
		case tp.Requests, tp.Accepted:
			if q, err := codec.DecodeRequest(ctx, r.Value); err == nil {
				id = q.RequestID
			}
		case tp.Outcomes, tp.Results:
			if res, err := codec.DecodeResult(ctx, r.Value); err == nil {
				id = res.RequestID
				if r.Topic == tp.Results {
					answered[id] = true
				}
			}
		default:
			if e, err := codec.DecodeStateEntry(ctx, r.Value); err == nil {
				// A changelog record holds one entry or several.
				for _, m := range e.More {
					where := fmt.Sprintf("%s/%d@%d", strings.TrimPrefix(r.Topic, d.prefix), r.Partition, r.Offset)
					seen[m.RequestID] = append(seen[m.RequestID], where)
				}
				id = e.RequestID
			}
		}
		if id != "" {
			seen[id] = append(seen[id], fmt.Sprintf("%s/%d@%d", strings.TrimPrefix(r.Topic, d.prefix), r.Partition, r.Offset))
		}
	}, tp.Requests, tp.Accepted, tp.Outcomes, tp.Results, tp.DedupState, tp.EmittedIDs)
	if err != nil {
		t.Log(err)
		return
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

// deadLetters reads the deployment's dead letters.
func (d *deployment) deadLetters(ctx context.Context, t *testing.T) []*schemas.DeadLetter {
	t.Helper()
	codec := d.codec(ctx, t)
	var out []*schemas.DeadLetter
	err := d.readTopics(ctx, func(r *kgo.Record) {
		dl, err := codec.DecodeDeadLetter(ctx, r.Value)
		if err != nil {
			t.Errorf("a dead letter that does not decode: %v", err)
			return
		}
		out = append(out, dl)
	}, pipeline.NewTopics(d.prefix).DLQ)
	if err != nil {
		t.Fatalf("read the dead letters: %v", err)
	}
	return out
}

// deadLetterReasons counts the deployment's dead letters by reason@stage.
func (d *deployment) deadLetterReasons(ctx context.Context, t *testing.T) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, dl := range d.deadLetters(ctx, t) {
		out[dl.Reason+"@"+dl.Stage]++
	}
	return out
}

// traceRepeats logs, for request ids answered more than once, where each
// answer and each outcome behind it is (topic, partition, offset), so that a
// failure says which stage wrote twice.
func (d *deployment) traceRepeats(ctx context.Context, t *testing.T, max int) {
	t.Helper()
	tp := pipeline.NewTopics(d.prefix)
	codec := d.codec(ctx, t)
	where := map[string][]string{}
	answers := map[string]int{}
	err := d.readTopics(ctx, func(r *kgo.Record) {
		res, err := codec.DecodeResult(ctx, r.Value)
		if err != nil {
			return
		}
		if r.Topic == tp.Results {
			answers[res.RequestID]++
		}
		where[res.RequestID] = append(where[res.RequestID], fmt.Sprintf("%s/%d@%d(%s)", strings.TrimPrefix(r.Topic, d.prefix), r.Partition, r.Offset, res.Status))
	}, tp.Outcomes, tp.Results)
	if err != nil {
		t.Log(err)
		return
	}
	n := 0
	for id, k := range answers {
		if k < 2 {
			continue
		}
		if n++; n > max {
			break
		}
		t.Logf("repeat: %s: %s", id, strings.Join(where[id], " "))
	}
}
