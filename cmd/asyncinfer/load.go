package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/asyncinfer/asyncinfer/config"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

func newLoadCmd() *cobra.Command {
	var (
		fl   *config.Flags
		spec loadSpec
	)
	cmd := &cobra.Command{
		Use:   "load",
		Short: "Produce generated traffic to a pipeline: requests, duplicates, malformed records, poison items",
		Long: `load produces the demo's traffic to a running pipeline's requests topic:
requests for the simulated model, a fraction of duplicates (a new request id
with a recent idempotency key), of malformed records (bytes that are not a
request) and of poison items (the simulated model always fails them). It
prints a JSON line with what it produced; asyncinfer verify then recounts the
answers per request id.`,
		Example: `  asyncinfer load --brokers 127.0.0.1:9092 --registry http://127.0.0.1:8081 --requests 10000 --rate 2000 --duplicates 0.1 --malformed 0.01
  asyncinfer verify --brokers 127.0.0.1:9092 --registry http://127.0.0.1:8081`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := errors.Join(spec.validate()...); err != nil {
				return err
			}
			cfg, _, c, err := connectTool(cmd, fl)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx := cmd.Context()
			t := pipeline.NewTopics(cfg.Topics.Prefix)
			codec, err := schemas.NewCodec(ctx, c.registry, t.Kinds(), cfg.CodecOptions()...)
			if err != nil {
				return fmt.Errorf("schema registry: %w", err)
			}
			var produced, decodable atomic.Int64
			start := time.Now()
			err = generate(ctx, c.kopts, codec, t.Requests, spec, &produced, &decodable)
			out := map[string]any{"produced": produced.Load(), "decodable": decodable.Load(),
				"seconds": time.Since(start).Seconds()}
			if jerr := json.NewEncoder(cmd.OutOrStdout()).Encode(out); jerr != nil && err == nil {
				err = jerr
			}
			return err
		},
	}
	fs := cmd.Flags()
	fl = config.BindSomeFlags(fs, config.ConnectionSettings)
	spec.register(fs)
	fs.StringVar(&spec.model, "model", "sim", "model the requests name")
	return cmd
}
