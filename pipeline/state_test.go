package pipeline

import (
	"container/list"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/asyncinfer/asyncinfer/schemas"
)

// testWindow is a Window on a settable clock.
type testWindow struct {
	*Window
	clock time.Time
}

func newTestWindow(ttl time.Duration, maxKeys int) *testWindow {
	tw := &testWindow{Window: NewWindow(ttl, maxKeys), clock: time.UnixMilli(1_700_000_000_000)}
	tw.now = func() time.Time { return tw.clock }
	return tw
}

func (tw *testWindow) advance(d time.Duration) { tw.clock = tw.clock.Add(d) }

// entry builds the entry key claimed by req, as a stage would, now.
func (tw *testWindow) entry(key, req string) schemas.StateEntry {
	return tw.Entry(key, req, schemas.StatusSucceeded)
}

func (tw *testWindow) put(p int32, key, req string) {
	e := tw.entry(key, req)
	tw.Stage(p, e)
	tw.Commit(p, e)
}

func TestWindow(t *testing.T) {
	const ttl = 10 * time.Second
	// seen is an expected Get: the request id that claims key on p, or ""
	// when the key must be unknown.
	type seen struct {
		p   int32
		key string
		req string
	}
	tests := []struct {
		name    string
		maxKeys int
		ops     func(w *testWindow)
		want    []seen
		wantLen int
	}{
		{
			name: "staged entry is visible, not counted as committed",
			ops: func(w *testWindow) {
				w.Stage(0, w.entry("k", "r1"))
			},
			want:    []seen{{0, "k", "r1"}, {1, "k", ""}, {0, "other", ""}},
			wantLen: 0,
		},
		{
			name: "commit makes it permanent",
			ops: func(w *testWindow) {
				w.put(0, "k", "r1")
			},
			want:    []seen{{0, "k", "r1"}},
			wantLen: 1,
		},
		{
			name: "discard leaves no trace",
			ops: func(w *testWindow) {
				e := w.entry("k", "r1")
				w.Stage(0, e)
				w.Discard(0, e)
			},
			want:    []seen{{0, "k", ""}},
			wantLen: 0,
		},
		{
			name: "discard of a staged key keeps the committed one",
			ops: func(w *testWindow) {
				w.put(0, "k", "r1")
				e := w.entry("k", "r2")
				w.Stage(0, e)
				w.Discard(0, e)
			},
			want:    []seen{{0, "k", "r1"}},
			wantLen: 1,
		},
		{
			name: "staged entry shadows the committed one",
			ops: func(w *testWindow) {
				w.put(0, "k", "r1")
				w.Stage(0, w.entry("k", "r2"))
			},
			want:    []seen{{0, "k", "r2"}},
			wantLen: 1,
		},
		{
			name: "two stagers: discarding the first leaves the second staged",
			ops: func(w *testWindow) {
				e1, e2 := w.entry("k", "r1"), w.entry("k", "r2")
				w.Stage(0, e1)
				w.Stage(0, e2)
				w.Discard(0, e1)
			},
			want:    []seen{{0, "k", "r2"}},
			wantLen: 0,
		},
		{
			name: "two stagers: both discarded",
			ops: func(w *testWindow) {
				e1, e2 := w.entry("k", "r1"), w.entry("k", "r2")
				w.Stage(0, e1)
				w.Stage(0, e2)
				w.Discard(0, e2)
				w.Discard(0, e1)
			},
			want:    []seen{{0, "k", ""}},
			wantLen: 0,
		},
		{
			name: "two stagers of one entry: one discarded, the other committed",
			ops: func(w *testWindow) {
				e := w.entry("k", "r1")
				w.Stage(0, e)
				w.Stage(0, e)
				w.Discard(0, e)
				w.Commit(0, e)
			},
			want:    []seen{{0, "k", "r1"}},
			wantLen: 1,
		},
		{
			name: "two stagers: one committed, the other discarded",
			ops: func(w *testWindow) {
				e1, e2 := w.entry("k", "r1"), w.entry("k", "r2")
				w.Stage(0, e1)
				w.Stage(0, e2)
				w.Commit(0, e1)
				w.Discard(0, e2)
			},
			want:    []seen{{0, "k", "r1"}},
			wantLen: 1,
		},
		{
			// The key must show the stager still in flight, not the one
			// that was discarded.
			name: "two stagers: discarding the later shows the earlier",
			ops: func(w *testWindow) {
				e1, e2 := w.entry("k", "r1"), w.entry("k", "r2")
				w.Stage(0, e1)
				w.Stage(0, e2)
				w.Discard(0, e2)
			},
			want:    []seen{{0, "k", "r1"}},
			wantLen: 0,
		},
		{
			name: "two stagers: discarding the later shows the committed one",
			ops: func(w *testWindow) {
				w.put(0, "k", "r0")
				e1, e2 := w.entry("k", "r1"), w.entry("k", "r2")
				w.Stage(0, e1)
				w.Stage(0, e2)
				w.Discard(0, e2)
				w.Discard(0, e1)
			},
			want:    []seen{{0, "k", "r0"}},
			wantLen: 1,
		},
		{
			name: "three stagers: discarding the middle, then the last, shows the first",
			ops: func(w *testWindow) {
				e1, e2, e3 := w.entry("k", "r1"), w.entry("k", "r2"), w.entry("k", "r3")
				w.Stage(0, e1)
				w.Stage(0, e2)
				w.Stage(0, e3)
				w.Discard(0, e2)
				w.Discard(0, e3)
			},
			want:    []seen{{0, "k", "r1"}},
			wantLen: 0,
		},
		{
			// The earlier commits while the later is in flight: the later
			// is still what a reader must see.
			name: "two stagers: the earlier committed, the later still staged",
			ops: func(w *testWindow) {
				e1, e2 := w.entry("k", "r1"), w.entry("k", "r2")
				w.Stage(0, e1)
				w.Stage(0, e2)
				w.Commit(0, e1)
			},
			want:    []seen{{0, "k", "r2"}},
			wantLen: 1,
		},
		{
			name: "discard of an entry never staged changes nothing",
			ops: func(w *testWindow) {
				w.Stage(0, w.entry("k", "r1"))
				w.Discard(0, w.entry("k", "r2"))
			},
			want:    []seen{{0, "k", "r1"}},
			wantLen: 0,
		},
		{
			// A stale Commit (its work finished after the revoke) must not
			// bring the dropped partition back.
			name: "commit after drop does not re-create the partition",
			ops: func(w *testWindow) {
				w.put(1, "old", "r0")
				e := w.entry("k", "r1")
				w.Stage(1, e)
				w.Drop(1)
				w.Commit(1, e)
			},
			want:    []seen{{1, "k", ""}, {1, "old", ""}},
			wantLen: 0,
		},
		{
			name: "stage after drop does not re-create the partition",
			ops: func(w *testWindow) {
				w.put(1, "old", "r0")
				w.Drop(1)
				w.Stage(1, w.entry("k", "r1"))
				w.Restore(1, w.entry("j", "r2"))
			},
			want:    []seen{{1, "k", ""}, {1, "j", ""}, {1, "old", ""}},
			wantLen: 0,
		},
		{
			name: "open after drop starts empty and takes changes",
			ops: func(w *testWindow) {
				w.put(1, "k", "r0")
				w.Drop(1)
				w.Open(1)
				w.put(1, "j", "r1")
			},
			want:    []seen{{1, "k", ""}, {1, "j", "r1"}},
			wantLen: 1,
		},
		{
			name: "open keeps a partition that is open",
			ops: func(w *testWindow) {
				w.put(0, "k", "r0")
				w.Stage(0, w.entry("s", "r1"))
				w.Open(0)
			},
			want:    []seen{{0, "k", "r0"}, {0, "s", "r1"}},
			wantLen: 1,
		},
		{
			// Work of the old assignment is discarded after the partition
			// came back: the new assignment's stager of the key stays.
			name: "a stale discard after re-open leaves the new stager",
			ops: func(w *testWindow) {
				old := w.entry("k", "r1")
				w.Stage(1, old)
				w.Drop(1)
				w.Open(1)
				w.Stage(1, w.entry("k", "r2"))
				w.Discard(1, old)
			},
			want:    []seen{{1, "k", "r2"}},
			wantLen: 0,
		},
		{
			name: "discard on an unknown partition",
			ops: func(w *testWindow) {
				w.Stage(0, w.entry("k", "r1"))
				w.Discard(1, w.entry("k", "r1"))
			},
			want: []seen{{0, "k", "r1"}, {1, "k", ""}},
		},
		{
			name: "committed entry lives until just before its ttl",
			ops: func(w *testWindow) {
				w.put(0, "k", "r1")
				w.advance(ttl - time.Millisecond)
			},
			want:    []seen{{0, "k", "r1"}},
			wantLen: 1,
		},
		{
			name: "committed entry expires at its ttl",
			ops: func(w *testWindow) {
				w.put(0, "k", "r1")
				w.advance(ttl)
			},
			want:    []seen{{0, "k", ""}},
			wantLen: 1, // not swept yet
		},
		{
			name: "expired entries are swept by the next put",
			ops: func(w *testWindow) {
				w.put(0, "old1", "r1")
				w.put(0, "old2", "r2")
				w.advance(ttl)
				w.put(0, "new", "r3")
			},
			want:    []seen{{0, "old1", ""}, {0, "old2", ""}, {0, "new", "r3"}},
			wantLen: 1,
		},
		{
			name: "re-put refreshes the ttl",
			ops: func(w *testWindow) {
				w.put(0, "k", "r1")
				w.advance(ttl / 2)
				w.put(0, "k", "r1")
				w.advance(ttl/2 + time.Millisecond)
			},
			want:    []seen{{0, "k", "r1"}},
			wantLen: 1,
		},
		{
			name:    "maxKeys evicts the oldest",
			maxKeys: 3,
			ops: func(w *testWindow) {
				for _, k := range []string{"k1", "k2", "k3", "k4"} {
					w.put(0, k, "r-"+k)
				}
			},
			want:    []seen{{0, "k1", ""}, {0, "k2", "r-k2"}, {0, "k3", "r-k3"}, {0, "k4", "r-k4"}},
			wantLen: 3,
		},
		{
			name:    "maxKeys: a re-put key becomes the newest",
			maxKeys: 3,
			ops: func(w *testWindow) {
				for _, k := range []string{"k1", "k2", "k3", "k1", "k4"} {
					w.put(0, k, "r-"+k)
				}
			},
			want:    []seen{{0, "k1", "r-k1"}, {0, "k2", ""}, {0, "k3", "r-k3"}, {0, "k4", "r-k4"}},
			wantLen: 3,
		},
		{
			// Each entry costs its key, its request id and 160 bytes: a
			// bound of 3 entries of 4+4 bytes holds 504 bytes; a long key
			// pushes out as many of the oldest as its size takes.
			name: "maxBytes evicts the oldest, a long key several",
			ops: func(w *testWindow) {
				w.MaxBytes(3 * (8 + entryOverhead))
				for _, k := range []string{"k001", "k002", "k003", "k004"} {
					w.put(0, k, "r"+k[1:])
				}
				w.put(1, "k001", "r001")
				w.put(1, string(make([]byte, 180)), "r999") // 184 + 160: more than two entries' worth
				w.Delete(0, "k004")
				w.put(0, "k005", "r005")
			},
			want: []seen{{0, "k001", ""}, {0, "k002", "r002"}, {0, "k003", "r003"}, {0, "k004", ""}, {0, "k005", "r005"},
				{1, "k001", ""}},
			wantLen: 4,
		},
		{
			name:    "maxKeys is per partition",
			maxKeys: 2,
			ops: func(w *testWindow) {
				w.put(0, "a", "r0a")
				w.put(0, "b", "r0b")
				w.put(1, "a", "r1a")
				w.put(1, "b", "r1b")
			},
			want:    []seen{{0, "a", "r0a"}, {0, "b", "r0b"}, {1, "a", "r1a"}, {1, "b", "r1b"}},
			wantLen: 4,
		},
		{
			name: "restore ignores expired entries",
			ops: func(w *testWindow) {
				live := w.entry("live", "r1")
				dead := w.entry("dead", "r2")
				dead.ExpiresAtMs = w.clock.UnixMilli() // expires now
				older := w.entry("older", "r3")
				older.ExpiresAtMs = w.clock.Add(-time.Hour).UnixMilli()
				w.Restore(0, live)
				w.Restore(0, dead)
				w.Restore(0, older)
			},
			want:    []seen{{0, "live", "r1"}, {0, "dead", ""}, {0, "older", ""}},
			wantLen: 1,
		},
		{
			name: "restore overwrites an older entry of the key",
			ops: func(w *testWindow) {
				w.Restore(0, w.entry("k", "r1"))
				w.Restore(0, w.entry("k", "r2"))
			},
			want:    []seen{{0, "k", "r2"}},
			wantLen: 1,
		},
		{
			name: "delete removes a committed key",
			ops: func(w *testWindow) {
				w.put(0, "k", "r1")
				w.put(0, "j", "r2")
				w.Delete(0, "k")
				w.Delete(0, "missing")
				w.Delete(7, "k")
			},
			want:    []seen{{0, "k", ""}, {0, "j", "r2"}},
			wantLen: 1,
		},
		{
			name: "drop forgets one partition",
			ops: func(w *testWindow) {
				w.put(0, "k", "r0")
				w.put(1, "k", "r1")
				w.Stage(1, w.entry("s", "r1s"))
				w.put(2, "k", "r2")
				w.Drop(1)
			},
			want:    []seen{{0, "k", "r0"}, {1, "k", ""}, {1, "s", ""}, {2, "k", "r2"}},
			wantLen: 2,
		},
		{
			name: "partitions are independent",
			ops: func(w *testWindow) {
				w.put(0, "k", "r0")
				e := w.entry("k", "r1")
				w.Stage(1, e)
				w.Discard(1, e)
				w.Stage(2, w.entry("k", "r2"))
				w.Delete(2, "k")
			},
			want:    []seen{{0, "k", "r0"}, {1, "k", ""}, {2, "k", "r2"}},
			wantLen: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			maxKeys := tc.maxKeys
			if maxKeys == 0 {
				maxKeys = 1000
			}
			w := newTestWindow(ttl, maxKeys)
			tc.ops(w)
			for _, s := range tc.want {
				e, ok := w.Get(s.p, s.key)
				switch {
				case s.req == "" && ok:
					t.Errorf("Get(%d, %q) = %+v, want none", s.p, s.key, e)
				case s.req != "" && !ok:
					t.Errorf("Get(%d, %q) = none, want request %q", s.p, s.key, s.req)
				case s.req != "" && e.RequestID != s.req:
					t.Errorf("Get(%d, %q) = request %q, want %q", s.p, s.key, e.RequestID, s.req)
				}
			}
			if got := w.Len(); got != tc.wantLen {
				t.Errorf("Len = %d, want %d", got, tc.wantLen)
			}
		})
	}
}

func TestWindowEntry(t *testing.T) {
	w := newTestWindow(90*time.Second, 10)
	e := w.Entry("key", "req", schemas.StatusExpired)
	want := schemas.StateEntry{Key: "key", RequestID: "req", Status: schemas.StatusExpired,
		ExpiresAtMs: w.clock.Add(90 * time.Second).UnixMilli()}
	if !sameEntry(e, want) {
		t.Fatalf("Entry = %+v, want %+v", e, want)
	}
	if w.TTL() != 90*time.Second {
		t.Fatalf("TTL = %v, want 90s", w.TTL())
	}
}

// BenchmarkWindowStageCommit is what one key costs the window on the hot
// path: staged by the work, committed once its outputs are durable.
func BenchmarkWindowStageCommit(b *testing.B) {
	w := NewWindow(time.Hour, 100_000)
	keys := make([]string, 1<<16)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d", i)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		e := w.Entry(keys[i%len(keys)], "request", "")
		w.Stage(0, e)
		if _, ok := w.Get(0, e.Key); !ok {
			b.Fatal("a staged key is not visible")
		}
		w.Commit(0, e)
	}
}

// refWindow is the committed half of a Window written the obvious way
// (a map and a list in insertion order): the model TestWindowModel checks
// the ring-based window against.
type refWindow struct {
	entries  map[string]*list.Element
	order    list.List // of schemas.StateEntry, oldest first
	bytes    int64
	maxKeys  int
	maxBytes int64
}

func (m *refWindow) put(e schemas.StateEntry, now int64) {
	if x, ok := m.entries[e.Key]; ok {
		m.remove(x)
	}
	m.entries[e.Key] = m.order.PushBack(e)
	m.bytes += int64(len(e.Key) + len(e.RequestID) + entryOverhead)
	for m.order.Len() > 0 {
		fe := m.order.Front()
		f := fe.Value.(schemas.StateEntry)
		if f.ExpiresAtMs > now && m.order.Len() <= m.maxKeys && (m.maxBytes <= 0 || m.bytes <= m.maxBytes) {
			break
		}
		m.remove(fe)
	}
}

func (m *refWindow) remove(x *list.Element) {
	e := m.order.Remove(x).(schemas.StateEntry)
	delete(m.entries, e.Key)
	m.bytes -= int64(len(e.Key) + len(e.RequestID) + entryOverhead)
}

func (m *refWindow) get(key string, now int64) (schemas.StateEntry, bool) {
	x, ok := m.entries[key]
	if !ok || x.Value.(schemas.StateEntry).ExpiresAtMs <= now {
		return schemas.StateEntry{}, false
	}
	return x.Value.(schemas.StateEntry), true
}

// The window keeps its committed entries in queues of chunks of slots and
// of bytes: random puts, restores, deletes and clock moves, with keys and
// request ids from 0 to 3 KB and bursts of large ones (so chunks fill,
// are freed and reused, and an entry can be larger than a chunk), must
// leave it answering as the obvious map-and-list does.
func TestWindowModel(t *testing.T) {
	statuses := []schemas.Status{"", schemas.StatusSucceeded, schemas.StatusFailed, schemas.StatusRejected, "SOMETHING_NEW"}
	for _, bounds := range []struct {
		maxKeys  int
		maxBytes int64
	}{{50, 0}, {5000, 0}, {5000, 40_000}, {3, 0}} {
		t.Run(fmt.Sprintf("keys=%d,bytes=%d", bounds.maxKeys, bounds.maxBytes), func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(uint64(bounds.maxKeys), uint64(bounds.maxBytes)))
			w := newTestWindow(time.Minute, bounds.maxKeys)
			w.MaxBytes(bounds.maxBytes)
			ref := &refWindow{entries: map[string]*list.Element{}, maxKeys: bounds.maxKeys, maxBytes: bounds.maxBytes}
			text := func(prefix string) string {
				n := rnd.IntN(40)
				if rnd.IntN(20) == 0 {
					n = rnd.IntN(3000)
				}
				return prefix + strings.Repeat("x", n)
			}
			key := func() string { return fmt.Sprintf("k%d-", rnd.IntN(400)) }
			for op := range 20_000 {
				now := w.clock.UnixMilli()
				switch r := rnd.IntN(100); {
				case r < 60:
					e := w.Entry(key()+text(""), text("r"), statuses[rnd.IntN(len(statuses))])
					w.Stage(0, e)
					w.Commit(0, e)
					ref.put(e, now)
				case r < 70: // a changelog record, expiring at any time
					e := schemas.StateEntry{Key: key(), RequestID: text("r"), ExpiresAtMs: now + int64(rnd.IntN(120_000)) - 30_000}
					w.Restore(0, e)
					if e.ExpiresAtMs > now {
						ref.put(e, now)
					}
				case r < 80:
					k := key()
					w.Delete(0, k)
					if x, ok := ref.entries[k]; ok {
						ref.remove(x)
					}
				case r < 85:
					w.advance(time.Duration(rnd.IntN(20_000)) * time.Millisecond)
				case r == 85: // a burst of large entries (one larger than a chunk): chunks come and go
					for i := range 200 {
						n := 500 + rnd.IntN(2500)
						if i == 0 {
							n = 70_000
						}
						e := w.Entry(key(), strings.Repeat("y", n), "")
						w.Stage(0, e)
						w.Commit(0, e)
						ref.put(e, now)
					}
				}
				if w.Len() != len(ref.entries) {
					t.Fatalf("op %d: Len = %d, want %d", op, w.Len(), len(ref.entries))
				}
				now = w.clock.UnixMilli()
				for range 3 {
					var k string
					if rnd.IntN(2) == 0 || ref.order.Len() == 0 {
						k = key()
					} else {
						k = ref.order.Back().Value.(schemas.StateEntry).Key
					}
					got, ok := w.Get(0, k)
					want, wok := ref.get(k, now)
					if ok != wok || !sameEntry(got, want) {
						t.Fatalf("op %d: Get(%q) = %+v, %v; want %+v, %v", op, k, got, ok, want, wok)
					}
				}
			}
		})
	}
}

// Two keys whose hashes collide are told apart: the later one is found, the
// earlier one is not (as if evicted), and neither answers for the other.
func TestWindowHashCollision(t *testing.T) {
	w := newTestWindow(time.Minute, 100)
	w.hash = func(string) uint64 { return 7 }
	w.put(0, "a", "ra")
	if e, ok := w.Get(0, "b"); ok {
		t.Fatalf("Get(b) = %+v with only a in the window", e)
	}
	w.put(0, "b", "rb")
	if e, ok := w.Get(0, "b"); !ok || e.RequestID != "rb" {
		t.Fatalf("Get(b) = %+v, %v; want rb", e, ok)
	}
	if e, ok := w.Get(0, "a"); ok {
		t.Fatalf("Get(a) = %+v after b took its hash; want none", e)
	}
	if w.Len() != 1 {
		t.Fatalf("Len = %d, want 1", w.Len())
	}
	w.Delete(0, "a") // not there: must not delete b
	if _, ok := w.Get(0, "b"); !ok {
		t.Fatal("Delete(a) deleted b")
	}
}

// BenchmarkWindowHotPath is what a new key costs a large window the way
// dedup and emit use it: looked up (not found), staged, and committed a
// poll later, in a window of 150,000 live keys per partition (a backlog's
// worth; the index and the slots no longer fit in the caches).
func BenchmarkWindowHotPath(b *testing.B) {
	const parts, live, lag = 4, 150_000, 256
	w := NewWindow(time.Hour, live)
	keys := make([]string, 1<<20)
	for i := range keys {
		keys[i] = fmt.Sprintf("%08x-5e1f-4c2a-9b7d-%012x", i*2654435761, i)
	}
	for i := range parts * live {
		k := keys[i%len(keys)]
		e := w.Entry(k, k, schemas.StatusSucceeded)
		w.Stage(int32(i%parts), e)
		w.Commit(int32(i%parts), e)
	}
	var inflight [lag]schemas.StateEntry
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := keys[(parts*live+i)%len(keys)]
		p := int32(i % parts)
		if _, ok := w.Get(p, k); ok {
			b.Fatal("a new key is found")
		}
		e := w.Entry(k, k, schemas.StatusSucceeded)
		w.Stage(p, e)
		if old := inflight[i%lag]; old.Key != "" {
			w.Commit(int32((i-lag)%parts), old)
		}
		inflight[i%lag] = e
	}
}
