package main

import (
	"fmt"
	"net"
	"strconv"

	"github.com/spf13/cobra"
)

func newDevBrokerCmd() *cobra.Command {
	var (
		kafkaAddr    string
		registryAddr string
		dataDir      string
	)
	cmd := &cobra.Command{
		Use:   "dev-broker",
		Short: "Run the embedded Kafka broker and schema registry alone, for several processes on this machine",
		Long: `dev-broker runs franz-go's kfake (a Kafka broker in Go) and srfake (a schema
registry) in this process until SIGINT or SIGTERM, so that each stage, a
producer and a results reader can run as processes of their own on one
machine. It is for development: one broker, no replication, no security.

With --data-dir the broker's log and the registry's schemas survive a
restart. Point other commands at it with --brokers and --registry.`,
		Example: `  asyncinfer dev-broker --data-dir /tmp/ai-dev &
  asyncinfer run --brokers 127.0.0.1:9092 --registry http://127.0.0.1:8081 --stages dedup --instance-id dedup-0 --admin-addr :0
  asyncinfer run --brokers 127.0.0.1:9092 --registry http://127.0.0.1:8081 --stages infer --instance-id infer-0 --admin-addr :0
  asyncinfer run --brokers 127.0.0.1:9092 --registry http://127.0.0.1:8081 --stages emit --instance-id emit-0 --admin-addr :0`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			host, port, err := net.SplitHostPort(kafkaAddr)
			if err != nil {
				return fmt.Errorf("--kafka-addr %q: %w", kafkaAddr, err)
			}
			if host != "127.0.0.1" && host != "localhost" {
				return fmt.Errorf("--kafka-addr %q: the embedded broker listens on 127.0.0.1 only", kafkaAddr)
			}
			p, err := strconv.Atoi(port)
			if err != nil || p < 0 || p > 65535 {
				return fmt.Errorf("--kafka-addr %q: bad port", kafkaAddr)
			}
			e, err := startEmbedded(embeddedConfig{dataDir: dataDir, kafkaPort: p, registryAddr: registryAddr, persist: true})
			if err != nil {
				return err
			}
			defer e.Close()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "kafka    %s\nregistry %s\n", e.brokers()[0], e.url)
			if dataDir != "" {
				fmt.Fprintf(out, "data     %s\n", dataDir)
			}
			fmt.Fprintf(out, "\nasyncinfer run --brokers %s --registry %s ...\n", e.brokers()[0], e.url)
			<-cmd.Context().Done()
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&kafkaAddr, "kafka-addr", "127.0.0.1:9092", "broker listen address (127.0.0.1; port 0: a free one)")
	fs.StringVar(&registryAddr, "registry-addr", "127.0.0.1:8081", "schema registry listen address")
	fs.StringVar(&dataDir, "data-dir", "", "keep the broker's data and the registry's schemas here")
	return cmd
}
