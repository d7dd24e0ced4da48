package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// restoreIdle ends a restore that has read nothing for this long although the
// end offset was not reached: the tail of the changelog can be records that
// read_committed never returns (aborted data), or compacted away.
const restoreIdle = 2 * time.Second

// ReadPartition reads one partition of a changelog from its start up to its
// last stable offset as it was when the call began, read_committed, and
// calls fn for every data record in order. connOpts are the connection
// options of the stage's own client (seeds, TLS, SASL).
func ReadPartition(ctx context.Context, connOpts []kgo.Opt, topic string, partition int32, fn func(*kgo.Record)) error {
	adm, err := kgo.NewClient(connOpts...)
	if err != nil {
		return fmt.Errorf("pipeline: restore %s/%d: %w", topic, partition, err)
	}
	ends, err := kadm.NewClient(adm).ListCommittedOffsets(ctx, topic)
	adm.Close()
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
	opts := append(append([]kgo.Opt(nil), connOpts...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Control records (transaction markers) are kept so that offsets
		// reach the end even when the log ends in a commit marker.
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(250*time.Millisecond),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("pipeline: restore %s/%d: %w", topic, partition, err)
	}
	defer cl.Close()
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
		} else if time.Since(idleSince) > restoreIdle {
			return nil
		}
	}
	return nil
}
