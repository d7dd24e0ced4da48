// Command modes is the measuring half of bench/modes.sh, which compares the
// two delivery modes (at-least-once, exactly-once) on a real broker. It
// reads a pipeline's results topic read_committed, as any client of the
// pipeline does, and times each request id's first result at the moment it
// becomes visible to that reader.
//
// It exists because the latency that results carry (timings.end_to_end_ms,
// what asyncinfer verify reports) is taken by infer when the model answers:
// it leaves out infer's produce and commit, the emit hop, and emit's commit.
// Exactly-once mode spends its cost in exactly those steps (a result is
// visible only once emit's transaction commits), so a fair comparison needs
// the time a client sees.
//
//	go run ./bench/modes --brokers 127.0.0.1:9092 --registry http://127.0.0.1:18081 \
//	    --prefix bench.x. --want 20000 --ready /tmp/ready
//
// It prints one JSON object: counts, the span from the earliest created_at
// to the last result seen, completed results per second over that span, and
// percentiles of three durations per request id:
//
//	visible_ms   created_at -> the result is read here (read_committed)
//	infer_ms     created_at -> infer answered (the result's end_to_end_ms)
//	commit_ms    the result record's timestamp (emit produced it) -> read here
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

type percentiles struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

type report struct {
	Complete       bool           `json:"complete"`
	Want           int            `json:"want"`
	Records        int            `json:"records"`
	Distinct       int            `json:"distinct"`
	Undecodable    int            `json:"undecodable"`
	Statuses       map[string]int `json:"statuses"`
	FirstCreatedMs int64          `json:"first_created_ms"`
	LastVisibleMs  int64          `json:"last_visible_ms"`
	SpanS          float64        `json:"span_s"`
	ThroughputRPS  float64        `json:"throughput_rps"`
	VisibleMs      percentiles    `json:"visible_ms"`
	InferMs        percentiles    `json:"infer_ms"`
	CommitMs       percentiles    `json:"commit_ms"`
}

func main() {
	var (
		brokers  = flag.String("brokers", "127.0.0.1:9092", "seed brokers, comma-separated")
		registry = flag.String("registry", "http://127.0.0.1:18081", "schema registry URL")
		prefix   = flag.String("prefix", pipeline.DefaultTopicPrefix, "the pipeline's topics.prefix")
		want     = flag.Int("want", 0, "stop after this many distinct request ids (0: at --timeout)")
		timeout  = flag.Duration("timeout", 5*time.Minute, "give up after this long")
		ready    = flag.String("ready", "", "create this file once the reader is fetching")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := watch(ctx, strings.Split(*brokers, ","), *registry, *prefix, *want, *timeout, *ready)
	if err != nil {
		fmt.Fprintln(os.Stderr, "modes:", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		fmt.Fprintln(os.Stderr, "modes:", err)
		os.Exit(1)
	}
	if !rep.Complete {
		os.Exit(2)
	}
}

func watch(ctx context.Context, brokers []string, registryURL, prefix string, want int, timeout time.Duration,
	ready string) (report, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	topic := pipeline.NewTopics(prefix).Results
	reg, err := sr.NewClient(sr.URLs(registryURL))
	if err != nil {
		return report{}, fmt.Errorf("schema registry: %w", err)
	}
	// Decoding needs no binding: the schema id in each record is looked up.
	codec, err := schemas.NewCodec(ctx, reg, nil)
	if err != nil {
		return report{}, err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return report{}, err
	}
	defer cl.Close()
	// The topic must exist before the load starts, or the first results
	// would be timed when the reader finds the topic, not when they appear.
	td, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err == nil {
		err = td.Error()
	}
	if err == nil && len(td[topic].Partitions) == 0 {
		err = errors.New("no partitions")
	}
	if err != nil {
		return report{}, fmt.Errorf("results topic %s: %w", topic, err)
	}

	rep := report{Want: want, Statuses: map[string]int{}}
	seen := map[string]bool{}
	var visible, inferred, commit []float64
	announced := ready == ""
	for want == 0 || len(seen) < want {
		pctx, pcancel := context.WithTimeout(ctx, 250*time.Millisecond)
		fs := cl.PollFetches(pctx)
		pcancel()
		now := time.Now()
		if ctx.Err() != nil {
			break
		}
		if !announced {
			// One poll has gone out: partitions are assigned and
			// offsets reset, so a result produced from now on is read
			// within one fetch of its commit.
			if err := os.WriteFile(ready, nil, 0o644); err != nil {
				return report{}, err
			}
			announced = true
		}
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				fmt.Fprintf(os.Stderr, "modes: fetch %s/%d: %v\n", t, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			rep.Records++
			res, err := codec.DecodeResult(ctx, r.Value)
			if err != nil {
				rep.Undecodable++
				return
			}
			if seen[res.RequestID] {
				return
			}
			seen[res.RequestID] = true
			rep.Statuses[string(res.Status)]++
			if res.CreatedAtMs <= 0 {
				return
			}
			if rep.FirstCreatedMs == 0 || res.CreatedAtMs < rep.FirstCreatedMs {
				rep.FirstCreatedMs = res.CreatedAtMs
			}
			rep.LastVisibleMs = now.UnixMilli()
			visible = append(visible, ms(now.Sub(time.UnixMilli(res.CreatedAtMs))))
			inferred = append(inferred, res.Timings.EndToEndMs)
			commit = append(commit, ms(now.Sub(r.Timestamp)))
		})
	}
	rep.Distinct = len(seen)
	rep.Complete = want > 0 && len(seen) >= want
	if rep.FirstCreatedMs > 0 && rep.LastVisibleMs > rep.FirstCreatedMs {
		rep.SpanS = float64(rep.LastVisibleMs-rep.FirstCreatedMs) / 1000
		rep.ThroughputRPS = math.Round(float64(len(visible))/rep.SpanS*10) / 10
	}
	rep.VisibleMs, rep.InferMs, rep.CommitMs = pct(visible), pct(inferred), pct(commit)
	return rep, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// pct uses the nearest-rank definition, as asyncinfer verify does, so that
// the two sets of numbers compare.
func pct(v []float64) percentiles {
	if len(v) == 0 {
		return percentiles{}
	}
	sort.Float64s(v)
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(v)))) - 1
		return math.Round(v[max(0, min(i, len(v)-1))]*100) / 100
	}
	return percentiles{P50: at(0.50), P95: at(0.95), P99: at(0.99), Max: math.Round(v[len(v)-1]*100) / 100}
}
