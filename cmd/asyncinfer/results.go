package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/config"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

func newResultsCmd() *cobra.Command {
	var (
		fl        *config.Flags
		topic     string
		requestID string
		from      string
		count     int
		wait      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "results",
		Short: "Print results as JSON lines (read_committed), all of them or one request id's",
		Long: `results reads the results topic (or --topic, a reply topic) read_committed, as
any consumer of results should, and prints each result as one JSON line.

By default it follows new results from now on until Ctrl-C (--from end). With
--request-id it reads only the partition that request id's results land on
(they are keyed by request id with murmur2), from the beginning, and exits at
the first result for it; --wait bounds how long it waits.`,
		Example: `  asyncinfer results --brokers 127.0.0.1:9092 --registry http://127.0.0.1:8081
  asyncinfer results --request-id 3f2a… --wait 30s --brokers 127.0.0.1:9092 --registry http://127.0.0.1:8081
  asyncinfer results --from beginning --count 100 --brokers 127.0.0.1:9092 --registry http://127.0.0.1:8081`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from != "end" && from != "beginning" {
				return fmt.Errorf("--from %q: want beginning or end", from)
			}
			cfg, log, err := loadConfig(fl, cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if wait > 0 {
				var cancel func()
				ctx, cancel = context.WithTimeout(ctx, wait)
				defer cancel()
			}
			c, err := connect(ctx, cfg, false, log)
			if err != nil {
				return err
			}
			defer c.Close()
			t := pipeline.NewTopics(cfg.Topics.Prefix)
			if topic == "" {
				topic = t.Results
			}
			if t.Internal(topic) {
				return fmt.Errorf("--topic %s is an internal topic of the pipeline, not a results topic", topic)
			}
			codec, err := schemas.NewCodec(ctx, c.registry, map[string]schemas.Kind{topic: schemas.KindResult}, cfg.CodecOptions()...)
			if err != nil {
				return fmt.Errorf("schema registry: %w", err)
			}
			adm, err := kgo.NewClient(c.kopts...)
			if err != nil {
				return err
			}
			parts, err := kadm.NewClient(adm).ListTopics(ctx, topic)
			adm.Close()
			if err != nil {
				return err
			}
			td, ok := parts[topic]
			if !ok || td.Err != nil || len(td.Partitions) == 0 {
				return fmt.Errorf("--topic %s: no such topic", topic)
			}
			start := kgo.NewOffset().AtEnd()
			if from == "beginning" || requestID != "" {
				start = kgo.NewOffset().AtStart()
			}
			assign := map[int32]kgo.Offset{}
			if requestID != "" {
				assign[pipeline.KeyPartition([]byte(requestID), len(td.Partitions))] = start
			} else {
				for _, p := range td.Partitions.Numbers() {
					assign[p] = start
				}
			}
			cl, err := kgo.NewClient(append(slices.Clone(c.kopts), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: assign}),
				kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
			if err != nil {
				return err
			}
			defer cl.Close()
			enc := json.NewEncoder(cmd.OutOrStdout())
			printed := 0
			for {
				fs := cl.PollFetches(ctx)
				if err := ctx.Err(); err != nil {
					if requestID != "" {
						return fmt.Errorf("no result for request id %s in %s yet", requestID, topic)
					}
					return nil
				}
				var ferr error
				fs.EachError(func(_ string, _ int32, err error) { ferr = err })
				if ferr != nil {
					return ferr
				}
				for _, r := range fs.Records() {
					res, err := codec.DecodeResult(ctx, r.Value)
					if err != nil {
						log.Warn("undecodable result", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
						continue
					}
					if requestID != "" && res.RequestID != requestID {
						continue
					}
					if err := enc.Encode(resultToJSON(res)); err != nil {
						return err
					}
					printed++
					if requestID != "" || (count > 0 && printed >= count) {
						return nil
					}
				}
			}
		},
	}
	fs := cmd.Flags()
	fl = config.BindSomeFlags(fs, config.ConnectionSettings)
	fs.StringVar(&topic, "topic", "", "results or reply topic to read (default: the results topic)")
	fs.StringVar(&requestID, "request-id", "", "print the first result for this request id and exit")
	fs.StringVar(&from, "from", "end", "where to start: end (new results only) or beginning")
	fs.IntVar(&count, "count", 0, "exit after this many results (0: follow until Ctrl-C)")
	fs.DurationVar(&wait, "wait", 0, "give up after this long (0: no limit)")
	return cmd
}
