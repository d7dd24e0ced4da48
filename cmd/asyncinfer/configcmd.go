package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/asyncinfer/asyncinfer/config"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show the effective configuration, or the reference of every setting",
	}
	var fl *config.Flags
	print := &cobra.Command{
		Use:   "print",
		Short: "Print the effective configuration as YAML, secrets masked",
		Long: `print loads the configuration exactly as run would (defaults, then --config,
then ASYNCINFER_* variables, then flags), validates it, and prints the result
as YAML with passwords and tokens masked.`,
		Example: `  asyncinfer config print --config prod.yaml
  ASYNCINFER_KAFKA_BROKERS=k1:9092 asyncinfer config print --registry http://r:8081`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := loadConfig(fl, cmd)
			if err != nil {
				return err
			}
			b, err := config.Print(cfg)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	fl = config.BindFlags(print.Flags())
	ref := &cobra.Command{
		Use:   "reference",
		Short: "Print every setting with its environment variable, flag, default and meaning (Markdown)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprint(cmd.OutOrStdout(), config.Reference())
			return err
		},
	}
	cmd.AddCommand(print, ref)
	return cmd
}
