package pipeline

import (
	"math/rand/v2"
	"testing"
	"testing/synctest"
)

var (
	tpA = tp{"in", 0}
	tpB = tp{"in", 1}
	tpC = tp{"other", 0}
)

// lowWater is the reference model of the tracker: the offset to commit is the
// smallest added offset not yet finished, or one past the highest added
// offset when all are finished.
func lowWater(added []int64, finished map[int64]bool) int64 {
	for _, o := range added {
		if !finished[o] {
			return o
		}
	}
	return added[len(added)-1] + 1
}

// genOf is p's current generation, 0 when it is not assigned.
func genOf(tr *tracker, p tp) uint64 {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if pt, ok := tr.parts[p]; ok {
		return pt.gen
	}
	return 0
}

// finish marks offset done in p's current generation, as the runner does for
// a Work that is not stale.
func finish(tr *tracker, p tp, offset int64) { tr.done(p, genOf(tr, p), offset) }

// commitAt records a commit of offset in p's current generation.
func commitAt(tr *tracker, p tp, offset int64) {
	tr.markCommitted(p, mark{gen: genOf(tr, p), offset: offset})
}

// markOffsets are the offsets of marks.
func markOffsets(marks map[tp]mark) map[tp]int64 {
	out := make(map[tp]int64, len(marks))
	for p, m := range marks {
		out[p] = m.offset
	}
	return out
}

func TestTrackerLowWaterMark(t *testing.T) {
	seq := func(from, to int64) []int64 {
		var out []int64
		for o := from; o <= to; o++ {
			out = append(out, o)
		}
		return out
	}
	tests := []struct {
		name  string
		added []int64 // ascending, as kgo hands them out
		order []int64 // completion order
		// want is the commit offset after each completion.
		want []int64
	}{
		{
			name:  "in order",
			added: seq(0, 4),
			order: seq(0, 4),
			want:  []int64{1, 2, 3, 4, 5},
		},
		{
			name:  "out of order never passes the unfinished offset",
			added: seq(4, 7),
			order: []int64{5, 6, 7, 4},
			want:  []int64{4, 4, 4, 8},
		},
		{
			name:  "reverse order",
			added: seq(10, 13),
			order: []int64{13, 12, 11, 10},
			want:  []int64{10, 10, 10, 14},
		},
		{
			name:  "middle hole filled last",
			added: seq(0, 6),
			order: []int64{0, 1, 2, 4, 5, 6, 3},
			want:  []int64{1, 2, 3, 3, 3, 3, 7},
		},
		{
			// Offsets have gaps (compaction, transaction markers): the
			// mark jumps to the next added offset, not to last+1.
			name:  "gaps in offsets",
			added: []int64{3, 7, 8, 20},
			order: []int64{3, 8, 7, 20},
			want:  []int64{7, 7, 20, 21},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTracker()
			tr.assign(tpA)
			for _, o := range tc.added {
				if _, _, ok := tr.add(tpA, o, 0, 0); !ok {
					t.Fatalf("add(%d) refused on an assigned partition", o)
				}
			}
			for i, o := range tc.order {
				finish(tr, tpA, o)
				got, ok := markOffsets(tr.commitable(nil))[tpA]
				if !ok || got != tc.want[i] {
					t.Fatalf("after done(%d): commit offset %d (present %v), want %d", o, got, ok, tc.want[i])
				}
				if got := tr.inflight(nil); got != len(tc.added)-i-1 {
					t.Fatalf("after done(%d): inflight %d, want %d", o, got, len(tc.added)-i-1)
				}
			}
		})
	}
}

func TestTrackerNothingFinishedNeverCommitsPastHead(t *testing.T) {
	tr := newTracker()
	tr.assign(tpA)
	if got := markOffsets(tr.commitable(nil)); len(got) != 0 {
		t.Fatalf("commitable with nothing added = %v, want none", got)
	}
	for o := int64(40); o < 45; o++ {
		tr.add(tpA, o, 0, 0)
	}
	// Nothing finished: whatever is offered must not pass the first record.
	if got, ok := markOffsets(tr.commitable(nil))[tpA]; ok && got > 40 {
		t.Fatalf("commit offset %d with nothing finished, must be <= 40", got)
	}
}

func TestTrackerAddRefused(t *testing.T) {
	tests := []struct {
		name  string
		setup func(tr *tracker)
	}{
		{"never assigned", func(tr *tracker) {}},
		{"other partition assigned", func(tr *tracker) { tr.assign(tpB) }},
		{"removed", func(tr *tracker) { tr.assign(tpA); tr.remove([]tp{tpA}) }},
		{"removed with unfinished records", func(tr *tracker) {
			tr.assign(tpA)
			tr.add(tpA, 1, 0, 0)
			tr.remove([]tp{tpA})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTracker()
			tc.setup(tr)
			if _, _, ok := tr.add(tpA, 5, 0, 0); ok {
				t.Fatal("add on an unassigned partition = true, want false")
			}
			if n := tr.inflight(nil); n != 0 {
				t.Fatalf("inflight = %d after a refused add, want 0", n)
			}
			// A late completion of a forgotten partition is harmless.
			finish(tr, tpA, 1)
			finish(tr, tpA, 5)
			if got := markOffsets(tr.commitable(nil)); len(got) != 0 {
				t.Fatalf("commitable = %v, want none", got)
			}
		})
	}
}

func TestTrackerReassignStartsClean(t *testing.T) {
	tr := newTracker()
	tr.assign(tpA)
	tr.add(tpA, 1, 0, 0)
	tr.add(tpA, 2, 0, 0)
	finish(tr, tpA, 1)
	commitAt(tr, tpA, 2)
	tr.remove([]tp{tpA})
	tr.assign(tpA)
	if n := tr.inflight(nil); n != 0 {
		t.Fatalf("inflight after re-assign = %d, want 0", n)
	}
	// The new owner may start below what this member committed before (a
	// commit by someone else in between can move it anywhere): the old
	// committed offset must not hide the new mark.
	tr.add(tpA, 0, 0, 0)
	finish(tr, tpA, 0)
	if got, ok := markOffsets(tr.commitable(nil))[tpA]; !ok || got != 1 {
		t.Fatalf("commit offset after re-assign = %d (present %v), want 1", got, ok)
	}
}

func TestTrackerAssignTwiceKeepsState(t *testing.T) {
	tr := newTracker()
	tr.assign(tpA)
	tr.add(tpA, 1, 0, 0)
	tr.assign(tpA) // a repeated assignment must not drop unfinished work
	if n := tr.inflight(nil); n != 1 {
		t.Fatalf("inflight = %d, want 1", n)
	}
	finish(tr, tpA, 1)
	if got := markOffsets(tr.commitable(nil))[tpA]; got != 2 {
		t.Fatalf("commit offset = %d, want 2", got)
	}
}

func TestTrackerDoneIdempotent(t *testing.T) {
	tests := []struct {
		name     string
		done     []int64
		wantInfl int
		wantMark int64
	}{
		{"done twice at the head", []int64{1, 1}, 2, 2},
		{"done twice behind a hole", []int64{2, 2}, 2, 1},
		{"done twice then the hole", []int64{2, 2, 1}, 1, 3},
		{"unknown offset", []int64{1, 7}, 2, 2},
		{"below every offset", []int64{1, 0}, 2, 2},
		{"everything, each twice", []int64{3, 3, 1, 2, 1, 2}, 0, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTracker()
			tr.assign(tpA)
			for o := int64(1); o <= 3; o++ {
				tr.add(tpA, o, 0, 0)
			}
			for _, o := range tc.done {
				finish(tr, tpA, o)
			}
			if n := tr.inflight(nil); n != tc.wantInfl {
				t.Fatalf("inflight = %d, want %d", n, tc.wantInfl)
			}
			got, ok := markOffsets(tr.commitable(nil))[tpA]
			if !ok || got != tc.wantMark {
				t.Fatalf("commit offset = %d (present %v), want %d", got, ok, tc.wantMark)
			}
		})
	}
}

func TestTrackerCommitable(t *testing.T) {
	tr := newTracker()
	for _, p := range []tp{tpA, tpB, tpC} {
		tr.assign(p)
		for o := int64(0); o < 4; o++ {
			tr.add(p, o, 0, 0)
		}
	}
	finish(tr, tpA, 0)
	finish(tr, tpB, 0)
	finish(tr, tpB, 1)
	finish(tr, tpC, 0)

	check := func(step string, only map[tp]bool, want map[tp]int64) {
		t.Helper()
		got := markOffsets(tr.commitable(only))
		if len(got) != len(want) {
			t.Fatalf("%s: commitable(%v) = %v, want %v", step, only, got, want)
		}
		for p, o := range want {
			if got[p] != o {
				t.Fatalf("%s: commitable(%v) = %v, want %v", step, only, got, want)
			}
		}
	}
	check("initial", nil, map[tp]int64{tpA: 1, tpB: 2, tpC: 1})
	check("filtered", map[tp]bool{tpB: true}, map[tp]int64{tpB: 2})
	check("filter on an unknown partition", map[tp]bool{{"nope", 9}: true}, map[tp]int64{})

	commitAt(tr, tpA, 1)
	commitAt(tr, tpB, 2)
	check("after commits", nil, map[tp]int64{tpC: 1})

	// A stale (lower) commit confirmation never moves committed back.
	commitAt(tr, tpB, 1)
	check("after a stale commit", nil, map[tp]int64{tpC: 1})

	// Finishing behind the hole does not move the mark: nothing new.
	finish(tr, tpA, 2)
	check("done behind a hole", nil, map[tp]int64{tpC: 1})

	finish(tr, tpA, 1)
	check("hole filled", nil, map[tp]int64{tpA: 3, tpC: 1})

	// A commit of an unassigned partition is ignored.
	commitAt(tr, tp{"nope", 0}, 10)
	check("unknown commit", nil, map[tp]int64{tpA: 3, tpC: 1})
}

func TestTrackerInflight(t *testing.T) {
	tr := newTracker()
	tr.assign(tpA)
	tr.assign(tpB)
	tr.assign(tpC)
	for o := int64(0); o < 3; o++ {
		tr.add(tpA, o, 0, 0)
	}
	tr.add(tpB, 10, 0, 0)
	tr.add(tpB, 11, 0, 0)
	finish(tr, tpA, 1)

	tests := []struct {
		name string
		only map[tp]bool
		want int
	}{
		{"all", nil, 4},
		{"one partition", map[tp]bool{tpA: true}, 2},
		{"other partition", map[tp]bool{tpB: true}, 2},
		{"assigned without records", map[tp]bool{tpC: true}, 0},
		{"two partitions", map[tp]bool{tpA: true, tpB: true}, 4},
		{"unknown", map[tp]bool{{"nope", 3}: true}, 0},
		{"false entries do not count", map[tp]bool{tpA: false, tpB: true}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tr.inflight(tc.only); got != tc.want {
				t.Fatalf("inflight(%v) = %d, want %d", tc.only, got, tc.want)
			}
		})
	}
	tr.remove([]tp{tpA})
	if got := tr.inflight(nil); got != 2 {
		t.Fatalf("inflight after removing a partition = %d, want 2", got)
	}
}

// TestTrackerRandomOrder finishes many offsets in random order, adding them
// in chunks meanwhile (so the pending slice is compacted and appended to in
// every combination), and checks the mark against the model after each step.
func TestTrackerRandomOrder(t *testing.T) {
	tests := []struct {
		name   string
		n      int
		chunk  int // offsets added at a time; n: all up front
		gapMax int // offsets step by 1..gapMax
	}{
		{"all added up front", 10000, 10000, 1},
		{"added in chunks", 10000, 97, 1},
		{"with gaps", 10000, 50, 4},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(i)+1, 42))
			var offsets []int64
			o := int64(rng.IntN(100))
			for range tc.n {
				offsets = append(offsets, o)
				o += 1 + int64(rng.IntN(tc.gapMax))
			}
			tr := newTracker()
			tr.assign(tpA)
			finished := make(map[int64]bool, tc.n)
			var unfinished []int64 // added, not finished, in random positions
			added := 0
			committed := int64(-1)
			for len(finished) < tc.n {
				if len(unfinished) == 0 || (added < tc.n && rng.IntN(4) == 0) {
					end := min(added+tc.chunk, tc.n)
					for _, o := range offsets[added:end] {
						if _, _, ok := tr.add(tpA, o, 0, 0); !ok {
							t.Fatalf("add(%d) refused", o)
						}
						unfinished = append(unfinished, o)
					}
					added = end
				}
				k := rng.IntN(len(unfinished))
				o := unfinished[k]
				unfinished[k] = unfinished[len(unfinished)-1]
				unfinished = unfinished[:len(unfinished)-1]
				finish(tr, tpA, o)
				finished[o] = true

				want := lowWater(offsets[:added], finished)
				got, ok := markOffsets(tr.commitable(nil))[tpA]
				if want > committed {
					if !ok || got != want {
						t.Fatalf("after done(%d) (%d finished): commit offset %d (present %v), want %d",
							o, len(finished), got, ok, want)
					}
				} else if ok {
					t.Fatalf("after done(%d): commit offset %d offered, but %d is committed already", o, got, committed)
				}
				if n := tr.inflight(nil); n != len(unfinished) {
					t.Fatalf("after done(%d): inflight %d, want %d", o, n, len(unfinished))
				}
				if rng.IntN(16) == 0 && ok {
					commitAt(tr, tpA, got)
					committed = got
				}
			}
		})
	}
}

func TestTrackerWait(t *testing.T) {
	tests := []struct {
		name    string
		release func(tr *tracker, stop chan struct{})
		want    bool
	}{
		{"condition met by completions", func(tr *tracker, _ chan struct{}) {
			finish(tr, tpA, 2)
		}, true},
		{"condition met by removal", func(tr *tracker, _ chan struct{}) {
			tr.remove([]tp{tpA})
		}, true},
		{"stopped", func(_ *tracker, stop chan struct{}) {
			close(stop)
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tr := newTracker()
				tr.assign(tpA)
				tr.add(tpA, 1, 0, 0)
				tr.add(tpA, 2, 0, 0)
				stop := make(chan struct{})
				res := make(chan bool, 1)
				go func() {
					res <- tr.wait(stop, func() bool { return tr.inflightLocked(nil) == 0 })
				}()
				synctest.Wait()
				// One completion is not enough, and must not wake it for good.
				finish(tr, tpA, 1)
				synctest.Wait()
				select {
				case got := <-res:
					t.Fatalf("wait returned %v before its condition held", got)
				default:
				}
				tc.release(tr, stop)
				synctest.Wait()
				select {
				case got := <-res:
					if got != tc.want {
						t.Fatalf("wait = %v, want %v", got, tc.want)
					}
				default:
					t.Fatal("wait still blocked after its release")
				}
			})
		})
	}
}

func TestTrackerWaitConditionAlreadyTrue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := newTracker()
		stop := make(chan struct{})
		close(stop) // even a closed stop: a true condition wins
		if !tr.wait(stop, func() bool { return true }) {
			t.Fatal("wait = false with its condition already true")
		}
	})
}

// The committed leader epoch is the epoch of the record just below the
// committed offset (the last one finished), not of the newest record added:
// a consumer resuming there validates its position against that epoch.
func TestTrackerCommitEpoch(t *testing.T) {
	type rec struct {
		offset int64
		epoch  int32
	}
	tests := []struct {
		name      string
		added     []rec
		done      []int64
		wantOff   int64
		wantEpoch int32
	}{
		{
			name:      "newer epoch added, not finished",
			added:     []rec{{0, 1}, {1, 1}, {2, 2}},
			done:      []int64{0, 1},
			wantOff:   2,
			wantEpoch: 1,
		},
		{
			name:      "finished behind a hole of a newer epoch",
			added:     []rec{{0, 1}, {1, 2}, {2, 3}},
			done:      []int64{0, 2},
			wantOff:   1,
			wantEpoch: 1,
		},
		{
			name:      "all finished",
			added:     []rec{{0, 1}, {1, 2}, {2, 3}},
			done:      []int64{2, 1, 0},
			wantOff:   3,
			wantEpoch: 3,
		},
		{
			name:      "gap before the committed offset",
			added:     []rec{{3, 4}, {9, 5}, {12, 6}},
			done:      []int64{3, 9},
			wantOff:   12,
			wantEpoch: 5,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTracker()
			tr.assign(tpA)
			for _, r := range tc.added {
				tr.add(tpA, r.offset, r.epoch, 0)
			}
			for _, o := range tc.done {
				finish(tr, tpA, o)
			}
			got, ok := tr.commitable(nil)[tpA]
			if !ok || got.offset != tc.wantOff {
				t.Fatalf("commit offset %d (present %v), want %d", got.offset, ok, tc.wantOff)
			}
			if got.epoch != tc.wantEpoch {
				t.Fatalf("commit epoch %d, want %d (of the last finished record below %d)", got.epoch, tc.wantEpoch, tc.wantOff)
			}
		})
	}
}

// A partition revoked and assigned back gets a new generation; what is done
// or committed under the old one must not touch the new one, whose offsets
// are records handed out again.
func TestTrackerGenerations(t *testing.T) {
	tests := []struct {
		name string
		// run gets the generations of the first and the second assignment
		// (offsets 0..2 added under each) and acts on the tracker.
		run          func(tr *tracker, g1, g2 uint64)
		wantMark     int64 // what commitable offers for tpA
		wantInflight int
	}{
		{
			name:         "nothing done",
			run:          func(tr *tracker, g1, g2 uint64) {},
			wantMark:     0,
			wantInflight: 3,
		},
		{
			name: "done under the old generation is ignored",
			run: func(tr *tracker, g1, g2 uint64) {
				tr.done(tpA, g1, 0)
				tr.done(tpA, g1, 1)
			},
			wantMark:     0,
			wantInflight: 3,
		},
		{
			name: "done under the new generation counts",
			run: func(tr *tracker, g1, g2 uint64) {
				tr.done(tpA, g1, 1)
				tr.done(tpA, g2, 0)
			},
			wantMark:     1,
			wantInflight: 2,
		},
		{
			name: "a commit of the old generation does not hide the new mark",
			run: func(tr *tracker, g1, g2 uint64) {
				tr.markCommitted(tpA, mark{gen: g1, offset: 3})
				tr.done(tpA, g2, 0)
			},
			wantMark:     1,
			wantInflight: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTracker()
			g1 := tr.assign(tpA)
			for o := int64(0); o < 3; o++ {
				tr.add(tpA, o, 0, 0)
			}
			if !tr.current(tpA, g1) {
				t.Fatal("first generation not current while assigned")
			}
			tr.remove([]tp{tpA})
			if tr.current(tpA, g1) {
				t.Fatal("first generation current after the partition was removed")
			}
			g2 := tr.assign(tpA)
			if g2 == g1 {
				t.Fatalf("re-assignment kept generation %d", g1)
			}
			if again := tr.assign(tpA); again != g2 {
				t.Fatalf("repeated assignment changed the generation from %d to %d", g2, again)
			}
			for o := int64(0); o < 3; o++ {
				if g, _, ok := tr.add(tpA, o, 0, 0); !ok || g != g2 {
					t.Fatalf("add(%d) = %d, %v, want %d, true", o, g, ok, g2)
				}
			}
			if tr.current(tpA, g1) || !tr.current(tpA, g2) {
				t.Fatal("current does not follow the re-assignment")
			}
			tc.run(tr, g1, g2)
			if got, ok := tr.commitable(nil)[tpA]; !ok || got.offset != tc.wantMark || got.gen != g2 {
				t.Fatalf("commitable = %+v (present %v), want offset %d of generation %d", got, ok, tc.wantMark, g2)
			}
			if n := tr.inflight(nil); n != tc.wantInflight {
				t.Fatalf("inflight = %d, want %d", n, tc.wantInflight)
			}
		})
	}
}
