package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// fenced reports whether err says the transactional producer was fenced:
// its epoch was bumped by someone else (the instance that took its
// partitions, or the broker aborting a transaction that outlived its
// timeout). franz-go holds such a producer as failed for good (under
// KIP-890's transactions every fence is final), so only a new client
// serves again.
func fenced(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) ||
		errors.Is(err, kerr.InvalidProducerIDMapping) || errors.Is(err, kerr.TransactionalIDNotFound)
}

// renew replaces a fenced transactional producer and its group member with
// new ones, and reports whether the loop may go on.
//
// A fence means this instance stopped responding (a long pause, a frozen
// VM, a network partition) long enough for its group session to expire:
// its partitions moved, and the instance that took them, or the broker,
// aborted its open transaction. Nothing of its last unit was committed,
// and its staged state is already discarded. The old client is closed
// (its partitions revoked: their state is forgotten), and the new one
// joins the group as the same static member, initializes the same
// transactional id (fencing nothing of its own still open) and restores
// the state of whatever it is assigned from the changelog: what a
// restarted process would do, without the restart.
//
// A second process running with the same instance id is not this case:
// the group refuses one of the two (FENCED_INSTANCE_ID), and that one
// stops (fetchErrors).
func (r *Runner) renew(ctx context.Context, cause error) bool {
	if r.renewals >= 3 {
		r.Fail(fmt.Errorf("pipeline: %s: the transactional producer is fenced again each time it is renewed: %w", r.stage, cause))
		return false
	}
	r.renewals++
	defer func() { r.renewals-- }()
	if other := r.replacedBy(ctx); other != "" {
		r.Fail(fmt.Errorf("pipeline: %s: fenced: another process runs with instance id %q (group member %s) and took this one's place; give every process its own --instance-id: %w",
			r.stage, r.cfg.instanceID, other, cause))
		return false
	}
	r.log.Warn("the transactional producer was fenced: this instance stopped responding long enough for its partitions to move and its transaction to be aborted (a pause, a frozen host, a network partition); its unit is discarded, and a new producer and group member take over",
		"err", cause)
	r.m.Renewals.WithLabelValues(r.stage).Inc()
	r.producerReady.Store(false)
	// The unit's produces failed for the fence, not for what they were.
	r.failMu.Lock()
	r.failures = nil
	r.failMu.Unlock()
	r.clMu.Lock()
	if r.clClosed || ctx.Err() != nil {
		r.clMu.Unlock()
		return false
	}
	old := r.session()
	old.AllowRebalance()
	// A static member's client does not leave the group when it closes:
	// the new one, with the same instance id, takes its place at once.
	old.Close()
	sess, err := kgo.NewGroupTransactSession(r.kopts...)
	if err != nil {
		r.clMu.Unlock()
		r.Fail(fmt.Errorf("pipeline: %s: new transactional client after a fence: %w", r.stage, err))
		return false
	}
	r.sessp.Store(sess)
	r.clp.Store(sess.Client())
	r.clMu.Unlock()
	r.pause.setClient(sess.Client())
	return r.initProducer(ctx)
}

// replacedBy returns the member id of another member of the group with this
// instance's instance id: a second process with the same identity, which
// fenced this one by starting ("" when there is none, when the instance has
// no instance id, or when the group cannot be described: renewing is then
// the safe guess, as the group refuses one of two such members anyway).
func (r *Runner) replacedBy(ctx context.Context) string {
	if r.cfg.instanceID == "" {
		return ""
	}
	// Asked even when the runner is stopping: a zombie says so.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.sessionTimeout)
	defer cancel()
	mine := map[string]bool{}
	own := func() {
		if id, _ := r.client().GroupMetadata(); id != "" {
			mine[id] = true
		}
	}
	own()
	var other string
	_ = Retry(ctx, Backoff{Initial: 100 * time.Millisecond, Max: time.Second}, func() error {
		gs, err := kadm.NewClient(r.client()).DescribeGroups(ctx, r.group)
		if err != nil {
			return err
		}
		g := gs[r.group]
		if g.Err != nil {
			return g.Err
		}
		for _, m := range g.Members {
			if m.InstanceID != nil && *m.InstanceID == r.cfg.instanceID {
				other = m.MemberID
			}
		}
		return nil
	}, func(err error) bool { return !authError(err) })
	own() // it may have rejoined meanwhile
	if other == "" || mine[other] {
		return ""
	}
	return other
}
