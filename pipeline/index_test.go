package pipeline

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// The index answers as a map does through random sets, deletes and
// look-ups while it grows several times (so look-ups, sets and deletes
// meet arrays in the middle of a move), with hashes that crowd a few homes
// (long chains, wrapping at the array's end, shifted back on delete) and
// the hash 0.
func TestHashIndexModel(t *testing.T) {
	for _, spread := range []uint64{1 << 6, 1 << 20} {
		t.Run(fmt.Sprintf("spread=%d", spread), func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(spread, 1))
			hash := func() uint64 {
				switch rnd.IntN(50) {
				case 0:
					return 0
				case 1:
					return ^uint64(0) // the last home
				}
				// Few distinct low bits: many hashes share a home.
				return rnd.Uint64N(spread) | rnd.Uint64N(4)<<62
			}
			var x hashIndex
			model := map[uint64]uint64{}
			var keys []uint64
			check := func(op int, h uint64) {
				t.Helper()
				got, ok := x.get(h)
				want, wok := model[cellHash(h)]
				if ok != wok || got != want {
					t.Fatalf("op %d: get(%#x) = %d, %v; want %d, %v", op, h, got, ok, want, wok)
				}
			}
			for op := range 200_000 {
				// Grow to about 20,000, then shrink to nothing.
				grow := op < 120_000
				switch r := rnd.IntN(10); {
				case r < 5 && grow, r < 2:
					h := hash()
					if _, ok := model[cellHash(h)]; !ok {
						keys = append(keys, h)
					}
					x.set(h, uint64(op))
					model[cellHash(h)] = uint64(op)
				case len(keys) > 0:
					i := rnd.IntN(len(keys))
					h := keys[i]
					keys[i] = keys[len(keys)-1]
					keys = keys[:len(keys)-1]
					x.del(h)
					delete(model, cellHash(h))
					check(op, h)
				}
				if x.len() != len(model) {
					t.Fatalf("op %d: len = %d, want %d", op, x.len(), len(model))
				}
				check(op, hash())
				if len(keys) > 0 {
					check(op, keys[rnd.IntN(len(keys))])
				}
				if op%20_000 == 0 {
					for _, h := range keys {
						check(op, h)
					}
				}
			}
		})
	}
}

// A look-up in a large window misses the caches: the index's own cost,
// beside Go's map, at 150,000 hashes.
func BenchmarkHashIndex(b *testing.B) {
	const n = 150_000
	hs := make([]uint64, 1<<20)
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range hs {
		hs[i] = rnd.Uint64()
	}
	b.Run("index", func(b *testing.B) {
		var x hashIndex
		for i := range n {
			x.set(hs[i], uint64(i))
		}
		i := n
		for b.Loop() {
			h := hs[i%len(hs)]
			if _, ok := x.get(h); !ok {
				x.set(h, uint64(i))
			}
			x.del(hs[(i-n)%len(hs)])
			i++
		}
	})
	b.Run("map", func(b *testing.B) {
		m := map[uint64]uint64{}
		for i := range n {
			m[hs[i]] = uint64(i)
		}
		i := n
		for b.Loop() {
			h := hs[i%len(hs)]
			if _, ok := m[h]; !ok {
				m[h] = uint64(i)
			}
			delete(m, hs[(i-n)%len(hs)])
			i++
		}
	})
}

// While the index moves to a larger array, a hash deleted or set again
// whatever its cell's place in the old array (the next to move, in
// particular) is answered from where it now lives.
func TestHashIndexDuringMove(t *testing.T) {
	var x hashIndex
	model := map[uint64]uint64{}
	for i := uint64(1); x.old == nil; i++ {
		h := i * 0x9e3779b97f4a7c15
		x.set(h, i)
		model[h] = i
	}
	for step := 0; x.old != nil; step++ {
		if c := x.old[x.moved]; c.h != 0 && c.seq != tombstone {
			if step%2 == 0 {
				x.del(c.h)
				delete(model, c.h)
			} else {
				x.set(c.h, c.seq+1_000_000)
				model[c.h] = c.seq + 1_000_000
			}
		} else {
			x.move(1)
		}
		for h, want := range model {
			if got, ok := x.get(h); !ok || got != want {
				t.Fatalf("step %d: get(%#x) = %d, %v; want %d", step, h, got, ok, want)
			}
		}
		if x.len() != len(model) {
			t.Fatalf("step %d: len = %d, want %d", step, x.len(), len(model))
		}
	}
}

// len counts the hashes indexed (for the tests: the window keeps its own
// count).
func (x *hashIndex) len() int {
	n := x.n
	for _, c := range x.old[x.moved:] {
		if c.h != 0 && c.seq != tombstone {
			n++
		}
	}
	return n
}
