package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
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
	// One client lists the partition's bounds and reads it.
	cl, err := kgo.NewClient(append(slices.Clone(connOpts),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Control records (transaction markers) are kept so that offsets
		// reach the end even when the log ends in a commit marker.
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(250*time.Millisecond),
	)...)
	if err != nil {
		return fmt.Errorf("pipeline: restore %s/%d: %w", topic, partition, err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("pipeline: restore %s/%d: list end offsets: %w", topic, partition, err)
	}
	end, ok := ends.Lookup(topic, partition)
	if !ok || end.Err != nil {
		if ok {
			err = end.Err
		}
		return fmt.Errorf("pipeline: restore %s/%d: no end offset: %v", topic, partition, err)
	}
	if end.Offset <= 0 {
		return nil
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("pipeline: restore %s/%d: list start offsets: %w", topic, partition, err)
	}
	if start, ok := starts.Lookup(topic, partition); ok && start.Err == nil && start.Offset >= end.Offset {
		return nil // retention removed every record: nothing to restore
	}
	last := int64(-1)
	idleSince := time.Now()
	for last < end.Offset-1 {
		pctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
		fs := cl.PollFetches(pctx)
		cancel()
		if err := ctx.Err(); err != nil {
			return err
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				ferr = err
			}
		})
		if ferr != nil {
			return fmt.Errorf("pipeline: restore %s/%d: %w", topic, partition, ferr)
		}
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			n++
			last = r.Offset
			if r.Attrs.IsControl() || r.Offset >= end.Offset {
				return
			}
			fn(r)
		})
		if n > 0 {
			idleSince = time.Now()
		} else if time.Since(idleSince) > restoreWarn {
			log.Warn("restore is reading nothing; the partition stays paused until its state is whole",
				"topic", topic, "partition", partition, "at", last+1, "end", end.Offset)
			idleSince = time.Now()
		}
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
