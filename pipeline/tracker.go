package pipeline

import "sync"

// tracker tracks, per partition, the offsets handed to the stage and which of
// them are finished, so that only the low-water mark is ever committed: the
// lowest offset whose effects are not yet all acknowledged. Completion may come
// in any order (batching finishes records out of order); the committed offset
// never passes an unfinished record.
//
// Every assignment of a partition gets a new generation, and records are
// handed out under it: a record that finishes after its partition was
// revoked (and perhaps assigned back) belongs to an older generation and
// must not count for the offset of the same number handed out again.
type tracker struct {
	mu    sync.Mutex
	parts map[tp]*partTrack
	cond  *sync.Cond // broadcast whenever a record finishes or is released
	gens  uint64     // the last generation handed out, over all partitions
	// live counts the records handed to the stage and not yet released,
	// whatever their generation: stale work still holds memory (a queued
	// request) until the stage lets go of it, so the in-flight bound counts
	// it, and a stage queue sized to the bound can never overflow.
	live int
	// liveBytes is the size of those records (key and value); with
	// maxBytes, it counts against the in-flight bound as its share of
	// maxBytes: maxLive records' worth at maxBytes (see liveLocked).
	liveBytes int64
	maxLive   int
	maxBytes  int64
	avgSize   float64 // of the records added, exponentially weighted; 0 before the first
	// closed: every generation's stale channel is closed (shutdown); later
	// generations are born closed.
	closed bool
}

type tp struct {
	topic     string
	partition int32
}

type partTrack struct {
	gen uint64 // the assignment this state belongs to
	// stale is closed when the generation ends (revoke, loss, an aborted
	// transaction, shutdown): work handed out under it goes stale.
	stale chan struct{}
	// assignment is the generation the partition's assignment began with;
	// an aborted transaction's reset gives a new generation but keeps it.
	assignment uint64
	// pending holds the offsets in the order they were added (ascending).
	// head indexes its first live element: popping from the front is O(1)
	// and the slice is compacted when head passes half its length.
	pending []trackedOffset
	head    int
	// next is the offset to commit when nothing is pending: one past the
	// highest finished offset.
	next int64
	// nextEpoch is the leader epoch of the record at next-1, the one a
	// commit of the low-water mark stands on; -1 when unknown.
	nextEpoch int32
	committed int64 // what was last committed, -1 when nothing
	inflight  int
}

type trackedOffset struct {
	offset int64
	epoch  int32
	done   bool
}

// mark is what to commit for a partition: the low-water mark with the epoch
// of the record below it, and the generation it was computed in.
type mark struct {
	gen    uint64
	offset int64
	epoch  int32
}

func newTracker() *tracker {
	t := &tracker{parts: make(map[tp]*partTrack)}
	t.cond = sync.NewCond(&t.mu)
	return t
}

// assign starts tracking a partition and returns its generation. Records of
// partitions that are not assigned are refused by add. Assigning a partition
// that is tracked already keeps its state and generation: its unfinished
// records are still this member's.
func (t *tracker) assign(p tp) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if pt, ok := t.parts[p]; ok {
		return pt.gen
	}
	t.gens++
	pt := t.newPartLocked()
	pt.assignment = t.gens
	t.parts[p] = pt
	return t.gens
}

func (t *tracker) newPartLocked() *partTrack {
	pt := &partTrack{gen: t.gens, stale: make(chan struct{}), next: -1, nextEpoch: -1, committed: -1}
	if t.closed {
		close(pt.stale)
	}
	return pt
}

func (pt *partTrack) end() {
	select {
	case <-pt.stale:
	default:
		close(pt.stale)
	}
}

// add registers an offset as handed to the stage and returns the generation
// it is handed out under. ok is false when the partition is not (or no
// longer) assigned: the record will be re-delivered to its new owner, so the
// caller drops it.
func (t *tracker) add(p tp, offset int64, epoch int32, size int) (gen uint64, stale <-chan struct{}, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pt, ok := t.parts[p]
	if !ok {
		return 0, nil, false
	}
	pt.pending = append(pt.pending, trackedOffset{offset: offset, epoch: epoch})
	pt.inflight++
	t.live++
	t.liveBytes += int64(size)
	if t.avgSize == 0 {
		t.avgSize = float64(size)
	} else {
		t.avgSize += (float64(size) - t.avgSize) / 16
	}
	return pt.gen, pt.stale, true
}

// release counts a handed-out record of size bytes as let go of by the
// stage: finished, or dropped as stale, or abandoned by a failing stage.
func (t *tracker) release(size int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.live--
	t.liveBytes -= int64(size)
	t.cond.Broadcast()
}

// bound sets the byte bound of the records handed out: maxBytes of them
// count as maxLive records (0: no byte bound).
func (t *tracker) bound(maxLive int, maxBytes int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.maxLive, t.maxBytes = maxLive, maxBytes
}

// liveCount counts the records handed out and not released (see
// liveLocked).
func (t *tracker) liveCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.liveLocked()
}

// liveLocked counts the records handed out and not released, for the
// in-flight bound: their number, or, when their bytes are the larger share
// of the byte bound, that share of the record bound. Large records reach
// the bound sooner, so a stage holds about maxBytes at most however large
// they are.
func (t *tracker) liveLocked() int {
	if t.maxBytes <= 0 || t.liveBytes <= 0 {
		return t.live
	}
	byBytes := int((t.liveBytes*int64(t.maxLive) + t.maxBytes - 1) / t.maxBytes)
	return max(t.live, byBytes)
}

// room caps a poll of want records by the bytes left under the byte bound,
// at the records' average size: one record before any was seen, so that
// the first poll cannot take the bound many times over.
func (t *tracker) room(want int) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.maxBytes <= 0 {
		return want
	}
	if t.avgSize <= 0 {
		return min(want, 1)
	}
	return max(1, min(want, int(float64(t.maxBytes-t.liveBytes)/t.avgSize)))
}

// closeAll ends every generation: the runner is going away, and all work
// still out is stale.
func (t *tracker) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for _, pt := range t.parts {
		pt.end()
	}
	t.cond.Broadcast()
}

// generation is the partition's current generation; ok is false when it is
// not assigned.
func (t *tracker) generation(p tp) (uint64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pt, ok := t.parts[p]
	if !ok {
		return 0, false
	}
	return pt.gen, true
}

// current reports whether gen is the partition's generation: the partition
// is assigned and was not revoked since.
func (t *tracker) current(p tp, gen uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	pt, ok := t.parts[p]
	return ok && pt.gen == gen
}

// done marks an offset of generation gen finished and advances the
// partition's low-water mark over every finished offset at the front. An
// offset of another generation is ignored: the partition was revoked since,
// and the offset, if handed out again, is a new record to wait for.
func (t *tracker) done(p tp, gen uint64, offset int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	defer t.cond.Broadcast()
	pt, ok := t.parts[p]
	if !ok || pt.gen != gen {
		return // revoked or lost meanwhile: nothing to commit for it here
	}
	live := pt.pending[pt.head:]
	// Offsets are ascending, so a binary search finds the entry.
	lo, hi := 0, len(live)
	for lo < hi {
		m := (lo + hi) / 2
		if live[m].offset < offset {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == len(live) || live[lo].offset != offset || live[lo].done {
		return
	}
	live[lo].done = true
	pt.inflight--
	for pt.head < len(pt.pending) && pt.pending[pt.head].done {
		pt.next = pt.pending[pt.head].offset + 1
		pt.nextEpoch = pt.pending[pt.head].epoch
		pt.head++
	}
	if pt.head == len(pt.pending) {
		pt.pending, pt.head = pt.pending[:0], 0
	} else if pt.head > len(pt.pending)/2 {
		n := copy(pt.pending, pt.pending[pt.head:])
		pt.pending, pt.head = pt.pending[:n], 0
	}
}

// watermark is the offset to commit for a partition, the first unfinished
// offset or one past the last finished one, with the leader epoch of the
// last finished record below it (-1 when none finished). ok is false when
// nothing is known.
func (pt *partTrack) watermark() (offset int64, epoch int32, ok bool) {
	if pt.head < len(pt.pending) {
		return pt.pending[pt.head].offset, pt.nextEpoch, true
	}
	return pt.next, pt.nextEpoch, pt.next >= 0
}

// commitable returns, for every partition whose low-water mark moved past
// what was last committed, what to commit. The epoch is taken together with
// the offset, so that it is the epoch of the record the offset stands on
// even while more records finish.
func (t *tracker) commitable(only map[tp]bool) map[tp]mark {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[tp]mark)
	for p, pt := range t.parts {
		if only != nil && !only[p] {
			continue
		}
		if o, e, ok := pt.watermark(); ok && o > pt.committed {
			out[p] = mark{gen: pt.gen, offset: o, epoch: e}
		}
	}
	return out
}

// markCommitted records a successful commit of m. A commit computed in an
// earlier generation is ignored: it says nothing about the new one, whose
// marks can start below it.
func (t *tracker) markCommitted(p tp, m mark) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if pt, ok := t.parts[p]; ok && pt.gen == m.gen && m.offset > pt.committed {
		pt.committed = m.offset
	}
}

// inflight counts unfinished records, over all partitions or the given ones.
func (t *tracker) inflight(only map[tp]bool) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.inflightLocked(only)
}

func (t *tracker) inflightLocked(only map[tp]bool) int {
	n := 0
	for p, pt := range t.parts {
		if only == nil || only[p] {
			n += pt.inflight
		}
	}
	return n
}

// wait blocks until fn, called under the lock, returns true or stop is
// closed.
func (t *tracker) wait(stop <-chan struct{}, fn func() bool) bool {
	woken := make(chan struct{})
	defer close(woken)
	go func() {
		select {
		case <-stop:
			t.mu.Lock()
			t.cond.Broadcast()
			t.mu.Unlock()
		case <-woken:
		}
	}()
	t.mu.Lock()
	defer t.mu.Unlock()
	for !fn() {
		select {
		case <-stop:
			return false
		default:
		}
		t.cond.Wait()
	}
	return true
}

// remove stops tracking partitions; their unfinished records will finish
// without effect on commits.
func (t *tracker) remove(ps []tp) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range ps {
		if pt, ok := t.parts[p]; ok {
			pt.end()
			delete(t.parts, p)
		}
	}
	t.cond.Broadcast()
}

// reset forgets a partition's offsets and gives it a new generation, as a
// re-assignment would: after an aborted transaction the consumer rewinds to
// the committed offset, and work still running from before the abort is
// stale.
func (t *tracker) reset(p tp) {
	t.mu.Lock()
	defer t.mu.Unlock()
	defer t.cond.Broadcast()
	pt, ok := t.parts[p]
	if !ok {
		return
	}
	pt.end()
	t.gens++
	np := t.newPartLocked()
	np.assignment = pt.assignment
	t.parts[p] = np
}

// assignmentOf is the generation the partition's assignment began with.
func (t *tracker) assignmentOf(p tp) (uint64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pt, ok := t.parts[p]
	if !ok {
		return 0, false
	}
	return pt.assignment, true
}

// assignedAs reports whether the partition is still assigned in the
// assignment that gave it generation a (an aborted transaction's reset
// keeps the assignment).
func (t *tracker) assignedAs(p tp, a uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	pt, ok := t.parts[p]
	return ok && pt.assignment == a
}
