package pipeline

// hashIndex maps a key's 64-bit hash to the sequence number of its slot in
// a partition's window. It is open addressing with linear probing in one
// array of 16-byte cells, so a look-up usually touches one cache line: in a
// window of 150,000 keys, Go's map touched its directory, a table and a
// group, each a cache miss, and the window's look-ups were a fifth of dedup's
// and emit's CPU. Deleting shifts the cells after it back (no tombstones), so
// probes stay as short as the load allows.
//
// It grows by doubling, and moves its cells to the new array a few at a time
// on each set instead of all at once: a copy of a million cells under the
// window's lock would stall the stage. While it moves, the cells not moved
// yet are still found in the old array, and a cell deleted there becomes a
// tombstone (its chain must stay whole until the move is over). Like Go's
// map, it does not shrink.
type hashIndex struct {
	cells []cell // len a power of two; h == 0: empty
	n     int    // used cells of cells
	// old is the array being moved from, nil when none; its cells before
	// moved are moved (or were empty or tombstones).
	old   []cell
	moved int
}

type cell struct{ h, seq uint64 }

const (
	indexMinCells = 256
	// indexMoveStep is how many of the old array's cells each set moves:
	// the old array holds at most 7/10 of its length, the new one (twice
	// as long) takes 14/10 of it, so the move is over long before the new
	// array fills.
	indexMoveStep = 8
	tombstone     = ^uint64(0) // the seq of a cell deleted from old
)

// cellHash keeps 0 for empty cells: a key whose hash is 0 shares 1 with
// another, which the window tells apart as it does any collision.
func cellHash(h uint64) uint64 {
	if h == 0 {
		return 1
	}
	return h
}

// find returns the position of h in cs, or -1.
func find(cs []cell, h uint64) int {
	mask := uint64(len(cs) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		switch cs[i].h {
		case h:
			return int(i)
		case 0:
			return -1
		}
	}
}

// get returns the seq of h.
func (x *hashIndex) get(h uint64) (uint64, bool) {
	h = cellHash(h)
	if x.cells != nil {
		if i := find(x.cells, h); i >= 0 {
			return x.cells[i].seq, true
		}
	}
	if x.old != nil {
		// Found before moved: it was moved, and is no longer in cells,
		// so it was deleted since.
		if i := find(x.old, h); i >= x.moved && x.old[i].seq != tombstone {
			return x.old[i].seq, true
		}
	}
	return 0, false
}

// set makes h's seq seq.
func (x *hashIndex) set(h, seq uint64) {
	h = cellHash(h)
	if x.cells == nil {
		x.cells = make([]cell, indexMinCells)
	}
	if x.old != nil {
		if i := find(x.old, h); i >= x.moved && x.old[i].seq != tombstone {
			x.old[i].seq = tombstone // it lives in cells from now on
		}
		x.move(indexMoveStep)
	}
	if i := find(x.cells, h); i >= 0 {
		x.cells[i].seq = seq
		return
	}
	if (x.n+1)*10 > len(x.cells)*7 {
		x.grow()
	}
	x.insert(cell{h, seq})
}

// insert puts c, whose hash is not in cells, into cells.
func (x *hashIndex) insert(c cell) {
	mask := uint64(len(x.cells) - 1)
	i := c.h & mask
	for x.cells[i].h != 0 {
		i = (i + 1) & mask
	}
	x.cells[i] = c
	x.n++
}

// grow starts moving to an array twice as long (finishing a move still
// under way first: never, with indexMoveStep as it is).
func (x *hashIndex) grow() {
	if x.old != nil {
		x.move(len(x.old))
	}
	x.old, x.moved = x.cells, 0
	x.cells, x.n = make([]cell, 2*len(x.old)), 0
	x.move(indexMoveStep)
}

// move moves up to k cells of old.
func (x *hashIndex) move(k int) {
	for ; k > 0 && x.moved < len(x.old); k-- {
		if c := x.old[x.moved]; c.h != 0 && c.seq != tombstone {
			x.insert(c)
		}
		x.moved++
	}
	if x.moved == len(x.old) {
		x.old, x.moved = nil, 0
	}
}

// del forgets h.
func (x *hashIndex) del(h uint64) {
	h = cellHash(h)
	if x.cells != nil {
		if i := find(x.cells, h); i >= 0 {
			x.remove(i)
			return
		}
	}
	if x.old != nil {
		if i := find(x.old, h); i >= x.moved {
			x.old[i].seq = tombstone
		}
	}
}

// remove empties cells[i] and shifts back the cells of its chain after it
// that may live closer to their home.
func (x *hashIndex) remove(i int) {
	mask := len(x.cells) - 1
	for j := (i + 1) & mask; x.cells[j].h != 0; j = (j + 1) & mask {
		home := int(x.cells[j].h) & mask
		// The cell at j stays when its home is cyclically in (i, j].
		if i <= j {
			if i < home && home <= j {
				continue
			}
		} else if i < home || home <= j {
			continue
		}
		x.cells[i] = x.cells[j]
		i = j
	}
	x.cells[i] = cell{}
	x.n--
}
