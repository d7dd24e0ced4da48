package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/internal/partread"
)

// restoreWarn is how long a restore reads nothing before it says so (it
// goes on: the partition stays paused until its state is whole).
const restoreWarn = 10 * time.Second

// ReadPartition reads one partition of a changelog from its start up to its
// last stable offset as it was when the call began, read_committed, and
// calls fn for every data record in order. connOpts are the connection
// options of the stage's own client (seeds, TLS, SASL).
//
// It ends when it has seen the record just below that offset: control
// records (transaction markers) are kept, so a log that ends in a commit or
// abort marker is read to its end too, and the last offset of a log is never
// compacted away (the active segment is not compacted). It does not end on
// idleness: a partial restore would let a stage act on half its state.
func ReadPartition(ctx context.Context, connOpts []kgo.Opt, topic string, partition int32, fn func(*kgo.Record)) error {
	log := restoreLogger(ctx)
	cl, err := kgo.NewClient(connOpts...)
	if err != nil {
		return fmt.Errorf("pipeline: restore %s/%d: %w", topic, partition, err)
	}
	adm := kadm.NewClient(cl)
	ends, err := adm.ListCommittedOffsets(ctx, topic)
	var starts kadm.ListedOffsets
	if err == nil {
		starts, err = adm.ListStartOffsets(ctx, topic)
	}
	cl.Close()
	if err != nil {
		return fmt.Errorf("pipeline: restore %s/%d: list offsets: %w", topic, partition, err)
	}
	end, ok := ends.Lookup(topic, partition)
	if !ok {
		return fmt.Errorf("pipeline: restore %s/%d: no end offset listed", topic, partition)
	}
	if end.Err != nil {
		return fmt.Errorf("pipeline: restore %s/%d: end offset: %w", topic, partition, end.Err)
	}
	if start, ok := starts.Lookup(topic, partition); ok && start.Err == nil && start.Offset >= end.Offset {
		return nil // empty, or retention removed every record: nothing to restore
	}
	err = partread.Read(ctx, connOpts, map[string]map[int32]partread.Range{topic: {partition: {Start: -2, End: end.Offset}}},
		partread.Options{Idle: restoreWarn, OnIdle: func(left []string) {
			log.Warn("restore is reading nothing; the partition stays paused until its state is whole",
				"topic", topic, "partition", partition, "end", end.Offset)
		}}, fn)
	if err != nil {
		return fmt.Errorf("pipeline: restore %s/%d: %w", topic, partition, err)
	}
	return nil
}

type loggerKey struct{}

// withRestoreLogger gives ReadPartition a logger through its context.
func withRestoreLogger(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, l)
}

func restoreLogger(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.New(slog.DiscardHandler)
}
