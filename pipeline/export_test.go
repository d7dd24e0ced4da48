package pipeline

import "time"

// HeldMax is heldMax, for the tests.
const HeldMax = heldMax

// LogWait sets how long a changelog record waits for the next poll's
// records (default logWait).
func LogWait(d time.Duration) Option { return optFn(func(c *cfg) { c.logWait = d }) }

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
