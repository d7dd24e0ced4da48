package pipeline

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// restoreRetry is how often a failing restore is tried again: the partition
// stays paused meanwhile, so nothing is decided on a partial window.
var restoreRetry = Backoff{Initial: 200 * time.Millisecond, Max: 5 * time.Second}

// restore opens an input partition's window, pauses the partition
// (PauseRestore), rebuilds its window from the changelog partition of the
// same number in a goroutine of the runner, and resumes it. The runner is not
// Ready while the pause holds. A restore whose partition was revoked since
// stops without resuming.
func (r *Runner) restore(t tp, assignment uint64) {
	p := t.partition
	r.win.Open(p)
	r.pause.Pause(PauseRestore, t.topic, p)
	r.Go(func(ctx context.Context) {
		start := time.Now()
		current := func() bool { return r.tr.assignedAs(t, assignment) }
		attempt := 0
		err := Retry(ctx, restoreRetry, func() error {
			if !current() {
				return nil
			}
			return ReadPartition(withRestoreLogger(ctx, r.log), r.cfg.connOpts, r.changelog, p, func(rec *kgo.Record) {
				if !current() {
					return
				}
				if rec.Value == nil {
					r.win.Delete(p, string(rec.Key))
					return
				}
				e, err := r.codec().DecodeStateEntry(ctx, rec.Value)
				if err != nil {
					r.log.Warn("skipping undecodable state entry", "topic", r.changelog, "partition", p,
						"offset", rec.Offset, "err", err)
					return
				}
				more := e.More
				e.More = nil
				r.win.Restore(p, *e)
				for _, m := range more {
					r.win.Restore(p, m)
				}
			})
		}, func(err error) bool {
			attempt++
			r.log.Warn("restore failed; retrying", "topic", r.changelog, "partition", p, "attempt", attempt, "err", err)
			return true
		})
		r.assignMu.RLock()
		defer r.assignMu.RUnlock()
		if err != nil || !current() {
			return
		}
		r.m.Restores.WithLabelValues(r.stage).Observe(time.Since(start).Seconds())
		r.pause.Resume(PauseRestore, t.topic, p)
	})
}
