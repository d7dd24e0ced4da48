package pipeline

import "sync"

// tracker tracks, per partition, the offsets handed to the stage and which of
// them are finished, so that only the low-water mark is ever committed: the
// lowest offset whose effects are not yet all acknowledged. Completion may come
// in any order (batching finishes records out of order); the committed offset
// never passes an unfinished record.
type tracker struct {
	mu    sync.Mutex
	parts map[tp]*partTrack
	cond  *sync.Cond // broadcast whenever a record finishes
}

type tp struct {
	topic     string
	partition int32
}

type partTrack struct {
	// pending holds the offsets in the order they were added (ascending).
	// head indexes its first live element: popping from the front is O(1)
	// and the slice is compacted when head passes half its length.
	pending []trackedOffset
	head    int
	// next is the offset to commit when nothing is pending: one past the
	// highest finished offset.
	next      int64
	committed int64 // what was last committed, -1 when nothing
	inflight  int
	epoch     int32
}

type trackedOffset struct {
	offset int64
	done   bool
}

func newTracker() *tracker {
	t := &tracker{parts: make(map[tp]*partTrack)}
	t.cond = sync.NewCond(&t.mu)
	return t
}

// assign starts tracking a partition. Records of partitions that are not
// assigned are refused by add.
func (t *tracker) assign(p tp) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.parts[p]; !ok {
		t.parts[p] = &partTrack{next: -1, committed: -1}
	}
}

// add registers an offset as handed to the stage. It returns false when the
// partition is not (or no longer) assigned: the record will be re-delivered
// to its new owner, so the caller drops it.
func (t *tracker) add(p tp, offset int64, epoch int32) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	pt, ok := t.parts[p]
	if !ok {
		return false
	}
	pt.pending = append(pt.pending, trackedOffset{offset: offset})
	pt.inflight++
	pt.epoch = epoch
	return true
}

// done marks an offset finished and advances the partition's low-water mark
// over every finished offset at the front.
func (t *tracker) done(p tp, offset int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	defer t.cond.Broadcast()
	pt, ok := t.parts[p]
	if !ok {
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
		pt.head++
	}
	if pt.head == len(pt.pending) {
		pt.pending, pt.head = pt.pending[:0], 0
	} else if pt.head > len(pt.pending)/2 {
		n := copy(pt.pending, pt.pending[pt.head:])
		pt.pending, pt.head = pt.pending[:n], 0
	}
}

// watermark is the offset to commit for a partition: the first unfinished
// offset, or one past the last finished one. ok is false when nothing was
// finished yet.
func (pt *partTrack) watermark() (int64, bool) {
	if pt.head < len(pt.pending) {
		return pt.pending[pt.head].offset, true
	}
	return pt.next, pt.next >= 0
}

// commitable returns, for every partition whose low-water mark moved past
// what was last committed, the offset to commit.
func (t *tracker) commitable(only map[tp]bool) map[tp]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[tp]int64)
	for p, pt := range t.parts {
		if only != nil && !only[p] {
			continue
		}
		if w, ok := pt.watermark(); ok && w > pt.committed {
			out[p] = w
		}
	}
	return out
}

// committed records a successful commit.
func (t *tracker) markCommitted(p tp, offset int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if pt, ok := t.parts[p]; ok && offset > pt.committed {
		pt.committed = offset
	}
}

func (t *tracker) epochOf(p tp) int32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if pt, ok := t.parts[p]; ok {
		return pt.epoch
	}
	return -1
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
		delete(t.parts, p)
	}
	t.cond.Broadcast()
}
