package admin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/internal/partread"
)

// PartitionLag is one consumer group's lag on one partition.
type PartitionLag struct {
	Group     string `json:"group"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// Committed is the group's committed offset, -1 when it has none.
	Committed int64 `json:"committed"`
	// End is the partition's last stable offset: the end a read_committed
	// consumer can reach. Records of open transactions are past it, so they
	// are not counted as lag until they commit.
	End int64 `json:"end"`
	// Lag is End minus Committed, or End minus the log start offset when the
	// group has not committed on the partition; never negative.
	Lag int64 `json:"lag"`
	// Member is the group member consuming the partition (its instance id
	// when it has one, else its member id), "" when no member holds it.
	Member string `json:"member,omitempty"`
	// ClientID is that member's client id.
	ClientID string `json:"client_id,omitempty"`
	// Markers is how much of the raw lag DiscountMarkers found to be
	// transaction markers or aborted records, not work (0 when not checked).
	Markers int64 `json:"markers,omitempty"`
	// LagSeconds is the lag as time: the age of the oldest record the group
	// has yet to consume (MeasureTimeLag), 0 when it is not behind or it
	// was not measured.
	LagSeconds float64 `json:"lag_seconds"`
	// HighWatermark is the partition's end including open transactions'
	// records: above End while a transaction is open.
	HighWatermark int64 `json:"high_watermark,omitempty"`
	// Rate is the records per second the group consumed (its committed
	// offset's progress) over the watcher's window; DrainSeconds the time
	// its lag would take to drain at that rate, -1 when it is behind and
	// not moving. Both 0 until the watcher has two samples.
	Rate         float64 `json:"rate"`
	DrainSeconds float64 `json:"drain_seconds"`
	// Status is the partition's status over the watcher's window (see
	// GroupStatus); "" until evaluated.
	Status GroupStatus `json:"status,omitempty"`
}

// GroupStatus says how a group keeps up, in the manner of Burrow's evaluator,
// over a window of samples.
type GroupStatus string

// The statuses, from good to bad.
const (
	// StatusOK: not behind, or behind and catching up.
	StatusOK GroupStatus = "OK"
	// StatusWarn: behind, and the lag (records or time) rose over the
	// whole window.
	StatusWarn GroupStatus = "WARN"
	// StatusLSOStuck: an open transaction holds the last stable offset:
	// read_committed consumers cannot pass it (an instance frozen with a
	// transaction open, until the broker times it out).
	StatusLSOStuck GroupStatus = "LSO_STUCK"
	// StatusStall: behind, a member holds the partition, and its commit
	// has not moved over the window.
	StatusStall GroupStatus = "STALL"
	// StatusStop: behind, nobody holds the partition, and its commit has
	// not moved over the window.
	StatusStop GroupStatus = "STOP"
)

// worse orders the statuses.
func (s GroupStatus) worse(t GroupStatus) bool { return statusRank[s] > statusRank[t] }

var statusRank = map[GroupStatus]int{"": 0, StatusOK: 1, StatusWarn: 2, StatusLSOStuck: 3, StatusStall: 4, StatusStop: 5}

// Lag measures the lag of groups on every partition they are assigned or
// have committed to, sorted by group, topic and partition.
//
// kadm's own Client.Lag measures against the high watermark, which counts
// records of open and aborted transactions that a read_committed consumer
// never sees as lag; this measures against the last stable offset
// (ListCommittedOffsets lists with isolation level read_committed).
//
// A group that does not exist, or has neither members nor commits, has no
// rows and is not an error. When one group or partition cannot be measured
// the error names it and the rows hold everything else; an error with nil
// rows means nothing could be measured. No groups: no rows.
func Lag(ctx context.Context, adm *kadm.Client, groups ...string) ([]PartitionLag, error) {
	groups = uniq(groups)
	if len(groups) == 0 {
		return nil, nil
	}
	var errs []error

	// Describing tells who holds which partition; the commits come from
	// OffsetFetch either way, so a group that DescribeGroups cannot describe
	// (a KIP-848 group, say) is still measured, only without members.
	described, err := adm.DescribeGroups(ctx, groups...)
	if err != nil {
		if _, ok := errors.AsType[*kadm.ShardErrors](err); !ok {
			return nil, fmt.Errorf("admin: describe groups: %w", err)
		}
		errs = append(errs, fmt.Errorf("admin: describe groups: %w", err))
	}
	for name, g := range described {
		switch {
		case errors.Is(g.Err, kerr.GroupIDNotFound), g.Err == nil && g.State == "Dead":
			delete(described, name)
		case g.Err != nil:
			errs = append(errs, fmt.Errorf("admin: describe group %q: %w", name, g.Err))
			delete(described, name)
		}
	}

	fetched := adm.FetchManyOffsets(ctx, groups...)
	measurable := groups[:0:0]
	for _, name := range groups {
		r := fetched[name]
		switch {
		case r.Err == nil:
		case errors.Is(r.Err, kerr.GroupIDNotFound):
			r = kadm.FetchOffsetsResponse{Group: name}
			fetched[name] = r
		default:
			errs = append(errs, fmt.Errorf("admin: fetch committed offsets of group %q: %w", name, r.Err))
			continue
		}
		measurable = append(measurable, name)
	}

	topics := described.AssignedPartitions()
	topics.MergeTopics(described.JoinTopics())
	for _, name := range measurable {
		topics.Merge(fetched[name].CommittedPartitions())
	}
	if len(topics.Topics()) == 0 {
		return nil, errors.Join(errs...)
	}
	starts, err := adm.ListStartOffsets(ctx, topics.Topics()...)
	if err != nil && !isShardErr(err) {
		return nil, fmt.Errorf("admin: list start offsets: %w", err)
	}
	// Shard errors leave partitions out of the listing; those come back
	// below as per-partition errors ("missing from list offsets").
	ends, err := adm.ListCommittedOffsets(ctx, topics.Topics()...)
	if err != nil && !isShardErr(err) {
		return nil, fmt.Errorf("admin: list last stable offsets: %w", err)
	}

	var rows []PartitionLag
	for _, name := range measurable {
		g, ok := described[name]
		if !ok {
			g = kadm.DescribedGroup{Group: name}
		}
		for _, l := range kadm.CalculateGroupLagWithStartOffsets(g, fetched[name].Fetched, starts, ends).Sorted() {
			if l.Err != nil {
				errs = append(errs, fmt.Errorf("admin: lag of group %q on %s/%d: %w", name, l.Topic, l.Partition, l.Err))
				continue
			}
			row := PartitionLag{
				Group: name, Topic: l.Topic, Partition: l.Partition,
				Committed: l.Commit.At, End: l.End.Offset, Lag: l.Lag,
			}
			if row.Committed < 0 {
				row.Committed = -1
			}
			if m := l.Member; m != nil {
				row.Member, row.ClientID = m.MemberID, m.ClientID
				if m.InstanceID != nil && *m.InstanceID != "" {
					row.Member = *m.InstanceID
				}
			}
			rows = append(rows, row)
		}
	}
	slices.SortFunc(rows, func(a, b PartitionLag) int {
		return cmp.Or(cmp.Compare(a.Group, b.Group), cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	return rows, errors.Join(errs...)
}

func isShardErr(err error) bool {
	_, ok := errors.AsType[*kadm.ShardErrors](err)
	return ok
}

// uniq drops empty and repeated names, keeping order, in a fresh slice (the
// caller's variadic slice is not ours to rewrite).
func uniq(groups []string) []string {
	out := make([]string, 0, len(groups))
	for _, g := range groups {
		if g != "" && !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return out
}

// DiscountMarkers corrects the lag of partitions whose gap to the last
// stable offset may be only transaction markers: a transactional producer's
// commit writes a control record after the data, so a group that consumed
// everything commits one offset short of the LSO, and an aborted
// transaction leaves records no read_committed consumer ever receives.
// Neither is work. For every row with 0 < Lag <= max it reads the partition
// from the committed offset to the end, read_committed, and sets Lag to the
// data records there; Markers gets the difference. If the gaps cannot be
// read within a few seconds, every row keeps its raw lag.
func DiscountMarkers(ctx context.Context, kopts []kgo.Opt, rows []PartitionLag, max int64) error {
	type key struct {
		topic string
		part  int32
	}
	want := map[string]map[int32]kgo.Offset{}
	end := map[key]int64{}
	for _, r := range rows {
		if r.Lag <= 0 || r.Lag > max || r.Committed < 0 {
			continue
		}
		k := key{r.Topic, r.Partition}
		if want[r.Topic] == nil {
			want[r.Topic] = map[int32]kgo.Offset{}
		}
		// Several groups may read one partition from different commits:
		// read from the lowest and count per row below.
		if o, ok := want[r.Topic][r.Partition]; !ok || r.Committed < o.EpochOffset().Offset {
			want[r.Topic][r.Partition] = kgo.NewOffset().At(r.Committed)
		}
		end[k] = r.End
	}
	if len(end) == 0 {
		return nil
	}
	ranges := map[string]map[int32]partread.Range{}
	for t, ps := range want {
		ranges[t] = map[int32]partread.Range{}
		for p, o := range ps {
			ranges[t][p] = partread.Range{Start: o.EpochOffset().Offset, End: end[key{t, p}]}
		}
	}
	data := map[key][]int64{} // data offsets read, per partition
	// A few seconds at most, and small fetches: the gaps are a few records,
	// but a record may be up to the topic's limit, and this runs every few
	// seconds in every stage process.
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	err := partread.Read(rctx, kopts, ranges, partread.Options{MaxBytes: 256 << 10, PollTimeout: 200 * time.Millisecond},
		func(r *kgo.Record) {
			k := key{r.Topic, r.Partition}
			data[k] = append(data[k], r.Offset)
		})
	reached := map[key]bool{}
	if err == nil {
		for k := range end {
			reached[k] = true
		}
	}
	for i := range rows {
		r := &rows[i]
		k := key{r.Topic, r.Partition}
		if !reached[k] || r.Lag <= 0 || r.Lag > max || r.Committed < 0 || end[k] != r.End {
			continue
		}
		var n int64
		for _, off := range data[k] {
			if off >= r.Committed {
				n++
			}
		}
		r.Markers, r.Lag = r.Lag-n, n
	}
	return nil
}
