package pipeline

import (
	"container/list"
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/schemas"
)

// Window is partition-local stage state: the keys a stage has seen on each
// input partition (dedup's idempotency keys, emit's request ids), each with
// the request id that claimed it, for a time-to-live and up to a key count.
//
// Changes are staged per unit of work and become visible to everyone only
// when that work's effects are acknowledged (Commit); a staged key is
// already visible to Get, so two records with one key in flight together are
// still told apart, and Discard undoes it without a trace. The changelog is
// the durable copy: a partition's window is rebuilt from it on assignment.
type Window struct {
	ttl     time.Duration
	maxKeys int
	now     func() time.Time

	mu    sync.Mutex
	parts map[int32]*partWindow
}

type partWindow struct {
	entries map[string]*list.Element // committed, in insertion order
	order   *list.List               // of *schemas.StateEntry, oldest first
	staged  map[string]schemas.StateEntry
	stagedN map[string]int // concurrent stagers of one key
}

// NewWindow returns a window keeping keys for ttl, at most maxKeys per
// partition (the oldest go first when it is full).
func NewWindow(ttl time.Duration, maxKeys int) *Window {
	return &Window{ttl: ttl, maxKeys: maxKeys, now: time.Now, parts: make(map[int32]*partWindow)}
}

// TTL is how long a key is kept.
func (w *Window) TTL() time.Duration { return w.ttl }

func (w *Window) part(p int32) *partWindow {
	pw, ok := w.parts[p]
	if !ok {
		pw = &partWindow{
			entries: make(map[string]*list.Element),
			order:   list.New(),
			staged:  make(map[string]schemas.StateEntry),
			stagedN: make(map[string]int),
		}
		w.parts[p] = pw
	}
	return pw
}

// Get returns the live entry for key on partition p, staged or committed.
func (w *Window) Get(p int32, key string) (schemas.StateEntry, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	pw, ok := w.parts[p]
	if !ok {
		return schemas.StateEntry{}, false
	}
	if e, ok := pw.staged[key]; ok {
		return e, true
	}
	el, ok := pw.entries[key]
	if !ok {
		return schemas.StateEntry{}, false
	}
	e := el.Value.(*schemas.StateEntry)
	if e.ExpiresAtMs <= w.now().UnixMilli() {
		return schemas.StateEntry{}, false
	}
	return *e, true
}

// Entry builds the entry a stage stages for key.
func (w *Window) Entry(key, requestID string, status schemas.Status) schemas.StateEntry {
	return schemas.StateEntry{Key: key, RequestID: requestID, Status: status, ExpiresAtMs: w.now().Add(w.ttl).UnixMilli()}
}

// Stage makes e visible to Get on partition p until Commit or Discard.
func (w *Window) Stage(p int32, e schemas.StateEntry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	pw := w.part(p)
	pw.staged[e.Key] = e
	pw.stagedN[e.Key]++
}

// Commit makes a staged entry permanent.
func (w *Window) Commit(p int32, e schemas.StateEntry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	pw := w.part(p)
	w.unstageLocked(pw, e.Key)
	w.putLocked(pw, e)
}

// Discard drops a staged entry: its work did not take effect.
func (w *Window) Discard(p int32, e schemas.StateEntry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if pw, ok := w.parts[p]; ok {
		w.unstageLocked(pw, e.Key)
	}
}

func (w *Window) unstageLocked(pw *partWindow, key string) {
	if pw.stagedN[key]--; pw.stagedN[key] <= 0 {
		delete(pw.stagedN, key)
		delete(pw.staged, key)
	}
}

// Restore puts an entry read from the changelog, unless it has expired.
func (w *Window) Restore(p int32, e schemas.StateEntry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if e.ExpiresAtMs <= w.now().UnixMilli() {
		return
	}
	w.putLocked(w.part(p), e)
}

// Delete removes key on partition p (a changelog tombstone).
func (w *Window) Delete(p int32, key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if pw, ok := w.parts[p]; ok {
		if el, ok := pw.entries[key]; ok {
			pw.order.Remove(el)
			delete(pw.entries, key)
		}
	}
}

func (w *Window) putLocked(pw *partWindow, e schemas.StateEntry) {
	if el, ok := pw.entries[e.Key]; ok {
		pw.order.Remove(el)
	}
	pw.entries[e.Key] = pw.order.PushBack(&e)
	// Expire from the front (entries are in insertion order and share one
	// ttl), then enforce the key bound.
	now := w.now().UnixMilli()
	for pw.order.Len() > 0 {
		front := pw.order.Front()
		fe := front.Value.(*schemas.StateEntry)
		if fe.ExpiresAtMs > now && pw.order.Len() <= w.maxKeys {
			break
		}
		pw.order.Remove(front)
		delete(pw.entries, fe.Key)
	}
}

// Drop forgets partition p: it was revoked, and its next owner restores it.
func (w *Window) Drop(p int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.parts, p)
}

// Len counts committed keys over all partitions (expired ones included until
// they are swept).
func (w *Window) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, pw := range w.parts {
		n += len(pw.entries)
	}
	return n
}

// RestoreWindow pauses an input partition (PauseRestore), rebuilds its window
// from the changelog partition of the same number in a goroutine of the
// runner, and resumes it. current reports whether the partition is still
// assigned in the same generation; a stale restore stops without resuming.
// A failing restore is retried every second: the partition stays paused, so
// nothing is decided on a partial window.
func RestoreWindow(r *Runner, win *Window, codec *schemas.Codec, inputTopic, changelog string, p int32, current func() bool) {
	r.Pauses().Pause(PauseRestore, inputTopic, p)
	r.Go(func(ctx context.Context) {
		start := time.Now()
		for attempt := 0; ; attempt++ {
			err := ReadPartition(ctx, r.ConnOpts(), changelog, p, func(rec *kgo.Record) {
				if !current() {
					return
				}
				if rec.Value == nil {
					win.Delete(p, string(rec.Key))
					return
				}
				e, err := codec.DecodeStateEntry(ctx, rec.Value)
				if err != nil {
					r.Logger().Warn("skipping undecodable state entry", "topic", changelog, "partition", p,
						"offset", rec.Offset, "err", err)
					return
				}
				win.Restore(p, *e)
			})
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			r.Logger().Warn("restore failed; retrying", "topic", changelog, "partition", p, "attempt", attempt, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
		if !current() {
			return
		}
		r.Metrics().Restores.WithLabelValues(r.Stage()).Observe(time.Since(start).Seconds())
		r.Pauses().Resume(PauseRestore, inputTopic, p)
	})
}
