package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/asyncinfer/asyncinfer/config"
	"github.com/asyncinfer/asyncinfer/topics"
)

func newTopicsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "topics",
		Short: "Create, check and secure the pipeline's topics",
		Long: `The pipeline's topics (prefix topics.prefix, default "asyncinfer."), derived
from its declared graph of stages:

  requests            clients produce here, keyed by idempotency key (or request id);
                      dedup also re-routes a request a client put on the wrong partition
  requests.accepted   dedup ▸ infer
  outcomes            every stage's terminal answers ▸ emit, keyed by request id
  results             emit's default reply topic, keyed by request id
  dedup-state         dedup's changelog (compact,delete), co-partitioned with requests
  emitted-ids         emit's changelog (compact,delete), co-partitioned with outcomes
  dlq                 dead letters (larger max.message.bytes: they carry the source record)`,
	}
	cmd.AddCommand(newTopicsCreateCmd(), newTopicsCheckCmd(), newTopicsACLsCmd())
	return cmd
}

func newTopicsCreateCmd() *cobra.Command {
	var fl *config.Flags
	cmd := &cobra.Command{
		Use:     "create",
		Short:   "Create the pipeline's topics and the reply topics (existing ones are left alone)",
		Example: `  asyncinfer topics create --brokers 127.0.0.1:9092 --registry http://127.0.0.1:8081 --partitions 12`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, c, err := connectTool(cmd, fl)
			if err != nil {
				return err
			}
			defer c.Close()
			if err := createTopicsCfg(cmd.Context(), c, cfg); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "topics created (existing topics left as they were); check them with: asyncinfer topics check")
			return nil
		},
	}
	fl = config.BindSomeFlags(cmd.Flags(), config.ConnectionSettings)
	return cmd
}

func newTopicsCheckCmd() *cobra.Command {
	var fl *config.Flags
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check the topics against the layout: partitions, co-partitioning, compaction, limits",
		Long: `check compares the cluster's topics with the layout the configuration describes:
every topic exists with topics.partitions partitions; requests and dedup-state,
outcomes and emitted-ids have the same partition count (a stage restores
partition p's state from changelog partition p); the changelogs are compacted;
every topic takes records as large as configured (topics.max_message_bytes,
topics.dlq_max_message_bytes), and dlq at least as large as the data topics.
It prints one line per topic and exits with status 1 if anything is wrong.
A stage refuses to start on any of these but a partition count that differs
from topics.partitions.`,
		Example: `  asyncinfer topics check --brokers 127.0.0.1:9092 --registry http://127.0.0.1:8081`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, c, err := connectTool(cmd, fl)
			if err != nil {
				return err
			}
			defer c.Close()
			adm, err := c.admin()
			if err != nil {
				return err
			}
			defer adm.Close()
			g, err := graphOf(cfg)
			if err != nil {
				return err
			}
			checks, err := topics.CheckTopics(cmd.Context(), adm, g, cfg.Layout())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TOPIC\tPARTITIONS\tCLEANUP\tMAX.MESSAGE.BYTES\tRETENTION.MS\tSTATUS")
			bad := 0
			for _, ch := range checks {
				status := "ok"
				if len(ch.Problems) > 0 || len(ch.Advisories) > 0 {
					status = "PROBLEM: " + strings.Join(append(ch.Problems, ch.Advisories...), "; ")
					bad++
				}
				parts := "-"
				if ch.Partitions >= 0 {
					parts = fmt.Sprint(ch.Partitions)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", ch.Topic, parts, orDash(ch.Configs["cleanup.policy"]),
					orDash(ch.Configs["max.message.bytes"]), orDash(ch.Configs["retention.ms"]), status)
			}
			tw.Flush()
			if bad > 0 {
				return fmt.Errorf("topics check: %d of %d topics have problems", bad, len(checks))
			}
			return nil
		},
	}
	fl = config.BindSomeFlags(cmd.Flags(), config.ConnectionSettings)
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newTopicsACLsCmd() *cobra.Command {
	var fl *config.Flags
	cmd := &cobra.Command{
		Use:   "acls",
		Short: "Print the ACLs each stage, a client and the admin tools need, as kafka-acls.sh commands",
		Long: `acls prints, for each principal, the ACLs it needs on a cluster that enforces
them, for the configured delivery mode: exactly-once mode (--exactly-once)
adds each stage's transactional ids. The principal names are placeholders
(User:dedup, User:infer, …): replace them with your users. These exact ACLs
are tested, in both modes: every stage runs as its own user holding only them,
on a broker that enforces ACLs.

Add --bootstrap-server and --command-config to each line for your cluster.`,
		Example: `  asyncinfer topics acls --topic-prefix prod.asyncinfer. --reply-topics app.results
  asyncinfer topics acls --exactly-once`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := loadConfig(fl, cmd)
			if err != nil {
				return err
			}
			g, err := graphOf(cfg)
			if err != nil {
				return err
			}
			acls := g.ACLs(cfg.ExactlyOnce)
			out := cmd.OutOrStdout()
			mode := "at-least-once"
			if cfg.ExactlyOnce {
				mode = "exactly-once"
			}
			fmt.Fprintf(out, "# ACLs for %s mode\n\n", mode)
			for _, p := range g.Principals() {
				fmt.Fprintf(out, "# %s\n", aclTitle(p))
				for _, a := range acls[p] {
					fmt.Fprintln(out, a.String(p))
				}
				fmt.Fprintln(out)
			}
			return nil
		},
	}
	fl = config.BindSomeFlags(cmd.Flags(), func(p string) bool { return config.ConnectionSettings(p) || p == "exactly_once" })
	return cmd
}

func aclTitle(p string) string {
	switch p {
	case topics.Client:
		return "client: an application that produces requests and reads results (no consumer group)"
	case topics.Admin:
		return "admin: topics create/check, lag, and run with topics.create=true"
	}
	return "stage " + p
}
