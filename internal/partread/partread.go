// Package partread reads partitions from a start offset up to an end
// offset, read_committed: the one way asyncinfer reads a log to a point
// (a stage restoring its state, the lag watcher discounting transaction
// markers, verify's recount, the tests).
//
// It ends on offsets, never on idleness: control records (transaction
// markers) are kept so that a log ending in a commit or abort marker is read
// to its end too, and the last offset of a log is never compacted away (the
// active segment is not compacted). A reader that stopped on a quiet
// moment would act on half the log.
package partread

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Range is the records of one partition from Start (inclusive; -2 for the
// log's start) to End (exclusive).
type Range struct {
	Start, End int64
}

// Options tune a Read. The zero value reads until done or ctx ends.
type Options struct {
	// Idle, when set, is how long reading nothing is tolerated; then
	// OnIdle is called if set (and reading goes on), else Read fails.
	Idle   time.Duration
	OnIdle func(left []string)
	// Progress, when set, is told every second how many records were read
	// and how many partitions are still short of their end.
	Progress func(read int64, left int)
	// MaxBytes bounds what one fetch brings (and per partition), so that a
	// reader of a few records does not buffer many large ones. 0: 1 MiB.
	MaxBytes int32
	// PollTimeout bounds one poll. 0: 250ms.
	PollTimeout time.Duration
	// Uncommitted reads read_uncommitted (tests that look at aborted
	// records); End must then be a high watermark, not a last stable
	// offset.
	Uncommitted bool
	// First reads only the first data record of each partition's range
	// (the lag watcher: the oldest record a group has yet to consume).
	First bool
}

// Read reads every range read_committed and calls fn for each data record
// below its End, in offset order per partition. kopts reach the cluster
// (seeds, TLS, SASL). Empty ranges are skipped.
func Read(ctx context.Context, kopts []kgo.Opt, ranges map[string]map[int32]Range, o Options, fn func(*kgo.Record)) error {
	if o.MaxBytes <= 0 {
		o.MaxBytes = 1 << 20
	}
	if o.PollTimeout <= 0 {
		o.PollTimeout = 250 * time.Millisecond
	}
	type key struct {
		topic string
		part  int32
	}
	want := map[string]map[int32]kgo.Offset{}
	left := map[key]int64{}
	for t, ps := range ranges {
		for p, r := range ps {
			if r.End <= 0 || (r.Start >= 0 && r.Start >= r.End) {
				continue
			}
			if want[t] == nil {
				want[t] = map[int32]kgo.Offset{}
			}
			off := kgo.NewOffset().AtStart()
			if r.Start >= 0 {
				off = kgo.NewOffset().At(r.Start)
			}
			want[t][p] = off
			left[key{t, p}] = r.End
		}
	}
	if len(left) == 0 {
		return nil
	}
	iso := kgo.ReadCommitted()
	if o.Uncommitted {
		iso = kgo.ReadUncommitted()
	}
	cl, err := kgo.NewClient(append(slices.Clone(kopts),
		kgo.ConsumePartitions(want),
		kgo.FetchIsolationLevel(iso),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(o.PollTimeout),
		kgo.FetchMaxBytes(o.MaxBytes),
		kgo.FetchMaxPartitionBytes(o.MaxBytes),
	)...)
	if err != nil {
		return fmt.Errorf("partread: %w", err)
	}
	defer cl.Close()
	idle, lastProgress := time.Now(), time.Now()
	var read int64
	for len(left) > 0 {
		if o.Progress != nil && time.Since(lastProgress) >= time.Second {
			lastProgress = time.Now()
			o.Progress(read, len(left))
		}
		pctx, cancel := context.WithTimeout(ctx, o.PollTimeout)
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
			return fmt.Errorf("partread: %w", ferr)
		}
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			n++
			read++
			k := key{r.Topic, r.Partition}
			end, ok := left[k]
			if !ok || r.Offset >= end {
				return
			}
			if r.Offset >= end-1 {
				delete(left, k)
			}
			if !r.Attrs.IsControl() {
				if o.First {
					delete(left, k)
				}
				fn(r)
			}
		})
		if n > 0 {
			idle = time.Now()
			continue
		}
		if o.Idle > 0 && time.Since(idle) > o.Idle {
			var short []string
			for k, end := range left {
				short = append(short, fmt.Sprintf("%s/%d (end %d)", k.topic, k.part, end))
			}
			sort.Strings(short)
			if o.OnIdle == nil {
				return fmt.Errorf("partread: read nothing for %v with %d partitions short of their end: %s", o.Idle, len(short), strings.Join(short, ", "))
			}
			o.OnIdle(short)
			idle = time.Now()
		}
	}
	return nil
}
