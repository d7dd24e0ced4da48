package main

import (
	"runtime/metrics"
	"syscall"
	"time"
)

// processCost is a snapshot of what this process has spent: CPU time (user
// and system) and heap allocations (objects), for the demo's cost per
// request. It covers everything in the process (the embedded broker, the
// load generator and the stages alike), so compare it between runs of the
// same demo, not with a stage alone.
type processCost struct {
	cpu    time.Duration
	allocs uint64
}

func costNow() processCost {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	s := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}}
	metrics.Read(s)
	return processCost{
		cpu:    time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
		allocs: s[0].Value.Uint64(),
	}
}

// perRequest is the cost between two snapshots divided by n requests: CPU
// microseconds and allocations.
func (c processCost) perRequest(since processCost, n int) (cpuMicros, allocs float64) {
	if n <= 0 {
		return 0, 0
	}
	return float64((c.cpu - since.cpu).Microseconds()) / float64(n), float64(c.allocs-since.allocs) / float64(n)
}
