//go:build race

package schemas

// raceEnabled: the race detector's runtime allocates differently (no tiny
// allocator: a boxed int32 takes 16 bytes, not 4).
const raceEnabled = true
