package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/internal/stack"
	"github.com/asyncinfer/asyncinfer/pipeline"
)

func newVerifyCmd() *cobra.Command {
	var (
		brokers  []string
		registry string
		dataDir  string
		prefix   string
		reply    []string
		format   string
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Recount a pipeline's topics per request id: lost, conflicting, repeated",
		Long: `verify reads the request, result and dead-letter topics from the start, in a
process of its own, and matches every request id with its answers:

  lost         requests with no answer although the pipeline is settled
  pending      requests with no answer while a stage still has work
  conflicting  request ids whose answers disagree
  repeated     request ids answered more than once, identically

It exits with status 1 when lost, conflicting or malformed_without_dlq is not 0.`,
		Example: `  # the topics of a demo run kept with --data-dir
  asyncinfer demo --requests 20000 --data-dir /tmp/ai && asyncinfer verify --data-dir /tmp/ai

  # a pipeline on a cluster
  asyncinfer verify --brokers 127.0.0.1:9092 --registry http://127.0.0.1:8081`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "json" && format != "text" {
				return fmt.Errorf("--report %q: want json or text", format)
			}
			ctx := cmd.Context()
			switch {
			case dataDir != "" && len(brokers) > 0:
				return errors.New("--data-dir and --brokers exclude each other: --data-dir opens a demo's embedded broker")
			case dataDir != "":
				if _, err := os.Stat(dataDir); err != nil {
					return fmt.Errorf("--data-dir: %w", err)
				}
				e, err := startEmbedded(embeddedConfig{dataDir: dataDir})
				if err != nil {
					return err
				}
				defer e.Close()
				brokers, registry = e.brokers(), e.url
			case len(brokers) == 0:
				return errors.New("give --brokers (and --registry) of a cluster, or --data-dir of a demo run")
			case registry == "":
				return errors.New("--registry is required with --brokers: results are Avro with schema ids")
			}
			rep, err := verify(ctx, brokers, registry, prefix, reply)
			if err != nil {
				return err
			}
			if err := printReport(cmd.OutOrStdout(), rep, format); err != nil {
				return err
			}
			if rep.Lost > 0 || rep.Conflicting > 0 || rep.MalformedWithoutDLQ > 0 {
				return fmt.Errorf("verify: lost=%d conflicting=%d malformed_without_dlq=%d", rep.Lost, rep.Conflicting, rep.MalformedWithoutDLQ)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringSliceVar(&brokers, "brokers", nil, "seed brokers of the cluster")
	fs.StringVar(&registry, "registry", "", "schema registry URL")
	fs.StringVar(&dataDir, "data-dir", "", "data directory of a demo run (demo --data-dir)")
	fs.StringVar(&prefix, "topic-prefix", pipeline.DefaultTopicPrefix, "prefix of every topic name")
	fs.StringSliceVar(&reply, "reply-topics", nil, "reply topics to read besides the results topic")
	fs.StringVar(&format, "report", "text", "report format: json or text")
	return cmd
}

// verify reads the topics and recounts.
func verify(ctx context.Context, brokers []string, registry, prefix string, reply []string) (report, error) {
	t := pipeline.NewTopics(prefix)
	codec, err := newCodec(ctx, registry, t, reply)
	if err != nil {
		return report{}, err
	}
	tl := newTally()
	err = readTopics(ctx, brokers, topicsToRead(t, reply), func(r *kgo.Record) {
		switch r.Topic {
		case t.Requests:
			tl.addRequest(ctx, codec, r.Topic, r.Partition, r.Offset, r.Value)
		case t.DLQ:
			if d, err := codec.DecodeDeadLetter(ctx, r.Value); err == nil {
				tl.addDeadLetter(d)
			}
		default:
			if res, err := codec.DecodeResult(ctx, r.Value); err == nil {
				tl.addResult(res)
			}
		}
	})
	if err != nil {
		return report{}, err
	}
	settled, err := groupsSettled(ctx, brokers, stack.Groups(prefix))
	if err != nil {
		return report{}, err
	}
	return tl.report(settled), nil
}

// readTopics reads every partition of topics from the start to the end
// offsets they had when it began, read_committed.
func readTopics(ctx context.Context, brokers []string, topics []string, fn func(*kgo.Record)) error {
	adm, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return err
	}
	ends, err := kadm.NewClient(adm).ListCommittedOffsets(ctx, topics...)
	adm.Close()
	if err != nil {
		return fmt.Errorf("list end offsets: %w", err)
	}
	want := map[string]map[int32]kgo.Offset{}
	left := map[string]int64{} // "topic/partition" -> end offset
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil || o.Offset <= 0 {
			return
		}
		if want[o.Topic] == nil {
			want[o.Topic] = map[int32]kgo.Offset{}
		}
		want[o.Topic][o.Partition] = kgo.NewOffset().AtStart()
		left[fmt.Sprintf("%s/%d", o.Topic, o.Partition)] = o.Offset
	})
	if err := ends.Error(); err != nil {
		return fmt.Errorf("list end offsets: %w", err)
	}
	if len(left) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumePartitions(want),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords(), kgo.FetchMaxWait(250*time.Millisecond))
	if err != nil {
		return err
	}
	defer cl.Close()
	idle := time.Now()
	for len(left) > 0 {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			n++
			k := fmt.Sprintf("%s/%d", r.Topic, r.Partition)
			end, ok := left[k]
			if !ok || r.Offset >= end {
				return
			}
			if r.Offset >= end-1 {
				delete(left, k)
			}
			if !r.Attrs.IsControl() {
				fn(r)
			}
		})
		if n > 0 {
			idle = time.Now()
		} else if time.Since(idle) > 3*time.Second {
			return nil // the rest of the tail is not readable (aborted or compacted)
		}
	}
	return nil
}

// groupsSettled reports whether every stage group exists and has consumed
// and committed everything.
func groupsSettled(ctx context.Context, brokers []string, gs []string) (bool, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return false, err
	}
	defer cl.Close()
	lags, err := kadm.NewClient(cl).Lag(ctx, gs...)
	if err != nil {
		return false, fmt.Errorf("group lag: %w", err)
	}
	for _, g := range gs {
		l, ok := lags[g]
		if !ok || l.Error() != nil || len(l.Lag) == 0 {
			return false, nil
		}
		if l.Lag.Total() > 0 {
			return false, nil
		}
	}
	return true, nil
}

func printReport(w io.Writer, r report, format string) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	rows := []struct {
		k string
		v any
	}{
		{"requests", r.Requests}, {"unique", r.Unique}, {"duplicates", r.Duplicates}, {"malformed", r.Malformed},
		{"poisoned", r.Poisoned}, {"succeeded", r.Results.Succeeded}, {"failed", r.Results.Failed},
		{"expired", r.Results.Expired}, {"rejected", r.Results.Rejected}, {"duplicate", r.Results.Duplicate},
		{"dlq", r.DLQ}, {"malformed_without_dlq", r.MalformedWithoutDLQ},
		{"lost", r.Lost}, {"pending", r.Pending}, {"conflicting", r.Conflicting}, {"repeated", r.Repeated},
		{"latency_ms p50/p95/p99/max", fmt.Sprintf("%.1f / %.1f / %.1f / %.1f", r.LatencyMs.P50, r.LatencyMs.P95, r.LatencyMs.P99, r.LatencyMs.Max)},
	}
	if r.ModelCalls > 0 { // what only the demo's own process knows
		rows = append(rows[:len(rows)-1], []struct {
			k string
			v any
		}{{"model_calls", r.ModelCalls}, {"mean_batch_size", r.MeanBatchSize}, {"throughput_rps", r.ThroughputRPS},
			rows[len(rows)-1], {"heap_bytes", r.HeapBytes}}...)
	}
	for _, row := range rows {
		if _, err := fmt.Fprintf(w, "%-28s %v\n", row.k, row.v); err != nil {
			return err
		}
	}
	return nil
}
