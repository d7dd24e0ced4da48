package suite

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/schemas"
)

// hopChain is where a run's requests pass, for the time each hop takes:
// the topics at each point of the chain (several at one point: the lanes),
// and the name of the hop from each point to the next.
type hopChain struct {
	points [][]string
	names  []string // len(points) - 1
	// outcomes: the point (a topic of points) whose results carry infer's
	// own timings (its wait for the model and the call), "" for the raw
	// chain.
	outcomes string
}

// Hop figures, in RunResult.Hops, ms, means over the run's requests.
const (
	hopModelWait = "infer: wait for the model"
	hopModelCall = "infer: the call"
)

// hopTimes reads the chain's topics back after a run and measures each
// hop by its output record's timestamp less its input's, over the keys
// both hold (a request keeps its key along the chain, raw or not): the
// mean and the p99 (hopStats). Record timestamps are whole milliseconds,
// so only means over many requests say anything fine (the difference of
// two truncated timestamps has no bias), and a p99 reads ±1 ms. With
// outcomes, infer's own timings add the mean wait for the model (enqueued
// to call) and the mean call.
func (e *env) hopTimes(ctx context.Context, ch hopChain) (means, p99s map[string]Num, err error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var codec *schemas.Codec
	if ch.outcomes != "" {
		var err error
		if codec, err = schemas.NewCodec(ctx, e.reg, map[string]schemas.Kind{ch.outcomes: schemas.KindResult}); err != nil {
			return nil, nil, fmt.Errorf("hops: %w", err)
		}
	}
	var wait, call float64
	served := 0
	firsts := make([]map[string]int64, len(ch.points))
	for i, ts := range ch.points {
		firsts[i] = map[string]int64{}
		for _, t := range ts {
			var derr error
			err := e.readTopic(ctx, t, func(r *kgo.Record) {
				if was, ok := firsts[i][string(r.Key)]; !ok || r.Timestamp.UnixMilli() < was {
					firsts[i][string(r.Key)] = r.Timestamp.UnixMilli()
				}
				if t != ch.outcomes || derr != nil {
					return
				}
				res, err := codec.DecodeResult(ctx, r.Value)
				if err != nil {
					derr = err
					return
				}
				if res.Status == schemas.StatusSucceeded {
					wait += res.Timings.BatchWaitMs
					call += res.Timings.InferenceMs
					served++
				}
			})
			if err == nil {
				err = derr
			}
			if err != nil {
				return nil, nil, fmt.Errorf("hops: %s: %w", t, err)
			}
		}
	}
	means, p99s = map[string]Num{}, map[string]Num{}
	for i, name := range ch.names {
		m, p99, ok := hopStats(firsts[i], firsts[i+1])
		if !ok {
			return nil, nil, fmt.Errorf("hops: no request passed from %v to %v", ch.points[i], ch.points[i+1])
		}
		means[name], p99s[name] = Num(m), Num(p99)
	}
	if served > 0 {
		means[hopModelWait], means[hopModelCall] = Num(wait/float64(served)), Num(call/float64(served))
	}
	return means, p99s, nil
}

// hopStats is the mean and the p99 of to[k] − from[k] (ms) over the keys
// both hold; ok false when they share none.
func hopStats(from, to map[string]int64) (mean, p99 float64, ok bool) {
	var ds []float64
	for k, t0 := range from {
		if t1, ok := to[k]; ok {
			ds = append(ds, float64(t1-t0))
		}
	}
	if len(ds) == 0 {
		return 0, 0, false
	}
	return meanOf(ds), quantile(ds, 0.99), true
}

func meanOf(xs []float64) float64 {
	var sum float64
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}

// quantile is the q-quantile of xs (nearest rank), which it sorts.
func quantile(xs []float64, q float64) float64 {
	slices.Sort(xs)
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}

// readTopic calls fn with every record of topic, from its start to the end
// it has when called.
func (e *env) readTopic(ctx context.Context, topic string, fn func(*kgo.Record)) error {
	ends, err := e.adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return err
	}
	if err := ends.Error(); err != nil {
		return err
	}
	left := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			left[o.Partition] = o.Offset
		}
	})
	if len(left) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(append(slices.Clone(e.kopts), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%d partitions not read to their end: %w", len(left), err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			fn(r)
			if end, ok := left[r.Partition]; ok && r.Offset+1 >= end {
				delete(left, r.Partition)
			}
		})
	}
	return nil
}
