// Command asyncinfer runs asynchronous ML inference on Kafka: the pipeline's
// stages (run), a self-contained demonstration on an embedded broker (demo),
// and the recount of a pipeline's topics per request id (verify).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "asyncinfer:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "asyncinfer",
		Short: "Asynchronous ML inference on Kafka",
		Long: `asyncinfer runs asynchronous ML inference on Apache Kafka.

Clients produce inference requests to a Kafka topic; a chain of consumer-group
stages deduplicates them (dedup), batches them and runs the model (infer), and
delivers one terminal result per request (emit). Each stage scales by adding
consumers.

Start with "asyncinfer demo": it runs everything in one process on an embedded
broker and prints what happened to every request.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newDemoCmd(), newRunCmd(), newVerifyCmd(), newDevBrokerCmd(), newConfigCmd(), newTopicsCmd(), newLagCmd(), newProduceCmd(), newResultsCmd(), newLoadCmd(), newBenchCmd())
	return root
}
