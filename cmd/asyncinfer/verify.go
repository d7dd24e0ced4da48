package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/admin"
	"github.com/asyncinfer/asyncinfer/config"
	"github.com/asyncinfer/asyncinfer/internal/partread"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

func newVerifyCmd() *cobra.Command {
	var (
		fl      *config.Flags
		dataDir string
		format  string
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Recount a pipeline's topics per request id: lost, conflicting, repeated",
		Long: `verify reads the request, result and dead-letter topics from the start, in a
process of its own, and matches every request id with its answers:

  lost         requests with no answer although the pipeline is settled
  pending      requests with no answer while a stage still has work, or a
               transaction writing answers is still open
  conflicting  request ids whose answers disagree
  repeated     request ids answered more than once, identically
  why          the answers that are not SUCCEEDED or DUPLICATE, by status
               and reason (or error code): EXPIRED objective_passed, ...

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
			cfg, log, err := loadConfig(fl, cmd)
			if err != nil {
				return err
			}
			switch {
			case dataDir != "" && len(cfg.Kafka.Brokers) > 0:
				return errors.New("--data-dir and --brokers exclude each other: --data-dir opens a demo's embedded broker")
			case dataDir != "":
				if _, err := os.Stat(dataDir); err != nil {
					return fmt.Errorf("--data-dir: %w", err)
				}
				cfg.DataDir = dataDir
			case len(cfg.Kafka.Brokers) == 0:
				return errors.New("give --brokers (and --registry) of a cluster, or --data-dir of a demo run")
			}
			c, err := connect(ctx, cfg, dataDir != "", log)
			if err != nil {
				return err
			}
			defer c.Close()
			rep, err := verify(ctx, c, cfg.Topics.Prefix, cfg.Emit.ReplyTopics, cfg.CodecOptions(), cmd.ErrOrStderr())
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
	fl = config.BindSomeFlags(fs, config.ConnectionSettings)
	fs.StringVar(&dataDir, "data-dir", "", "data directory of a demo run (demo --data-dir)")
	fs.StringVar(&format, "report", "text", "report format: json or text")
	return cmd
}

// verify reads the topics and recounts.
//
// The order makes "lost" exact: the requests topic's end offsets are taken
// first, then whether every stage group is settled (committed up to the last
// stable offset; the groups' commits are fetched before the end offsets they
// are compared with), then the answer topics' end offsets. A settled pipeline
// has written the answers to every request before the first snapshot by the
// time the answer topics' ends are taken, so an unanswered request below the
// first snapshot is lost, not late.
func verify(ctx context.Context, c *cluster, prefix string, reply []string, codecOpts []schemas.Option, progress io.Writer) (report, error) {
	t := pipeline.NewTopics(prefix)
	codec, err := schemas.NewCodec(ctx, c.registry, t.Kinds(reply...), codecOpts...)
	if err != nil {
		return report{}, fmt.Errorf("schema registry: %w", err)
	}
	reqEnds, err := endOffsets(ctx, c.kopts, t.Requests)
	if err != nil {
		return report{}, err
	}
	settled, err := groupsSettled(ctx, c.kopts, groupsOf(prefix))
	if err != nil {
		return report{}, err
	}
	answerEnds, err := endOffsets(ctx, c.kopts, topicsToRead(t, reply)[1:]...)
	if err != nil {
		return report{}, err
	}
	if settled {
		// Exactly-once, a transaction's markers land on its partitions one
		// by one: the group's offsets can be committed before the answers
		// of the same transaction are visible (after a broker's restart,
		// its coordinator writes the markers seconds later). Settled means
		// no answer topic has a transaction in flight: its last stable
		// offset is its high watermark.
		settled, err = noOpenTransactions(ctx, c.kopts, answerEnds)
		if err != nil {
			return report{}, err
		}
	}
	for topic, ps := range answerEnds {
		reqEnds[topic] = ps
	}
	tl := newTally()
	err = readTopics(ctx, c.kopts, reqEnds, progress, func(r *kgo.Record) {
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
	return tl.report(settled), nil
}

// endOffsets lists the topics' last stable offsets (the end a read_committed
// reader reaches).
func endOffsets(ctx context.Context, kopts []kgo.Opt, topics ...string) (kadm.ListedOffsets, error) {
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, topics...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}
	return ends, nil
}

// noOpenTransactions reports whether every partition of lsos (last stable
// offsets) has reached its high watermark: no transaction is open on it.
func noOpenTransactions(ctx context.Context, kopts []kgo.Opt, lsos kadm.ListedOffsets) (bool, error) {
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return false, err
	}
	defer cl.Close()
	var topics []string
	for topic := range lsos {
		topics = append(topics, topic)
	}
	hwms, err := kadm.NewClient(cl).ListEndOffsets(ctx, topics...)
	if err == nil {
		err = hwms.Error()
	}
	if err != nil {
		return false, fmt.Errorf("list end offsets: %w", err)
	}
	open := false
	lsos.Each(func(o kadm.ListedOffset) {
		if h, ok := hwms.Lookup(o.Topic, o.Partition); ok && h.Offset > o.Offset {
			open = true
		}
	})
	return !open, nil
}

// readTopics reads every partition in ends from its start to its end offset,
// read_committed. Every second it writes how far it got to progress (nil:
// nowhere).
func readTopics(ctx context.Context, kopts []kgo.Opt, ends kadm.ListedOffsets, progress io.Writer, fn func(*kgo.Record)) error {
	ranges := map[string]map[int32]partread.Range{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil || o.Offset <= 0 {
			return
		}
		if ranges[o.Topic] == nil {
			ranges[o.Topic] = map[int32]partread.Range{}
		}
		ranges[o.Topic][o.Partition] = partread.Range{Start: -2, End: o.Offset}
	})
	o := partread.Options{
		// Every record up to the end offsets (transaction markers included,
		// as control records) is readable from these delete-policy topics:
		// a partition that stops short means something is wrong, and a
		// recount of part of the topics would report answered requests as
		// lost.
		Idle:     15 * time.Second,
		MaxBytes: 16 << 20,
	}
	if progress != nil {
		o.Progress = func(read int64, left int) {
			fmt.Fprintf(progress, "read %d records, %d partitions to go\n", read, left)
		}
	}
	return partread.Read(ctx, kopts, ranges, o, fn)
}

// groupsSettled reports whether every stage group exists and has consumed
// and committed everything.
// Lag is measured to the last stable offset, as read_committed stages see it.
func groupsSettled(ctx context.Context, kopts []kgo.Opt, gs []string) (bool, error) {
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return false, err
	}
	defer cl.Close()
	rows, err := admin.Lag(ctx, kadm.NewClient(cl), gs...)
	if err != nil {
		return false, fmt.Errorf("group lag: %w", err)
	}
	// A transactional stage that consumed everything sits one offset short
	// of the LSO per commit marker: markers are not work.
	if err := admin.DiscountMarkers(ctx, kopts, rows, 10000); err != nil {
		return false, fmt.Errorf("group lag: %w", err)
	}
	seen := map[string]bool{}
	for _, r := range rows {
		seen[r.Group] = true
		if r.Lag > 0 {
			return false, nil
		}
	}
	for _, g := range gs {
		if !seen[g] {
			return false, nil
		}
	}
	return true, nil
}

// whyLine is why, the most first: "EXPIRED objective_passed 80, FAILED
// INFERENCE_FAILED 3"; "-" when empty.
func whyLine(why map[string]int) string {
	if len(why) == 0 {
		return "-"
	}
	keys := slices.Collect(maps.Keys(why))
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(why[b]-why[a], strings.Compare(a, b)) })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, why[k])
	}
	return strings.Join(parts, ", ")
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
		{"why not succeeded", whyLine(r.Why)},
		{"dlq", r.DLQ}, {"malformed_without_dlq", r.MalformedWithoutDLQ},
		{"lost", r.Lost}, {"pending", r.Pending}, {"conflicting", r.Conflicting}, {"repeated", r.Repeated},
		{"latency_ms p50/p95/p99/max", fmt.Sprintf("%.1f / %.1f / %.1f / %.1f", r.LatencyMs.P50, r.LatencyMs.P95, r.LatencyMs.P99, r.LatencyMs.Max)},
	}
	if r.ModelCalls > 0 { // what only the demo's own process knows
		lat := func(l latency) string { return fmt.Sprintf("%.1f / %.1f / %.1f / %.1f", l.P50, l.P95, l.P99, l.Max) }
		more := []struct {
			k string
			v any
		}{{"model_calls", r.ModelCalls}, {"mean_batch_size", r.MeanBatchSize}, {"throughput_rps", r.ThroughputRPS},
			rows[len(rows)-1]}
		if r.SucceededLatencyMs != nil {
			more = append(more, struct {
				k string
				v any
			}{"succeeded p50/p95/p99/max", lat(*r.SucceededLatencyMs)})
		}
		if r.DownstreamMs != nil {
			more = append(more, struct {
				k string
				v any
			}{"downstream_ms p50/p95/p99/max", lat(*r.DownstreamMs)})
		}
		if r.RetryAfterMs != nil {
			more = append(more, struct {
				k string
				v any
			}{"retry_after_ms p50/p95/p99/max", lat(*r.RetryAfterMs)})
		}
		for _, name := range []string{"high", "normal", "low"} {
			if l, ok := r.Lanes[name]; ok {
				more = append(more, struct {
					k string
					v any
				}{"lane " + name, fmt.Sprintf("requests %d succeeded %d expired %d rejected %d, succeeded p99 %.1f ms",
					l.Requests, l.Succeeded, l.Expired, l.Rejected, l.SucceededLatencyMs.P99)})
			}
		}
		if len(r.HeapLiveMB) > 0 {
			more = append(more, struct {
				k string
				v any
			}{"heap_live_mb min/max", heapRange(r.HeapLiveMB)})
		}
		more = append(more, []struct {
			k string
			v any
		}{{"heap_bytes", r.HeapBytes}, {"cpu_us_per_request", r.CPUMicrosPerRequest},
			{"allocs_per_request", r.AllocsPerRequest}}...)
		rows = append(rows[:len(rows)-1], more...)
	}
	for _, row := range rows {
		if _, err := fmt.Fprintf(w, "%-28s %v\n", row.k, row.v); err != nil {
			return err
		}
	}
	return nil
}

// heapRange is the live heap's range over a run, after its first second (the
// pipeline warming up), and its last value.
func heapRange(mb []float64) string {
	s := mb
	if len(s) > 1 {
		s = s[1:]
	}
	return fmt.Sprintf("%.1f / %.1f (last %.1f, %d samples)", slices.Min(s), slices.Max(s), mb[len(mb)-1], len(mb))
}
