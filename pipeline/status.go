package pipeline

import (
	"fmt"
	"slices"
	"sort"
	"time"
)

// Run states of a runner, for Status.
const (
	runNew      int32 = iota // Run not called yet
	runRunning               // consuming
	runDraining              // Run is finishing the work in flight
	runStopped               // Run returned
)

// Status is a snapshot of one runner, safe to call from any goroutine.
type Status struct {
	Stage, Group string
	// Joined: the member has received at least one assignment (possibly
	// empty). It stays true after Run returns.
	Joined bool
	// Ready: Joined, running, not draining or stopped, and no assigned
	// partition is still restoring state. A runner whose partitions are
	// paused for back-pressure (in-flight bound, admission, breaker) is
	// still ready: it is doing its work.
	// A runner that waits for the schema registry to decode its input is
	// not ready.
	Ready      bool
	Partitions []PartitionStatus // sorted by topic, partition
	Inflight   int               // records handed to the stage and not yet finished
	// Waiting says what the stage waits for while it cannot consume some of
	// its partitions (the schema registry, the in-flight bound), "" when
	// nothing.
	Waiting string
	// Notices are what the stage says an operator should know (Noticer).
	Notices []string
}

// PartitionStatus is one assigned partition.
type PartitionStatus struct {
	Topic     string
	Partition int32
	Restoring bool     // held by PauseRestore: its state is not complete yet
	PausedBy  []string // pause reasons currently holding it, sorted
}

// statusTries bounds how often Status retakes its snapshot while an
// assignment is in progress before it reports not ready.
const statusTries = 3

// Status is a snapshot of the runner. It never blocks on a rebalance: while
// a newly assigned partition is being set up (before the stage could pause
// it for its restore), the runner reports not ready.
func (r *Runner) Status() Status {
	s := Status{Stage: r.stage, Group: r.group}
	stable := false
	for range statusTries {
		// A seqlock: the snapshot is consistent if no assignment began or
		// ended while it was taken.
		before := r.assignSeq.Load()
		held := r.pause.snapshot()
		stable = before%2 == 0 && r.assignSeq.Load() == before
		s.Partitions = s.Partitions[:0]
		for t, reasons := range held {
			s.Partitions = append(s.Partitions, PartitionStatus{
				Topic:     t.topic,
				Partition: t.partition,
				Restoring: slices.Contains(reasons, PauseRestore),
				PausedBy:  reasons,
			})
		}
		if stable {
			break
		}
	}
	sort.Slice(s.Partitions, func(i, j int) bool {
		a, b := s.Partitions[i], s.Partitions[j]
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		return a.Partition < b.Partition
	})
	s.Inflight = r.tr.inflight(nil)
	s.Joined = r.joined.Load()
	s.Ready = stable && s.Joined && r.runState.Load() == runRunning && !r.stopping() &&
		(!r.cfg.eos || r.producerReady.Load())
	for _, p := range s.Partitions {
		if p.Restoring {
			s.Ready = false
		}
	}
	if n, ok := r.h.(Noticer); ok {
		s.Notices = n.Notices()
	}
	if hs := r.hangingNotices.Load(); hs != nil {
		s.Notices = append(slices.Clip(s.Notices), *hs...)
	}
	if r.atBound.Load() {
		s.Waiting = fmt.Sprintf("in-flight bound: %d records unfinished (runner.max_inflight %d); consuming again at half", s.Inflight, r.cfg.maxInflight)
	}
	if since, err, ok := r.holds.oldest(); ok {
		s.Ready = false
		s.Waiting = fmt.Sprintf("schema registry unreachable for %s (%d partitions wait): %v",
			time.Since(since).Round(time.Second), r.holds.count(), err)
	}
	return s
}
