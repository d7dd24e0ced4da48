package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/asyncinfer/asyncinfer/admin"
	"github.com/asyncinfer/asyncinfer/config"
)

func newLagCmd() *cobra.Command {
	var (
		fl      *config.Flags
		verbose bool
		watch   time.Duration
		window  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "lag",
		Short: "Show how far behind each stage is: records, seconds, time to drain, status",
		Long: `lag shows, for every stage's consumer group, how far behind it is:

  LAG      records it has yet to consume, up to the last stable offset (the end
           a read_committed consumer can reach; transaction markers are not work)
  SECONDS  the age of the oldest record it has yet to consume
  RATE     records per second it consumed over the window
  DRAIN    how long the lag would take at that rate (∞: behind, not moving)
  STATUS   over the window, in the manner of Burrow's evaluator: OK; WARN (behind,
           the lag rising); LSO_STUCK (an open transaction holds the last stable
           offset); STALL (behind, a member holds it, no progress); STOP (behind,
           nobody holds it, no progress)

It samples --window long (three samples) to measure rates and statuses; -v
shows every partition with its committed offset, LSO and owner; --watch
repeats every interval until interrupted.`,
		Example: `  asyncinfer lag --brokers 127.0.0.1:9092 --registry http://127.0.0.1:8081
  asyncinfer lag -v --watch 2s`,
		Args: cobra.NoArgs,
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
			interval := window / 2
			if watch > 0 {
				interval = min(interval, watch)
			}
			w, err := admin.NewWatcher(adm, groupsOf(cfg.Topics.Prefix), admin.Interval(max(interval, 100*time.Millisecond)),
				admin.Window(max(window, interval)), admin.WithMarkerCheck(c.kopts))
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			if watch <= 0 {
				for i := 0; i < 3; i++ {
					if err := w.Refresh(ctx); err != nil && i == 2 {
						return err
					}
					if i < 2 && !sleepCtx(ctx, interval) {
						return ctx.Err()
					}
				}
				printLag(out, w.Snapshot(), groupsOf(cfg.Topics.Prefix), verbose)
				return nil
			}
			for {
				err := w.Refresh(ctx)
				if ctx.Err() != nil {
					return nil
				}
				fmt.Fprint(out, "\033[H\033[2J") // clear the terminal
				fmt.Fprintf(out, "%s  (every %v, Ctrl-C to stop)\n\n", time.Now().Format(time.TimeOnly), watch)
				printLag(out, w.Snapshot(), groupsOf(cfg.Topics.Prefix), verbose)
				if err != nil {
					fmt.Fprintln(out, "error:", err)
				}
				if !sleepCtx(ctx, watch) {
					return nil
				}
			}
		},
	}
	fs := cmd.Flags()
	fl = config.BindSomeFlags(fs, config.ConnectionSettings)
	fs.BoolVarP(&verbose, "verbose", "v", false, "every partition: committed offset, LSO, records and seconds behind, owner")
	fs.DurationVar(&watch, "watch", 0, "refresh every interval until interrupted (0: once)")
	fs.DurationVar(&window, "window", 6*time.Second, "how long rates and statuses are measured over (a short window judges on little: the stages' own watchers use 30s)")
	return cmd
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func printLag(out io.Writer, snap admin.LagSnapshot, groups []string, verbose bool) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tLAG\tSECONDS\tRATE\tDRAIN\tSTATUS\tPARTITIONS\t")
	byGroup := map[string]admin.GroupLag{}
	for _, g := range snap.Groups {
		byGroup[g.Group] = g
	}
	for _, name := range groups {
		g, ok := byGroup[name]
		if !ok {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\tno commits or members yet\t\n", name)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.0f/s\t%s\t%s\t%d\t\n", g.Group, g.Lag, g.LagSeconds, g.Rate, drain(g.DrainSeconds), g.Status, g.Partitions)
	}
	tw.Flush()
	if !verbose {
		return
	}
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tTOPIC\tPARTITION\tCOMMITTED\tLSO\tLAG\tSECONDS\tMARKERS\tSTATUS\tMEMBER\t")
	for _, r := range snap.Lag {
		committed := fmt.Sprint(r.Committed)
		if r.Committed < 0 {
			committed = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d\t%.1f\t%d\t%s\t%s\t\n", r.Group, r.Topic, r.Partition, committed, r.End, r.Lag,
			r.LagSeconds, r.Markers, r.Status, orDash(r.Member))
	}
	tw.Flush()
}

func drain(s float64) string {
	switch {
	case s < 0 || math.IsInf(s, 1):
		return "∞"
	case s == 0:
		return "0s"
	}
	return (time.Duration(s * float64(time.Second))).Round(100 * time.Millisecond).String()
}
