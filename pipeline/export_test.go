package pipeline

import "time"

// HeldMax is heldMax, for the tests.
const HeldMax = heldMax

// LogWait sets the longest a changelog record waits to go out (default
// logWait), and from how old a hold the next hand-out takes it along (half
// of it; LogDue changes that alone).
func LogWait(d time.Duration) Option { return optFn(func(c *cfg) { c.logWait, c.logDue = d, d/2 }) }

// LogDue sets from how old a hold the next hand-out takes it along.
func LogDue(d time.Duration) Option { return optFn(func(c *cfg) { c.logDue = d }) }

// LogFlushWorks is logFlushWorks, for the tests.
const LogFlushWorks = logFlushWorks

// HeldLogs is how many works wait for their changelog records to be
// produced.
func (r *Runner) HeldLogs() int {
	r.logs.mu.Lock()
	defer r.logs.mu.Unlock()
	return len(r.logs.cs)
}

// LearnPartitionsAfter keeps the input's partition count unknown for at
// least d after Run starts, as a slow metadata answer would.
func LearnPartitionsAfter(d time.Duration) Option {
	return optFn(func(c *cfg) { c.learnDelay = d })
}

// OffsetsTopic makes topic stand in for __consumer_offsets, which kfake
// does not have.
func OffsetsTopic(topic string) Option { return optFn(func(c *cfg) { c.offsetsTopic = topic }) }
