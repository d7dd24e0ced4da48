package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/asyncinfer/asyncinfer/internal/stack"
)

func newRunCmd() *cobra.Command {
	f := &pipelineFlags{}
	var (
		brokers  []string
		registry string
		stages   []string
		create   bool
		logLevel string
		dataDir  string
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run pipeline stages against a Kafka cluster (or all of them on an embedded broker)",
		Long: `run runs the given stages (default: all) in this process until SIGINT or
SIGTERM, then drains: it stops fetching, finishes the records in flight,
commits, and leaves.

Without --brokers, every stage must run here: an embedded broker and schema
registry are started, and their addresses printed. With --brokers, a schema
registry is required (--registry), and any subset of the stages may run, each
in as many processes as the topics have partitions.`,
		Example: `  # everything in one process, on an embedded broker
  asyncinfer run

  # one stage against a cluster, as a static member
  asyncinfer run --brokers kafka-1:9092 --registry http://registry:8081 --stages infer --instance-id infer-0`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			names, err := stack.ParseStages(stages)
			if err != nil {
				return err
			}
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: %w", logLevel, err)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			ctx := cmd.Context()
			if len(brokers) == 0 {
				if len(names) != len(stack.All) {
					return errors.New("--stages without --brokers: the embedded broker lives in this process, so every stage must run here; give --brokers to run a subset")
				}
				e, err := startEmbedded(dataDir)
				if err != nil {
					return err
				}
				defer e.Close()
				brokers, registry = e.brokers(), e.url
				fmt.Fprintf(cmd.ErrOrStderr(), "embedded broker %v, schema registry %s\n", brokers, registry)
			} else if registry == "" {
				return errors.New("--registry is required with --brokers: messages are Avro with schema ids from a registry")
			}
			if create {
				if err := createTopics(ctx, brokers, f, -1); err != nil {
					return err
				}
			}
			codec, err := newCodec(ctx, registry, f.topics(), f.replyTopics)
			if err != nil {
				return err
			}
			model, err := f.newModel()
			if err != nil {
				return err
			}
			set, err := stack.Build(f.stackOptions(brokers, model, stack.NewMetrics(prometheus.DefaultRegisterer), log), codec, names)
			if err != nil {
				return err
			}
			log.Info("running", "stages", names, "brokers", brokers)
			return set.Run(ctx)
		},
	}
	fs := cmd.Flags()
	f.register(fs)
	fs.StringSliceVar(&brokers, "brokers", nil, "seed brokers (none: embedded broker, all stages)")
	fs.StringVar(&registry, "registry", "", "schema registry URL (required with --brokers)")
	fs.StringSliceVar(&stages, "stages", stack.All, "stages to run: dedup, infer, emit")
	fs.BoolVar(&create, "create-topics", true, "create missing topics at start")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&dataDir, "data-dir", "", "embedded broker only: keep its data here")
	return cmd
}
