package pipeline

import (
	"sync"
	"time"

	"github.com/asyncinfer/asyncinfer/schemas"
)

// Window is partition-local stage state: the keys a stage has seen on each
// input partition (dedup's idempotency keys, emit's request ids), each with
// the request id that claimed it, for a time-to-live and up to a key count.
//
// Changes are staged per unit of work and become permanent only when that
// work's effects are acknowledged (Commit); a staged key is already visible
// to Get, so two records with one key in flight together are still told
// apart, and Discard undoes it without a trace. With several stagers of one
// key in flight, Get shows the latest one still staged, else the committed
// entry. The changelog is the durable copy: a partition's window is rebuilt
// from it on assignment.
//
// A partition's state lives from Open (or its first use) to Drop. After
// Drop, calls for the partition are no-ops until it is opened again: work
// that finishes after its partition was revoked must not bring it back.
type Window struct {
	ttl      time.Duration
	maxKeys  int
	maxBytes int64 // per partition, by entryBytes; 0: none
	now      func() time.Time

	mu      sync.Mutex
	parts   map[int32]*partWindow
	dropped map[int32]bool // dropped and not opened since
	size    int            // committed keys over all partitions
	// onSize, when set, is told the committed key count after it changes
	// (a metric), under the lock.
	onSize func(int)
}

type partWindow struct {
	entries map[string]*node // committed
	order   nodeList         // the committed entries, oldest first
	bytes   int64            // entryBytes of the committed entries
	// staged holds, per key, the entries of the stagers in flight in the
	// order they staged; the last one is what Get shows.
	staged map[string]stagers
}

// node is a committed entry and its place in the insertion order: one
// allocation per key (a container/list element and the entry were two).
type node struct {
	e          schemas.StateEntry
	prev, next *node
}

// nodeList is a doubly linked list of nodes, oldest first.
type nodeList struct {
	front, back *node
	n           int
}

func (l *nodeList) pushBack(x *node) {
	x.prev, x.next = l.back, nil
	if l.back != nil {
		l.back.next = x
	} else {
		l.front = x
	}
	l.back = x
	l.n++
}

func (l *nodeList) remove(x *node) {
	if x.prev != nil {
		x.prev.next = x.next
	} else {
		l.front = x.next
	}
	if x.next != nil {
		x.next.prev = x.prev
	} else {
		l.back = x.prev
	}
	x.prev, x.next = nil, nil
	l.n--
}

// stagers are the entries staged for one key, in the order they staged:
// first, then more. The usual case, one stager, allocates nothing.
type stagers struct {
	first schemas.StateEntry
	more  []schemas.StateEntry
}

func (s *stagers) last() schemas.StateEntry {
	if len(s.more) > 0 {
		return s.more[len(s.more)-1]
	}
	return s.first
}

// NewWindow returns a window keeping keys for ttl, at most maxKeys per
// partition (the oldest go first when it is full).
func NewWindow(ttl time.Duration, maxKeys int) *Window {
	return &Window{ttl: ttl, maxKeys: maxKeys, now: time.Now, parts: make(map[int32]*partWindow),
		dropped: make(map[int32]bool)}
}

// MaxBytes bounds each partition's keys by their memory (entryBytes each):
// the oldest go first past it, as past the key bound. 0: no byte bound.
func (w *Window) MaxBytes(n int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.maxBytes = n
}

// entryOverhead is what an entry costs besides its strings: the entry, its
// list element and its map slot.
const entryOverhead = 160

func entryBytes(e *schemas.StateEntry) int64 {
	return int64(len(e.Key) + len(e.RequestID) + entryOverhead)
}

// TTL is how long a key is kept.
func (w *Window) TTL() time.Duration { return w.ttl }

// part returns partition p's state, created on first use; nil when p was
// dropped and not opened since.
func (w *Window) part(p int32) *partWindow {
	if w.dropped[p] {
		return nil
	}
	pw, ok := w.parts[p]
	if !ok {
		pw = &partWindow{
			entries: make(map[string]*node),
			staged:  make(map[string]stagers),
		}
		w.parts[p] = pw
	}
	return pw
}

func (w *Window) sized(d int) {
	w.size += d
	if d != 0 && w.onSize != nil {
		w.onSize(w.size)
	}
}

// Open starts partition p's state, empty, for a new assignment; a partition
// that is open already is kept as it is. RestoreWindow calls it; a stage
// that fills the window otherwise calls it from Assigned.
func (w *Window) Open(p int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.dropped, p)
	w.part(p)
}

// Get returns the live entry for key on partition p, staged or committed.
func (w *Window) Get(p int32, key string) (schemas.StateEntry, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	pw, ok := w.parts[p]
	if !ok {
		return schemas.StateEntry{}, false
	}
	if st, ok := pw.staged[key]; ok {
		return st.last(), true
	}
	x, ok := pw.entries[key]
	if !ok {
		return schemas.StateEntry{}, false
	}
	if x.e.ExpiresAtMs <= w.now().UnixMilli() {
		return schemas.StateEntry{}, false
	}
	return x.e, true
}

// Entry builds the entry a stage stages for key.
func (w *Window) Entry(key, requestID string, status schemas.Status) schemas.StateEntry {
	return schemas.StateEntry{Key: key, RequestID: requestID, Status: status, ExpiresAtMs: w.now().Add(w.ttl).UnixMilli()}
}

// Stage makes e visible to Get on partition p until Commit or Discard.
// Each Stage is undone by one Commit or Discard of the same entry.
func (w *Window) Stage(p int32, e schemas.StateEntry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if pw := w.part(p); pw != nil {
		if st, ok := pw.staged[e.Key]; ok {
			st.more = append(st.more, e)
			pw.staged[e.Key] = st
		} else {
			pw.staged[e.Key] = stagers{first: e}
		}
	}
}

// Commit makes a staged entry permanent.
func (w *Window) Commit(p int32, e schemas.StateEntry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if pw := w.part(p); pw != nil {
		w.unstageLocked(pw, e)
		w.putLocked(pw, e)
	}
}

// Discard drops a staged entry: its work did not take effect. An entry that
// is not staged (its partition was dropped and opened again since) is
// ignored, so that it cannot undo another stager of the key.
func (w *Window) Discard(p int32, e schemas.StateEntry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if pw, ok := w.parts[p]; ok {
		w.unstageLocked(pw, e)
	}
}

// unstageLocked removes one stager of e, the latest: stagers of one entry
// are interchangeable, so which one goes does not matter, and the entry Get
// shows is the latest still staged.
func (w *Window) unstageLocked(pw *partWindow, e schemas.StateEntry) {
	st, ok := pw.staged[e.Key]
	if !ok {
		return
	}
	for i := len(st.more) - 1; i >= 0; i-- {
		if st.more[i] == e {
			st.more = append(st.more[:i], st.more[i+1:]...)
			pw.staged[e.Key] = st
			return
		}
	}
	if st.first != e {
		return
	}
	if len(st.more) == 0 {
		delete(pw.staged, e.Key)
		return
	}
	st.first, st.more = st.more[0], st.more[1:]
	pw.staged[e.Key] = st
}

// Restore puts an entry read from the changelog, unless it has expired.
func (w *Window) Restore(p int32, e schemas.StateEntry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if e.ExpiresAtMs <= w.now().UnixMilli() {
		return
	}
	if pw := w.part(p); pw != nil {
		w.putLocked(pw, e)
	}
}

// Delete removes key on partition p (a changelog tombstone).
func (w *Window) Delete(p int32, key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if pw, ok := w.parts[p]; ok {
		if x, ok := pw.entries[key]; ok {
			pw.order.remove(x)
			pw.bytes -= entryBytes(&x.e)
			delete(pw.entries, key)
			w.sized(-1)
		}
	}
}

func (w *Window) putLocked(pw *partWindow, e schemas.StateEntry) {
	d := 1
	if x, ok := pw.entries[e.Key]; ok {
		pw.order.remove(x)
		pw.bytes -= entryBytes(&x.e)
		d = 0
	}
	x := &node{e: e}
	pw.order.pushBack(x)
	pw.entries[e.Key] = x
	pw.bytes += entryBytes(&e)
	// Expire from the front (entries are in insertion order and share one
	// ttl), then enforce the key and byte bounds.
	now := w.now().UnixMilli()
	for pw.order.n > 0 {
		fe := pw.order.front
		if fe.e.ExpiresAtMs > now && pw.order.n <= w.maxKeys && (w.maxBytes <= 0 || pw.bytes <= w.maxBytes) {
			break
		}
		pw.order.remove(fe)
		pw.bytes -= entryBytes(&fe.e)
		delete(pw.entries, fe.e.Key)
		d--
	}
	w.sized(d)
}

// Drop forgets partition p: it was revoked, and its next owner restores it.
// Until Open, calls for p are no-ops.
func (w *Window) Drop(p int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if pw, ok := w.parts[p]; ok {
		w.sized(-len(pw.entries))
	}
	delete(w.parts, p)
	w.dropped[p] = true
}

// Len counts committed keys over all partitions (expired ones included until
// they are swept).
func (w *Window) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.size
}
