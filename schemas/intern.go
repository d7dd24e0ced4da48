package schemas

import (
	"hash/maphash"
	"sync/atomic"
)

// Names that repeat from message to message (a model, its version, a
// tenant, a reply topic, a tensor's name) are interned: decoding one that
// was seen recently returns the string already made instead of allocating
// another (in S1, one allocation fewer per request in dedup and in infer).
// The table is small, fixed and lock-free: a slot per hash, the newest name
// wins it, so names that never repeat (hostile input, say) cost one extra
// allocation each and cannot grow it.
const (
	internSlots  = 1024 // a power of two
	internMaxLen = 64   // longer names are not interned
)

var (
	internSeed  = maphash.MakeSeed()
	internTable [internSlots]atomic.Pointer[string]
)

// intern returns b as a string, the one made for the same bytes before
// when its slot still holds it.
func intern(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > internMaxLen {
		return string(b)
	}
	slot := &internTable[maphash.Bytes(internSeed, b)&(internSlots-1)]
	if p := slot.Load(); p != nil && *p == string(b) {
		return *p
	}
	s := string(b)
	slot.Store(&s)
	return s
}
