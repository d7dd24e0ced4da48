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
// last stable offset, read_committed, and calls fn for every data record in
// order. connOpts are the connection options of the stage's own client
// (seeds, TLS, SASL).
//
// The end is taken once no transaction is open on the partition (see
// stableEnd): a transaction that has committed may not have its markers
// written yet, and a restore that ended before them would miss state the
// transaction committed while the group's offsets, committed with it, say
// its inputs are done.
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
	start, end, err := stableEnd(ctx, kadm.NewClient(cl), topic, partition, log)
	cl.Close()
	if err != nil {
		return fmt.Errorf("pipeline: restore %s/%d: %w", topic, partition, err)
	}
	if start >= end {
		return nil // empty, or retention removed every record: nothing to restore
	}
	err = partread.Read(ctx, connOpts, map[string]map[int32]partread.Range{topic: {partition: {Start: -2, End: end}}},
		partread.Options{Idle: restoreWarn, OnIdle: func(left []string) {
			log.Warn("restore is reading nothing; the partition stays paused until its state is whole",
				"topic", topic, "partition", partition, "end", end)
		}}, fn)
	if err != nil {
		return fmt.Errorf("pipeline: restore %s/%d: %w", topic, partition, err)
	}
	return nil
}

// stableEnd returns the partition's log start offset and its last stable
// offset once that is its high watermark: once every transaction that wrote
// to it has ended, committed or aborted, with its marker written.
//
// A last stable offset below the high watermark is a transaction still open
// at the broker. After a broker restart that is often one that committed:
// its coordinator writes the markers once it has loaded its log, seconds
// later, and until then a read_committed reader stops short of the records
// while the group's committed offsets (stable, fetched with RequireStable)
// already count them done. The stage's own last transaction can also still
// be ending when its partitions come back to it. Nobody else writes to the
// partition meanwhile: its input partition is paused until the restore ends.
// So the restore waits; a transaction the broker left hanging keeps it
// waiting, and says so.
func stableEnd(ctx context.Context, adm *kadm.Client, topic string, partition int32, log *slog.Logger) (start, end int64, err error) {
	lookup := func(l kadm.ListedOffsets, what string) (int64, error) {
		o, ok := l.Lookup(topic, partition)
		if !ok {
			return 0, fmt.Errorf("no %s listed", what)
		}
		if o.Err != nil {
			return 0, fmt.Errorf("%s: %w", what, o.Err)
		}
		return o.Offset, nil
	}
	since, warned := time.Now(), time.Time{}
	wait := stableWait
	for {
		// The high watermark first: a last stable offset listed after it
		// and not below it covers every record the watermark counted.
		hwms, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return 0, 0, fmt.Errorf("list offsets: %w", err)
		}
		hwm, err := lookup(hwms, "high watermark")
		if err != nil {
			return 0, 0, err
		}
		lsos, err := adm.ListCommittedOffsets(ctx, topic)
		if err != nil {
			return 0, 0, fmt.Errorf("list offsets: %w", err)
		}
		if end, err = lookup(lsos, "last stable offset"); err != nil {
			return 0, 0, err
		}
		if end >= hwm {
			starts, err := adm.ListStartOffsets(ctx, topic)
			if err != nil {
				return 0, 0, fmt.Errorf("list offsets: %w", err)
			}
			if start, err = lookup(starts, "start offset"); err != nil {
				return 0, 0, err
			}
			return start, end, nil
		}
		if time.Since(since) >= restoreWarn && time.Since(warned) >= restoreWarn {
			warned = time.Now()
			log.Warn("restore waits for a transaction open on the changelog to end; the partition stays paused until its state is whole (one the broker left hanging: kafka-transactions.sh find-hanging, then abort)",
				"topic", topic, "partition", partition, "last_stable_offset", end, "high_watermark", hwm, "waited", time.Since(since).Round(time.Second))
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, stableWaitMax)
	}
}

// How often stableEnd looks again while a transaction is open.
const (
	stableWait    = 20 * time.Millisecond
	stableWaitMax = time.Second
)

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
