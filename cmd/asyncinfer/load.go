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
			var errs []error
			for name, v := range map[string]float64{"duplicates": spec.duplicates, "malformed": spec.malformed, "poison-items": spec.poison} {
				if v < 0 || v > 1 {
					errs = append(errs, fmt.Errorf("--%s %v: want a fraction in [0, 1]", name, v))
				}
			}
			if spec.requests < 1 {
				errs = append(errs, fmt.Errorf("--requests %d: want at least 1", spec.requests))
			}
			if spec.rate < 0 {
				errs = append(errs, fmt.Errorf("--rate %v: want >= 0", spec.rate))
			}
			if err := errors.Join(errs...); err != nil {
				return err
			}
			cfg, _, c, err := connectTool(cmd, fl)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx := cmd.Context()
			t := pipeline.NewTopics(cfg.Topics.Prefix)
			codec, err := schemas.NewCodec(ctx, c.registry, t.Kinds())
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
	fs.IntVar(&spec.requests, "requests", 10000, "records to produce (duplicates and malformed included)")
	fs.Float64Var(&spec.rate, "rate", 2000, "records per second (0: as fast as possible)")
	fs.Float64Var(&spec.duplicates, "duplicates", 0, "fraction re-sent with a new request id and a recent idempotency key")
	fs.Float64Var(&spec.malformed, "malformed", 0, "fraction of records that are not a decodable request")
	fs.Float64Var(&spec.poison, "poison-items", 0, "fraction of requests the simulated model always fails")
	fs.StringVar(&spec.model, "model", "sim", "model the requests name")
	return cmd
}
