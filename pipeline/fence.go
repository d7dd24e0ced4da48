package pipeline

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Fencing the departed (exactly-once mode).
//
// An instance that stops responding without dying (a long pause, a frozen
// VM, a network partition) keeps its transaction open. Its group session
// expires after the session timeout and its partitions move, but the
// transaction stays open at the broker until the broker times it out: the
// transaction timeout, plus up to the broker's cleanup interval
// (transaction.abort.timed.out.transaction.cleanup.interval.ms, 10 s by
// default). Meanwhile every read_committed consumer of the topics it wrote
// stops at their last stable offset, and the instance that took its
// partitions waits for their offsets to be stable. Measured on Apache
// Kafka 4.4 with two instances per stage: p99 20 s in exactly-once mode
// against 14 s at least once.
//
// So the instances of a stage fence the transactions of their departed
// peers themselves: when partitions are assigned (the moment a departed
// peer's partitions arrive) and every transaction timeout, an instance
// lists the stage's open transactions and re-initializes the producer of
// each one whose instance is no member of the group any more, or that has
// been open longer than any live instance keeps one (the runner ends a
// unit by then). Re-initializing a transactional id bumps its epoch and
// aborts its open transaction at once, as a restarted instance does to its
// own. Fencing is safe even when it is wrong (a slow peer, an id read in a
// race): the fenced instance's unit aborts and is consumed again, and the
// instance renews its producer (renew.go); nothing is lost or answered
// twice, only redone.
//
// Only static members (an instance id) can be told gone by their
// transactional id; a dynamic member's transactions are fenced by age.

// fenceEvery is how often an instance looks for transactions to fence
// besides on assignment.
func (r *Runner) fenceEvery() time.Duration { return max(time.Second, r.cfg.txnTimeout/2) }

// fenceLoop fences departed peers' transactions every fenceEvery, and
// whenever kick says partitions were assigned.
func (r *Runner) fenceLoop(ctx context.Context) {
	t := time.NewTicker(r.fenceEvery())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.fenceKick:
		}
		r.fenceDeparted(ctx)
		r.lookForHanging(ctx)
	}
}

// kickFence asks fenceLoop for a look now.
func (r *Runner) kickFence() {
	select {
	case r.fenceKick <- struct{}{}:
	default:
	}
}

// fenceDeparted fences the open transactions of the stage's instances
// that are gone, or that are older than any live instance keeps one.
func (r *Runner) fenceDeparted(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, r.fenceEvery())
	defer cancel()
	adm := kadm.NewClient(r.client())
	prefix := r.spec.TransactionalIDPrefix()
	seen := time.Now()
	before, err := r.memberInstances(ctx, adm)
	if err != nil {
		r.log.Debug("fence: cannot describe the group", "err", err)
		return
	}
	listed, err := adm.ListTransactions(ctx, nil, []string{"Ongoing"})
	if err != nil && len(listed) == 0 {
		r.log.Debug("fence: cannot list transactions", "err", err)
		return
	}
	var ids []string
	for id, l := range listed {
		if strings.HasPrefix(id, prefix) && id != r.txnID && l.State == "Ongoing" {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return
	}
	described, err := adm.DescribeTransactions(ctx, ids...)
	if err != nil && len(described) == 0 {
		r.log.Debug("fence: cannot describe transactions", "err", err)
		return
	}
	// Read the members again: an instance absent from both reads, whose
	// transaction began before the first, is gone (one that restarted and
	// rejoined in between began its transaction after).
	after, err := r.memberInstances(ctx, adm)
	if err != nil {
		return
	}
	oldest := BrokerTransactionTimeout(r.cfg.txnTimeout)
	for _, d := range described {
		if d.Err != nil || d.State != "Ongoing" {
			continue
		}
		instance := strings.TrimPrefix(d.TxnID, prefix)
		started := time.UnixMilli(d.StartTimestamp)
		gone := !before[instance] && !after[instance] && started.Before(seen.Add(-time.Second))
		old := time.Since(started) > oldest
		if !gone && !old {
			continue
		}
		why := "its instance left the group"
		if !gone {
			why = "open longer than any live instance keeps one"
		}
		if err := r.fence(ctx, d.TxnID); err != nil {
			r.log.Warn("cannot fence a departed instance's open transaction; the broker will abort it at its timeout", "transactional_id", d.TxnID, "err", err)
			continue
		}
		r.m.Fenced.WithLabelValues(r.stage).Inc()
		r.log.Warn("fenced a departed instance's open transaction, which held the last stable offset of what it wrote",
			"transactional_id", d.TxnID, "why", why, "open_for", time.Since(started).Round(time.Millisecond))
	}
}

// memberInstances are the instance ids of the group's members.
func (r *Runner) memberInstances(ctx context.Context, adm *kadm.Client) (map[string]bool, error) {
	gs, err := adm.DescribeGroups(ctx, r.group)
	if err != nil {
		return nil, err
	}
	g, ok := gs[r.group]
	if !ok {
		return nil, errors.New("group not described")
	}
	if g.Err != nil {
		return nil, g.Err
	}
	m := make(map[string]bool, len(g.Members))
	for _, mem := range g.Members {
		if mem.InstanceID != nil {
			m[*mem.InstanceID] = true
		}
	}
	return m, nil
}

// fence re-initializes the producer of transactional id: its epoch is
// bumped and its open transaction aborted. CONCURRENT_TRANSACTIONS (the
// abort under way) is retried until the abort completed.
func (r *Runner) fence(ctx context.Context, id string) error {
	return Retry(ctx, Backoff{Initial: 20 * time.Millisecond, Max: 500 * time.Millisecond}, func() error {
		req := kmsg.NewPtrInitProducerIDRequest()
		req.TransactionalID = &id
		req.TransactionTimeoutMillis = int32(BrokerTransactionTimeout(r.cfg.txnTimeout).Milliseconds())
		req.ProducerID, req.ProducerEpoch = -1, -1
		resp, err := req.RequestWith(ctx, r.client())
		if err != nil {
			return err
		}
		return kerr.ErrorForCode(resp.ErrorCode)
	}, func(err error) bool {
		return errors.Is(err, kerr.ConcurrentTransactions) || errors.Is(err, kerr.CoordinatorLoadInProgress) ||
			errors.Is(err, kerr.NotCoordinator) || errors.Is(err, kerr.CoordinatorNotAvailable)
	})
}
