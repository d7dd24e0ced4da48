package pipeline

import (
	"hash/maphash"
	"math"
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

	hash func(string) uint64 // of the keys: maphash, randomly seeded

	mu      sync.Mutex
	parts   map[int32]*partWindow
	dropped map[int32]bool // dropped and not opened since
	size    int            // committed keys over all partitions
	// onSize, when set, is told the committed key count after it changes
	// (a metric), under the lock.
	onSize func(int)
}

// partWindow is one partition's keys. The committed entries hold no
// pointers, so that a window of a million keys costs the garbage collector
// nothing to mark and a lookup touches few cache lines: an index from the
// key's 64-bit hash to its slot, the slots in insertion order in a queue of
// fixed-size chunks, and the keys' and request ids' bytes in a queue of
// chunks beside them. Chunks come and go one at a time, so growing and
// shrinking never copies the window (a stall under the lock). The key is
// kept and compared, so two keys whose hashes collide are told apart (the
// later one takes the index; the earlier is then not found, as if it had
// been evicted: a chance of about one in 10^13 per key at a million keys).
type partWindow struct {
	index hashIndex // key hash → the seq of its live slot
	slots slotQueue // committed entries, oldest first, dead ones too
	bytes byteQueue // the slots' key, request id and status bytes
	live  int       // live slots
	size  int64     // entryBytes of the live slots
	// staged holds, per key, the entries of the stagers in flight in the
	// order they staged; the last one is what Get shows.
	staged map[string]stagers
}

// slot is a committed entry: where its bytes are, when it expires.
type slot struct {
	hash    uint64
	chunk   uint64 // the byte chunk holding its key, then request id and status
	expires int64  // Unix ms
	off     uint32 // of its key in the chunk
	klen    uint32
	rlen    uint32
	slen    uint8
	dead    bool // replaced or deleted; freed when it reaches the front
}

const slotChunk = 1 << 12 // slots per chunk: 160 KiB

// slotQueue is a queue of slots addressed by sequence number, in chunks.
type slotQueue struct {
	chunks           [][]slot // chunks[0] holds the seqs from base
	base, head, tail uint64   // seqs: of chunks[0][0], the oldest slot, the next one
	spare            []slot   // a freed chunk, for the next one needed
}

func (q *slotQueue) n() int { return int(q.tail - q.head) }

func (q *slotQueue) at(seq uint64) *slot {
	i := seq - q.base
	return &q.chunks[i/slotChunk][i%slotChunk]
}

func (q *slotQueue) front() *slot { return q.at(q.head) }

func (q *slotQueue) push(x slot) uint64 {
	if int(q.tail-q.base) == len(q.chunks)*slotChunk {
		c := q.spare
		q.spare = nil
		if c == nil {
			c = make([]slot, slotChunk)
		}
		q.chunks = append(q.chunks, c)
	}
	*q.at(q.tail) = x
	q.tail++
	return q.tail - 1
}

func (q *slotQueue) pop() {
	q.head++
	if q.head-q.base == slotChunk {
		q.spare = q.chunks[0]
		q.chunks[0] = nil
		q.chunks = q.chunks[1:]
		q.base += slotChunk
	}
}

const byteChunk = 64 << 10

// byteQueue holds the entries' bytes in chunks of byteChunk (an entry
// larger than that gets a chunk of its own size); an entry never spans two
// chunks, and a chunk is freed when no slot before the front uses it.
type byteQueue struct {
	chunks [][]byte // chunks[0] is number base; the last one is being filled
	base   uint64
	spare  []byte // a freed chunk, for the next one needed
}

// put appends ss as one run of bytes and returns where it starts.
func (b *byteQueue) put(ss ...string) (chunk uint64, off uint32) {
	n := 0
	for _, s := range ss {
		n += len(s)
	}
	last := len(b.chunks) - 1
	if last < 0 || cap(b.chunks[last])-len(b.chunks[last]) < n {
		var c []byte
		switch {
		case n > byteChunk:
			c = make([]byte, 0, n)
		case b.spare != nil:
			c, b.spare = b.spare[:0], nil
		default:
			c = make([]byte, 0, byteChunk)
		}
		b.chunks = append(b.chunks, c)
		last++
	}
	c := b.chunks[last]
	off = uint32(len(c))
	for _, s := range ss {
		c = append(c, s...)
	}
	b.chunks[last] = c
	return b.base + uint64(last), off
}

// at returns the n bytes at off in chunk.
func (b *byteQueue) at(chunk uint64, off, n uint32) []byte {
	return b.chunks[chunk-b.base][off : off+n]
}

// release frees the chunks before chunk, but never the one being filled.
func (b *byteQueue) release(chunk uint64) {
	for b.base < chunk && len(b.chunks) > 1 {
		if cap(b.chunks[0]) == byteChunk {
			b.spare = b.chunks[0]
		}
		b.chunks[0] = nil
		b.chunks = b.chunks[1:]
		b.base++
	}
}

func (x *slot) key(b *byteQueue) []byte { return b.at(x.chunk, x.off, x.klen) }

func (x *slot) requestID(b *byteQueue) string { return string(b.at(x.chunk, x.off+x.klen, x.rlen)) }

// status returns the slot's status without allocating for the known ones.
func (x *slot) status(b *byteQueue) schemas.Status {
	s := b.at(x.chunk, x.off+x.klen+x.rlen, uint32(x.slen))
	for _, k := range knownStatuses {
		if string(s) == string(k) {
			return k
		}
	}
	return schemas.Status(s)
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

var knownStatuses = []schemas.Status{schemas.StatusSucceeded, schemas.StatusFailed, schemas.StatusExpired,
	schemas.StatusRejected, schemas.StatusDuplicate}

// NewWindow returns a window keeping keys for ttl, at most maxKeys per
// partition (the oldest go first when it is full).
func NewWindow(ttl time.Duration, maxKeys int) *Window {
	return &Window{ttl: ttl, maxKeys: maxKeys, now: time.Now, hash: keyHash(maphash.MakeSeed()), parts: make(map[int32]*partWindow),
		dropped: make(map[int32]bool)}
}

func keyHash(seed maphash.Seed) func(string) uint64 {
	return func(s string) uint64 { return maphash.String(seed, s) }
}

// MaxBytes bounds each partition's keys by their memory (entryBytes each):
// the oldest go first past it, as past the key bound. 0: no byte bound.
func (w *Window) MaxBytes(n int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.maxBytes = n
}

// entryOverhead is what an entry costs besides its key and request id: its
// slot (40 bytes), its index cell (16 bytes at a load of 0.35 to 0.7) and
// its status.
const entryOverhead = 80

func (x *slot) entryBytes() int64 { return int64(x.klen) + int64(x.rlen) + entryOverhead }

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
		pw = &partWindow{staged: make(map[string]stagers)}
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
	x := w.findLocked(pw, key, w.hash(key))
	if x == nil || x.expires <= w.now().UnixMilli() {
		return schemas.StateEntry{}, false
	}
	return schemas.StateEntry{Key: key, RequestID: x.requestID(&pw.bytes), Status: x.status(&pw.bytes),
		ExpiresAtMs: x.expires}, true
}

// findLocked returns key's live committed slot, nil if none.
func (w *Window) findLocked(pw *partWindow, key string, h uint64) *slot {
	seq, ok := pw.index.get(h)
	if !ok {
		return nil
	}
	x := pw.slots.at(seq)
	if string(x.key(&pw.bytes)) != key {
		return nil // another key with the same hash
	}
	return x
}

// killLocked marks a live slot dead and forgets it in the index.
func (w *Window) killLocked(pw *partWindow, x *slot) {
	x.dead = true
	pw.index.del(x.hash)
	pw.live--
	pw.size -= x.entryBytes()
}

// Entry builds the entry a stage stages for key, seen now.
func (w *Window) Entry(key, requestID string, status schemas.Status) schemas.StateEntry {
	return w.entryAt(w.now(), key, requestID, status)
}

// entryAt builds the entry for key seen at t (the runtime passes its poll's
// time: one clock read a poll, not one a key).
func (w *Window) entryAt(t time.Time, key, requestID string, status schemas.Status) schemas.StateEntry {
	return schemas.StateEntry{Key: key, RequestID: requestID, Status: status, ExpiresAtMs: t.Add(w.ttl).UnixMilli()}
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
		if sameEntry(st.more[i], e) {
			st.more = append(st.more[:i], st.more[i+1:]...)
			pw.staged[e.Key] = st
			return
		}
	}
	if !sameEntry(st.first, e) {
		return
	}
	if len(st.more) == 0 {
		delete(pw.staged, e.Key)
		return
	}
	st.first, st.more = st.more[0], st.more[1:]
	pw.staged[e.Key] = st
}

// sameEntry compares two entries of the window (which never have More).
func sameEntry(a, b schemas.StateEntry) bool {
	return a.Key == b.Key && a.RequestID == b.RequestID && a.Status == b.Status && a.ExpiresAtMs == b.ExpiresAtMs
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
		if x := w.findLocked(pw, key, w.hash(key)); x != nil {
			w.killLocked(pw, x)
			w.sized(-1)
		}
	}
}

func (w *Window) putLocked(pw *partWindow, e schemas.StateEntry) {
	if uint64(len(e.RequestID)) > math.MaxUint32 || uint64(len(e.Key)) > math.MaxUint32 || len(e.Status) > math.MaxUint8 {
		return // never: keys and ids are refs (StateRef), statuses short
	}
	x := slot{hash: w.hash(e.Key), expires: e.ExpiresAtMs,
		klen: uint32(len(e.Key)), rlen: uint32(len(e.RequestID)), slen: uint8(len(e.Status))}
	x.chunk, x.off = pw.bytes.put(e.Key, e.RequestID, string(e.Status))
	// The slot the hash indexes (the key's earlier entry, or another key's
	// with the same hash: a collision, which is then not found, as if
	// evicted) is replaced.
	d := 1
	if seq, ok := pw.index.get(x.hash); ok {
		old := pw.slots.at(seq)
		old.dead = true
		pw.live--
		pw.size -= old.entryBytes()
		d--
	}
	pw.index.set(x.hash, pw.slots.push(x))
	pw.live++
	pw.size += x.entryBytes()
	// Expire from the front (entries are in insertion order and share one
	// ttl), then enforce the key and byte bounds; dead slots go as they
	// reach the front.
	now := w.now().UnixMilli()
	for pw.slots.n() > 0 {
		fe := pw.slots.front()
		if !fe.dead {
			if fe.expires > now && pw.live <= w.maxKeys && (w.maxBytes <= 0 || pw.size <= w.maxBytes) {
				break
			}
			w.killLocked(pw, fe)
			d--
		}
		pw.slots.pop()
		if pw.slots.n() > 0 {
			pw.bytes.release(pw.slots.front().chunk)
		} else {
			pw.bytes.release(math.MaxUint64)
		}
	}
	w.sized(d)
}

// Drop forgets partition p: it was revoked, and its next owner restores it.
// Until Open, calls for p are no-ops.
func (w *Window) Drop(p int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if pw, ok := w.parts[p]; ok {
		w.sized(-pw.live)
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
