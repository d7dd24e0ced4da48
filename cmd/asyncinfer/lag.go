package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/asyncinfer/asyncinfer/admin"
	"github.com/asyncinfer/asyncinfer/config"
)

func newLagCmd() *cobra.Command {
	var fl *config.Flags
	cmd := &cobra.Command{
		Use:   "lag",
		Short: "Show each stage group's lag per partition (records behind the last stable offset)",
		Long: `lag prints, for every stage's consumer group, each partition's committed
offset, last stable offset (LSO: the end a read_committed consumer can reach)
and the difference, and which member owns it. A group that has not started
yet has no rows.`,
		Example: `  asyncinfer lag --brokers 127.0.0.1:9092 --registry http://127.0.0.1:8081`,
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
			rows, err := admin.Lag(cmd.Context(), adm, groupsOf(cfg.Topics.Prefix)...)
			if err != nil {
				return err
			}
			if err := admin.DiscountMarkers(cmd.Context(), c.kopts, rows, admin.MarkerCheckMax); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "GROUP\tTOPIC\tPARTITION\tCOMMITTED\tLSO\tLAG\tMARKERS\tMEMBER\t")
			total := map[string]int64{}
			for _, r := range rows {
				committed := fmt.Sprint(r.Committed)
				if r.Committed < 0 {
					committed = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d\t%d\t%s\t\n", r.Group, r.Topic, r.Partition, committed, r.End, r.Lag, r.Markers, orDash(r.Member))
				total[r.Group] += r.Lag
			}
			tw.Flush()
			for _, g := range groupsOf(cfg.Topics.Prefix) {
				if n, ok := total[g]; ok {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: %d records behind\n", g, n)
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: no committed offsets or members yet\n", g)
				}
			}
			return nil
		},
	}
	fl = config.BindSomeFlags(cmd.Flags(), config.ConnectionSettings)
	return cmd
}
