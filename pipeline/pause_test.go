package pipeline

import (
	"fmt"
	"slices"
	"sync"
	"testing"
)

// fakeFetcher mimics the pause bookkeeping of *kgo.Client: a set of paused
// partitions that PauseFetchPartitions adds to and ResumeFetchPartitions
// removes from (resuming what is not paused is a no-op), independent of
// assignment.
type fakeFetcher struct {
	mu     sync.Mutex
	paused map[tp]bool
	calls  int
}

func newFakeFetcher() *fakeFetcher { return &fakeFetcher{paused: make(map[tp]bool)} }

func (f *fakeFetcher) PauseFetchPartitions(m map[string][]int32) map[string][]int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	for t, ps := range m {
		for _, p := range ps {
			f.paused[tp{t, p}] = true
		}
	}
	out := make(map[string][]int32)
	for t := range f.paused {
		out[t.topic] = append(out[t.topic], t.partition)
	}
	return out
}

func (f *fakeFetcher) ResumeFetchPartitions(m map[string][]int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	for t, ps := range m {
		for _, p := range ps {
			delete(f.paused, tp{t, p})
		}
	}
}

func (f *fakeFetcher) isPaused(t tp) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.paused[t]
}

func (f *fakeFetcher) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// checkPauseInvariant: the client fetches an assigned partition exactly when
// the registry says no reason holds it, and pauses nothing unassigned (it
// would carry that pause into the next assignment).
func checkPauseInvariant(t *testing.T, step string, p *Pauses, f *fakeFetcher) {
	t.Helper()
	p.mu.Lock()
	assigned := make([]tp, 0, len(p.assigned))
	for a := range p.assigned {
		assigned = append(assigned, a)
	}
	p.mu.Unlock()
	for _, a := range assigned {
		if got, want := f.isPaused(a), p.Paused(a.topic, a.partition); got != want {
			t.Fatalf("%s: %v paused in the client = %v, registry Paused = %v", step, a, got, want)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.paused {
		if !slices.Contains(assigned, c) {
			t.Fatalf("%s: %v paused in the client but not assigned", step, c)
		}
	}
}

func TestPauses(t *testing.T) {
	a0, a1, b0 := tp{"a", 0}, tp{"a", 1}, tp{"b", 0}
	type want struct {
		t       tp
		paused  bool
		reasons []string
	}
	tests := []struct {
		name string
		ops  []func(p *Pauses)
		want []want
		// lastCalls is the number of client calls the last op must make
		// (-1: not checked).
		lastCalls int
	}{
		{
			name: "two reasons, one lifted, stays paused",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.assign([]tp{a0, a1}) },
				func(p *Pauses) { p.Pause(PauseRestore, "a", 0) },
				func(p *Pauses) { p.Pause(PauseBreaker, "a", 0) },
				func(p *Pauses) { p.Resume(PauseRestore, "a", 0) },
			},
			want: []want{
				{a0, true, []string{PauseBreaker}},
				{a1, false, nil},
			},
			lastCalls: 0,
		},
		{
			name: "two reasons, both lifted, resumes",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.assign([]tp{a0}) },
				func(p *Pauses) { p.Pause(PauseRestore, "a", 0) },
				func(p *Pauses) { p.Pause(PauseBreaker, "a", 0) },
				func(p *Pauses) { p.Resume(PauseBreaker, "a", 0) },
				func(p *Pauses) { p.Resume(PauseRestore, "a", 0) },
			},
			want:      []want{{a0, false, nil}},
			lastCalls: 1,
		},
		{
			name: "global and local reasons",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.assign([]tp{a0, a1, b0}) },
				func(p *Pauses) { p.PauseAll(PauseBackpressure) },
				func(p *Pauses) { p.Pause(PauseRestore, "a", 0) },
			},
			want: []want{
				{a0, true, []string{PauseBackpressure, PauseRestore}},
				{a1, true, []string{PauseBackpressure}},
				{b0, true, []string{PauseBackpressure}},
			},
			lastCalls: 0, // a0 was paused already
		},
		{
			name: "global lifted, local holds",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.assign([]tp{a0, a1, b0}) },
				func(p *Pauses) { p.Pause(PauseRestore, "a", 0) },
				func(p *Pauses) { p.PauseAll(PauseBackpressure) },
				func(p *Pauses) { p.ResumeAll(PauseBackpressure) },
			},
			want: []want{
				{a0, true, []string{PauseRestore}},
				{a1, false, nil},
				{b0, false, nil},
			},
			lastCalls: 1,
		},
		{
			name: "local lifted, global holds",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.assign([]tp{a0, a1}) },
				func(p *Pauses) { p.Pause(PauseRestore, "a", 0) },
				func(p *Pauses) { p.PauseAll(PauseBackpressure) },
				func(p *Pauses) { p.Resume(PauseRestore, "a", 0) },
			},
			want: []want{
				{a0, true, []string{PauseBackpressure}},
				{a1, true, []string{PauseBackpressure}},
			},
			lastCalls: 0,
		},
		{
			name: "same reason global and local is listed once",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.assign([]tp{a0}) },
				func(p *Pauses) { p.Pause(PauseBreaker, "a", 0) },
				func(p *Pauses) { p.PauseAll(PauseBreaker) },
			},
			want: []want{{a0, true, []string{PauseBreaker}}},
		},
		{
			name: "two global reasons, one lifted",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.assign([]tp{a0, b0}) },
				func(p *Pauses) { p.PauseAll(PauseBackpressure) },
				func(p *Pauses) { p.PauseAll(PauseBreaker + ":m") },
				func(p *Pauses) { p.ResumeAll(PauseBackpressure) },
			},
			want: []want{
				{a0, true, []string{PauseBreaker + ":m"}},
				{b0, true, []string{PauseBreaker + ":m"}},
			},
			lastCalls: 0,
		},
		{
			name: "PauseAll in force is applied to a newly assigned partition",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.assign([]tp{a0}) },
				func(p *Pauses) { p.PauseAll(PauseBreaker) },
				func(p *Pauses) { p.assign([]tp{a1, b0}) },
			},
			want: []want{
				{a0, true, []string{PauseBreaker}},
				{a1, true, []string{PauseBreaker}},
				{b0, true, []string{PauseBreaker}},
			},
			lastCalls: 1,
		},
		{
			name: "PauseAll before any assignment",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.PauseAll(PauseBackpressure) },
				func(p *Pauses) { p.assign([]tp{a0}) },
			},
			want:      []want{{a0, true, []string{PauseBackpressure}}},
			lastCalls: 1,
		},
		{
			name: "newly assigned partition resumes with the global reason",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.PauseAll(PauseBackpressure) },
				func(p *Pauses) { p.assign([]tp{a0, a1}) },
				func(p *Pauses) { p.ResumeAll(PauseBackpressure) },
			},
			want:      []want{{a0, false, nil}, {a1, false, nil}},
			lastCalls: 1,
		},
		{
			name: "unassign resumes in the client and forgets local reasons",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.assign([]tp{a0, a1}) },
				func(p *Pauses) { p.Pause(PauseRestore, "a", 0) },
				func(p *Pauses) { p.Pause(PauseBreaker, "a", 0) },
				func(p *Pauses) { p.Pause(PauseRestore, "a", 1) },
				func(p *Pauses) { p.unassign([]tp{a0}) },
				func(p *Pauses) { p.assign([]tp{a0}) },
			},
			want: []want{
				{a0, false, nil},
				{a1, true, []string{PauseRestore}},
			},
			lastCalls: 0,
		},
		{
			name: "unassign under a global reason, re-assign re-applies it",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.assign([]tp{a0, a1}) },
				func(p *Pauses) { p.PauseAll(PauseBackpressure) },
				func(p *Pauses) { p.unassign([]tp{a0}) },
				func(p *Pauses) { p.assign([]tp{a0}) },
			},
			want: []want{
				{a0, true, []string{PauseBackpressure}},
				{a1, true, []string{PauseBackpressure}},
			},
			lastCalls: 1,
		},
		{
			name: "unassigned partition is not resumed by ResumeAll",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.assign([]tp{a0, a1}) },
				func(p *Pauses) { p.PauseAll(PauseBackpressure) },
				func(p *Pauses) { p.unassign([]tp{a1}) },
				func(p *Pauses) { p.ResumeAll(PauseBackpressure) },
			},
			want:      []want{{a0, false, nil}},
			lastCalls: 1,
		},
		{
			// The client keeps pauses of partitions it does not consume
			// and would apply them at their next assignment.
			name: "pause of an unassigned partition does not reach the client",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.assign([]tp{a0}) },
				func(p *Pauses) { p.Pause(PauseBreaker, "a", 1) },
			},
			want:      []want{{a0, false, nil}},
			lastCalls: 0,
		},
		{
			name: "resume of an unassigned partition does not reach the client",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.Pause(PauseBreaker, "a", 1) },
				func(p *Pauses) { p.Resume(PauseBreaker, "a", 1) },
			},
			want:      []want{{a1, false, nil}},
			lastCalls: 0,
		},
		{
			name: "resume of a reason never held is a no-op",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.assign([]tp{a0}) },
				func(p *Pauses) { p.Resume(PauseBreaker, "a", 0) },
			},
			want:      []want{{a0, false, nil}},
			lastCalls: 0,
		},
		{
			name: "resume of another reason leaves the held one",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.assign([]tp{a0}) },
				func(p *Pauses) { p.Pause(PauseRestore, "a", 0) },
				func(p *Pauses) { p.Resume(PauseBreaker, "a", 0) },
			},
			want:      []want{{a0, true, []string{PauseRestore}}},
			lastCalls: 0,
		},
		{
			name: "ResumeAll of a reason never held is a no-op",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.assign([]tp{a0}) },
				func(p *Pauses) { p.Pause(PauseRestore, "a", 0) },
				func(p *Pauses) { p.ResumeAll(PauseRestore) },
			},
			want:      []want{{a0, true, []string{PauseRestore}}},
			lastCalls: 0,
		},
		{
			name: "reasons are a set: pausing twice, one resume lifts it",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.assign([]tp{a0}) },
				func(p *Pauses) { p.Pause(PauseRestore, "a", 0) },
				func(p *Pauses) { p.Pause(PauseRestore, "a", 0) },
				func(p *Pauses) { p.Resume(PauseRestore, "a", 0) },
			},
			want:      []want{{a0, false, nil}},
			lastCalls: 1,
		},
		{
			name: "a topic's reason holds its partitions only, and later assignments of it",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.assign([]tp{a0, b0}) },
				func(p *Pauses) { p.PauseTopic(PauseLane, "a") },
				func(p *Pauses) { p.assign([]tp{a1}) },
			},
			want: []want{
				{a0, true, []string{PauseLane}},
				{a1, true, []string{PauseLane}},
				{b0, false, nil},
			},
			lastCalls: 1,
		},
		{
			name: "topic reason lifted, global and local reasons hold",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.assign([]tp{a0, a1, b0}) },
				func(p *Pauses) { p.PauseTopic(PauseLane, "a") },
				func(p *Pauses) { p.Pause(PauseRestore, "a", 0) },
				func(p *Pauses) { p.Pause(PauseLane, "a", 1) }, // also held by the topic: listed once
				func(p *Pauses) { p.PauseAll(PauseBackpressure) },
				func(p *Pauses) { p.ResumeTopic(PauseLane, "a") },
			},
			want: []want{
				{a0, true, []string{PauseBackpressure, PauseRestore}},
				{a1, true, []string{PauseBackpressure, PauseLane}},
				{b0, true, []string{PauseBackpressure}},
			},
			lastCalls: 0,
		},
		{
			name: "topic reason lifted last resumes, unassigned partitions untouched",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.assign([]tp{a0, a1}) },
				func(p *Pauses) { p.PauseTopic(PauseLane, "a") },
				func(p *Pauses) { p.unassign([]tp{a1}) },
				func(p *Pauses) { p.ResumeTopic(PauseLane, "a") },
				func(p *Pauses) { p.ResumeTopic(PauseLane, "a") },
			},
			want:      []want{{a0, false, nil}},
			lastCalls: 0, // the second resume: nothing held
		},
		{
			name: "PauseAll twice, one ResumeAll lifts it",
			ops: []func(p *Pauses){
				func(p *Pauses) { p.assign([]tp{a0}) },
				func(p *Pauses) { p.PauseAll(PauseBackpressure) },
				func(p *Pauses) { p.PauseAll(PauseBackpressure) },
				func(p *Pauses) { p.ResumeAll(PauseBackpressure) },
			},
			want:      []want{{a0, false, nil}},
			lastCalls: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeFetcher()
			p := newPauses(f)
			for i, op := range tc.ops {
				before := f.callCount()
				op(p)
				checkPauseInvariant(t, fmt.Sprintf("op %d", i), p, f)
				if i == len(tc.ops)-1 && tc.lastCalls >= 0 {
					if n := f.callCount() - before; n != tc.lastCalls {
						t.Fatalf("last op made %d client calls, want %d", n, tc.lastCalls)
					}
				}
			}
			for _, w := range tc.want {
				if got := p.Paused(w.t.topic, w.t.partition); got != w.paused {
					t.Errorf("Paused(%v) = %v, want %v", w.t, got, w.paused)
				}
				if got := f.isPaused(w.t); got != w.paused {
					t.Errorf("client paused %v = %v, want %v", w.t, got, w.paused)
				}
				if got := p.Reasons(w.t.topic, w.t.partition); !slices.Equal(got, w.reasons) {
					t.Errorf("Reasons(%v) = %q, want %q", w.t, got, w.reasons)
				}
			}
		})
	}
}

func TestPausesOnChange(t *testing.T) {
	a0, a1 := tp{"a", 0}, tp{"a", 1}
	p := newPauses(newFakeFetcher())
	got := map[string]int{}
	p.onChange = func(reason string, n int) { got[reason] = n }

	p.assign([]tp{a0, a1})
	p.PauseAll(PauseBackpressure)
	p.Pause(PauseRestore, "a", 0)
	p.Pause(PauseBackpressure, "a", 1) // also held globally: counted once
	want := map[string]int{PauseBackpressure: 2, PauseRestore: 1, PauseAdmission: 0, PauseBreaker: 0}
	for r, n := range want {
		if got[r] != n {
			t.Fatalf("after pauses: partitions held by %q = %d, want %d (all: %v)", r, got[r], n, got)
		}
	}

	p.unassign([]tp{a0})
	p.ResumeAll(PauseBackpressure)
	want = map[string]int{PauseBackpressure: 1, PauseRestore: 0, PauseAdmission: 0, PauseBreaker: 0}
	for r, n := range want {
		if got[r] != n {
			t.Fatalf("after unassign and ResumeAll: partitions held by %q = %d, want %d (all: %v)", r, got[r], n, got)
		}
	}

	// A reason named at run time goes back to 0 when it is lifted (it
	// stayed at its last count: the breaker's gauge read 4 after the
	// circuit closed).
	p.PauseAll(PauseBreaker + ":m")
	if got[PauseBreaker+":m"] != 1 {
		t.Fatalf("breaker:m holds %d partitions, want 1 (all: %v)", got[PauseBreaker+":m"], got)
	}
	p.ResumeAll(PauseBreaker + ":m")
	if n, ok := got[PauseBreaker+":m"]; !ok || n != 0 {
		t.Fatalf("after the breaker closed: breaker:m = %d (reported %v), want 0", n, ok)
	}

	// A topic's reason counts the topic's assigned partitions.
	p.assign([]tp{a0, {"b", 0}})
	p.PauseTopic(PauseLane, "a")
	if got[PauseLane] != 2 {
		t.Fatalf("lane holds %d partitions, want 2 (all: %v)", got[PauseLane], got)
	}
	p.ResumeTopic(PauseLane, "a")
	if got[PauseLane] != 0 {
		t.Fatalf("after ResumeTopic: lane holds %d, want 0", got[PauseLane])
	}
}
