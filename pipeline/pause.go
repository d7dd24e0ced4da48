package pipeline

import (
	"sort"
	"sync"
)

// Pause reasons the runner and the stages use. A partition is fetched only
// when no reason holds it.
const (
	PauseAdmission = "admission" // admission control asks producers to wait
	PauseBreaker   = "breaker"   // the model backend's circuit is open
	PauseRestore   = "restore"   // the partition's state is being restored
	// PauseBackpressure: the stages downstream are behind by more than
	// admission's bound (dedup with admission: pause); requests wait in
	// Kafka.
	PauseBackpressure = "backpressure"
	// PauseLane: a higher priority lane has work (infer), or this lane holds
	// its share of the in-flight bound; the lane's records wait in Kafka.
	PauseLane = "lane"
)

// fetchPauser is the part of *kgo.Client the registry drives.
type fetchPauser interface {
	PauseFetchPartitions(map[string][]int32) map[string][]int32
	ResumeFetchPartitions(map[string][]int32)
}

// Pauses is the pause registry: pauses keyed by reason, per partition, for
// every assigned partition of a topic, or for every assigned partition. A
// partition resumes only when no reason is left, so two parts of a stage can
// pause for their own reasons without undoing each other. Every assignment
// re-applies the pauses in force.
type Pauses struct {
	mu       sync.Mutex
	cl       fetchPauser
	assigned map[tp]bool
	global   map[string]bool            // reasons that hold every assigned partition
	topics   map[string]map[string]bool // reasons that hold every assigned partition of a topic
	local    map[tp]map[string]bool     // reasons that hold one partition
	onChange func(reason string, n int) // metrics: partitions held by reason
	reported map[string]bool            // reasons onChange was told of
}

func newPauses(cl fetchPauser) *Pauses {
	return &Pauses{
		cl:       cl,
		assigned: make(map[tp]bool),
		global:   make(map[string]bool),
		topics:   make(map[string]map[string]bool),
		local:    make(map[tp]map[string]bool),
	}
}

func (p *Pauses) pausedLocked(t tp) bool {
	return len(p.global) > 0 || len(p.topics[t.topic]) > 0 || len(p.local[t]) > 0
}

// reasonsLocked lists what holds t, sorted, each once.
func (p *Pauses) reasonsLocked(t tp) []string {
	var out []string
	for r := range p.global {
		out = append(out, r)
	}
	for r := range p.topics[t.topic] {
		if !p.global[r] {
			out = append(out, r)
		}
	}
	for r := range p.local[t] {
		if !p.global[r] && !p.topics[t.topic][r] {
			out = append(out, r)
		}
	}
	sort.Strings(out)
	return out
}

// PauseTopic pauses every assigned partition of topic, and every one
// assigned later, for reason.
func (p *Pauses) PauseTopic(reason, topic string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.topics[topic][reason] {
		return
	}
	p.apply(func() {
		if p.topics[topic] == nil {
			p.topics[topic] = make(map[string]bool)
		}
		p.topics[topic][reason] = true
	}, p.topicLocked(topic))
}

// ResumeTopic lifts a PauseTopic for reason.
func (p *Pauses) ResumeTopic(reason, topic string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.topics[topic][reason] {
		return
	}
	p.apply(func() {
		delete(p.topics[topic], reason)
		if len(p.topics[topic]) == 0 {
			delete(p.topics, topic)
		}
	}, p.topicLocked(topic))
}

func (p *Pauses) topicLocked(topic string) []tp {
	var out []tp
	for t := range p.assigned {
		if t.topic == topic {
			out = append(out, t)
		}
	}
	return out
}

// PauseAll pauses every assigned partition, and every partition assigned
// later, for reason.
func (p *Pauses) PauseAll(reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.global[reason] {
		return
	}
	p.apply(func() { p.global[reason] = true }, p.allLocked())
}

// ResumeAll lifts a PauseAll for reason.
func (p *Pauses) ResumeAll(reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.global[reason] {
		return
	}
	p.apply(func() { delete(p.global, reason) }, p.allLocked())
}

// Pause pauses one partition for reason.
func (p *Pauses) Pause(reason, topic string, partition int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := tp{topic, partition}
	p.apply(func() {
		if p.local[t] == nil {
			p.local[t] = make(map[string]bool)
		}
		p.local[t][reason] = true
	}, []tp{t})
}

// Resume lifts the pause of one partition for reason.
func (p *Pauses) Resume(reason, topic string, partition int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := tp{topic, partition}
	p.apply(func() {
		delete(p.local[t], reason)
		if len(p.local[t]) == 0 {
			delete(p.local, t)
		}
	}, []tp{t})
}

// Reasons lists what holds a partition, sorted.
func (p *Pauses) Reasons(topic string, partition int32) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reasonsLocked(tp{topic, partition})
}

// snapshot lists, under one lock, every assigned partition with the reasons
// holding it, sorted (nil when none).
func (p *Pauses) snapshot() map[tp][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[tp][]string, len(p.assigned))
	for t := range p.assigned {
		out[t] = p.reasonsLocked(t)
	}
	return out
}

// Paused reports whether any reason holds the partition.
func (p *Pauses) Paused(topic string, partition int32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pausedLocked(tp{topic, partition})
}

// apply runs change and pauses or resumes, among ts, the assigned partitions
// whose state flipped.
func (p *Pauses) apply(change func(), ts []tp) {
	before := make(map[tp]bool, len(ts))
	for _, t := range ts {
		before[t] = p.pausedLocked(t)
	}
	change()
	pause, resume := map[string][]int32{}, map[string][]int32{}
	for _, t := range ts {
		now := p.pausedLocked(t)
		if now == before[t] || !p.assigned[t] {
			continue
		}
		if now {
			pause[t.topic] = append(pause[t.topic], t.partition)
		} else {
			resume[t.topic] = append(resume[t.topic], t.partition)
		}
	}
	if len(pause) > 0 {
		p.cl.PauseFetchPartitions(pause)
	}
	if len(resume) > 0 {
		p.cl.ResumeFetchPartitions(resume)
	}
	p.reportLocked()
}

func (p *Pauses) allLocked() []tp {
	out := make([]tp, 0, len(p.assigned))
	for t := range p.assigned {
		out = append(out, t)
	}
	return out
}

// assign records newly assigned partitions and re-applies the pauses that
// hold them: a partition assigned while a global reason is in force must not
// fetch a single record.
func (p *Pauses) assign(ts []tp) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pause := map[string][]int32{}
	for _, t := range ts {
		p.assigned[t] = true
		if p.pausedLocked(t) {
			pause[t.topic] = append(pause[t.topic], t.partition)
		}
	}
	if len(pause) > 0 {
		p.cl.PauseFetchPartitions(pause)
	}
	p.reportLocked()
}

// setClient points the registry at a new client (a renewed producer's):
// what it pauses is applied there as partitions are assigned to it.
func (p *Pauses) setClient(cl fetchPauser) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cl = cl
}

// unassign forgets revoked partitions, and their local reasons with them: a
// new owner decides afresh. The client forgets nothing by itself, so they
// are resumed there to start clean when they come back.
func (p *Pauses) unassign(ts []tp) {
	p.mu.Lock()
	defer p.mu.Unlock()
	resume := map[string][]int32{}
	for _, t := range ts {
		if p.pausedLocked(t) {
			resume[t.topic] = append(resume[t.topic], t.partition)
		}
		delete(p.assigned, t)
		delete(p.local, t)
	}
	if len(resume) > 0 {
		p.cl.ResumeFetchPartitions(resume)
	}
	p.reportLocked()
}

func (p *Pauses) reportLocked() {
	if p.onChange == nil {
		return
	}
	// Every reason ever reported is reported again, at 0 once it is gone:
	// a reason named at run time (breaker:<model>) must not stay at its
	// last count after it is lifted.
	if p.reported == nil {
		p.reported = map[string]bool{PauseBackpressure: true, PauseAdmission: true, PauseRestore: true, PauseRegistry: true}
	}
	counts := make(map[string]int, len(p.reported))
	for r := range p.reported {
		counts[r] = 0
	}
	for r := range p.global {
		counts[r] = len(p.assigned)
	}
	for t := range p.assigned {
		for r := range p.topics[t.topic] {
			if !p.global[r] {
				counts[r]++
			}
		}
		for r := range p.local[t] {
			if !p.global[r] && !p.topics[t.topic][r] {
				counts[r]++
			}
		}
	}
	for r, n := range counts {
		p.reported[r] = true
		p.onChange(r, n)
	}
}
