package admin

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/internal/partread"
)

// MeasureTimeLag sets the TimeLag of every row that is behind: the age of
// the oldest record the group has yet to consume on the partition (the
// first data record at or after its committed offset), from the record's
// timestamp. It reads one record per lagging partition, with small fetches,
// within a few seconds; rows it cannot read keep a TimeLag of 0 and the
// error says why.
func MeasureTimeLag(ctx context.Context, kopts []kgo.Opt, rows []PartitionLag, now time.Time) error {
	type key struct {
		topic string
		part  int32
	}
	ranges := map[string]map[int32]partread.Range{}
	want := map[key]int64{}
	for _, r := range rows {
		if r.Lag <= 0 {
			continue
		}
		start := r.Committed
		if start < 0 {
			start = -2 // never committed: the log's start
		}
		k := key{r.Topic, r.Partition}
		// Several groups may read one partition: read from the lowest
		// commit, and find each group's oldest record below.
		if have, ok := want[k]; ok && have <= start && have != -2 {
			continue
		}
		want[k] = start
		if ranges[r.Topic] == nil {
			ranges[r.Topic] = map[int32]partread.Range{}
		}
		ranges[r.Topic][r.Partition] = partread.Range{Start: start, End: r.End}
	}
	if len(ranges) == 0 {
		return nil
	}
	oldest := map[key]time.Time{} // the first data record at the lowest commit
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	err := partread.Read(rctx, kopts, ranges, partread.Options{First: true, MaxBytes: 64 << 10, PollTimeout: 200 * time.Millisecond},
		func(rec *kgo.Record) { oldest[key{rec.Topic, rec.Partition}] = rec.Timestamp })
	for i := range rows {
		r := &rows[i]
		if r.Lag <= 0 {
			continue
		}
		// A group whose commit is past the lowest one read: its oldest
		// record is no older than the one found (records are appended in
		// time order, give or take producers' clocks).
		if ts, ok := oldest[key{r.Topic, r.Partition}]; ok && now.After(ts) {
			r.LagSeconds = now.Sub(ts).Seconds()
		}
	}
	if err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// sample is one measurement of one group's partition, for the window.
type sample struct {
	at         time.Time
	committed  int64
	lag        int64
	lagSeconds float64
	end        int64 // last stable offset
	hwm        int64
	held       bool // a member holds the partition
}

// evaluate sets a row's rate, time to drain and status from the samples of
// its window, oldest first, the last being the row's own.
func evaluate(r *PartitionLag, window []sample) {
	if len(window) < 2 {
		r.Status = StatusOK
		return
	}
	first, last := window[0], window[len(window)-1]
	dt := last.at.Sub(first.at).Seconds()
	if dt > 0 && first.committed >= 0 && last.committed >= first.committed {
		r.Rate = float64(last.committed-first.committed) / dt
	}
	switch {
	case r.Lag <= 0:
		r.DrainSeconds = 0
	case r.Rate > 0:
		r.DrainSeconds = float64(r.Lag) / r.Rate
	default:
		r.DrainSeconds = -1
	}
	// A full window is needed to call anything but OK: a lag that rose
	// between two samples is noise.
	full := len(window) >= minWindowSamples
	moved := last.committed != first.committed
	lsoStuck := true
	rising := true
	for i, s := range window {
		if s.hwm <= s.end || s.end != first.end {
			lsoStuck = false
		}
		if i > 0 {
			prev := window[i-1]
			if s.lag < prev.lag || (s.lag == prev.lag && s.lagSeconds <= prev.lagSeconds) {
				rising = false
			}
		}
	}
	switch {
	case !full:
		r.Status = StatusOK
	case r.Lag > 0 && !moved && !last.held:
		r.Status = StatusStop
	case r.Lag > 0 && !moved:
		r.Status = StatusStall
	case lsoStuck:
		r.Status = StatusLSOStuck
	case r.Lag > 0 && rising:
		r.Status = StatusWarn
	default:
		r.Status = StatusOK
	}
}

// minWindowSamples is how many samples a status other than OK needs.
const minWindowSamples = 3

// GroupLag sums up one group: its records behind, its oldest unconsumed
// record's age, its consume rate, the time its lag needs to drain at that
// rate, and its worst partition's status.
type GroupLag struct {
	Group        string      `json:"group"`
	Lag          int64       `json:"lag"`
	LagSeconds   float64     `json:"lag_seconds"`
	DrainSeconds float64     `json:"drain_seconds"` // -1: behind and not moving
	Rate         float64     `json:"rate"`
	Status       GroupStatus `json:"status"`
	Partitions   int         `json:"partitions"`
}

// Groups sums rows up per group, in the rows' order.
func Groups(rows []PartitionLag) []GroupLag {
	var out []GroupLag
	idx := map[string]int{}
	for _, r := range rows {
		i, ok := idx[r.Group]
		if !ok {
			i = len(out)
			idx[r.Group] = i
			out = append(out, GroupLag{Group: r.Group, Status: StatusOK})
		}
		g := &out[i]
		g.Partitions++
		g.Lag += r.Lag
		g.LagSeconds = max(g.LagSeconds, r.LagSeconds)
		g.Rate += r.Rate
		if r.Status.worse(g.Status) {
			g.Status = r.Status
		}
	}
	for i := range out {
		g := &out[i]
		switch {
		case g.Lag <= 0:
			g.DrainSeconds = 0
		case g.Rate > 0:
			g.DrainSeconds = float64(g.Lag) / g.Rate
		default:
			g.DrainSeconds = -1
		}
	}
	return out
}
