package infer

import (
	"sync"
	"sync/atomic"
	"time"
)

// reserveFor is how long after a lane's last request the lanes below it
// keep room free for it.
const reserveFor = 30 * time.Second

// laneControl keeps a higher priority lane served first at the Kafka level:
// each model's queue already puts a higher lane's requests before any lower
// one's, so what is left is to keep a lower lane's backlog from taking the
// places a higher lane's requests need, in the models' queues and in the
// runner's in-flight bound. A lower lane is paused (pipeline.PauseLane, its
// records wait in Kafka) while
//
//   - a higher lane has more requests queued for some model than that
//     model's next batch takes (its target batch): the model is saturated
//     by higher work, so whatever the lower lane brings in would only wait
//     behind it; resumed once that backlog is down to half the batch;
//   - or the lane itself holds its share of the in-flight bound (half of it,
//     split among the lower lanes): the rest stays free for the highest
//     lane, however deep the lower lanes' backlogs; resumed at half that
//     share. Only while a higher lane is in use (a request of it handed
//     out within reserveFor): with no higher traffic the lane has the
//     whole bound. Reserving room nobody uses cost the default lane three
//     quarters of the bound, and every pause drops what the Kafka client
//     buffered for the lane's partitions, to be fetched again on resume:
//     draining a backlog of the normal lane, infer fetched each record
//     about thirty times.
//
// Pausing on any queued higher request instead would starve the lower lanes
// whenever the higher one has steady traffic, with the model idle most of
// the time.
type laneControl struct {
	n     int             // lanes
	cap   int64           // in-flight each lower lane may hold
	pause func(int, bool) // pauses (true) or resumes lane i's topic
	live  []atomic.Int64  // per lane: handed to the stage and not yet answered or dropped
	last  []atomic.Int64  // per lane: when a request of it was last handed out (unix nanoseconds)
	queue func(l int) []laneLoad
	now   func() time.Time

	mu     sync.Mutex
	paused []bool
	held   []atomic.Bool // paused, readable without the lock
}

// laneLoad is, for one model, the requests of the lanes above a lane queued
// for it, and its target batch.
type laneLoad struct {
	higher int
	target int
}

func newLaneControl(lanes, inflight int, pause func(int, bool), queue func(l int) []laneLoad) *laneControl {
	lc := &laneControl{n: lanes, pause: pause, queue: queue, live: make([]atomic.Int64, lanes), paused: make([]bool, lanes),
		held: make([]atomic.Bool, lanes), last: make([]atomic.Int64, lanes), now: time.Now}
	if lanes > 1 {
		lc.cap = max(1, int64(inflight/(2*(lanes-1))))
	}
	return lc
}

// handed counts a request of lane l handed to the stage at now (the
// caller's clock read: one less a request); done one answered or dropped.
func (lc *laneControl) handed(l int, now time.Time) {
	if lc != nil {
		lc.live[l].Add(1)
		if l < lc.n-1 { // the lowest lane reserves nothing
			lc.last[l].Store(now.UnixNano())
		}
	}
}

func (lc *laneControl) done(l int) {
	if lc == nil {
		return
	}
	// A lane paused at its share resumes when enough of its requests are
	// answered, which may be long after the last take (a model that is
	// down): look again then.
	if live := lc.live[l].Add(-1); live <= lc.cap/2 && lc.held[l].Load() {
		lc.update()
	}
}

// update pauses and resumes the lower lanes from the queues' contents and
// the lanes' in-flight counts. It is called after requests are queued and
// after batches leave the queues; cheap when nothing changes.
func (lc *laneControl) update() {
	if lc == nil || lc.n < 2 {
		return
	}
	lc.mu.Lock()
	defer lc.mu.Unlock()
	// The clock is read only when a lane is at its share and a higher lane
	// was ever used: a read per request was 2.5% of infer's CPU draining a
	// backlog of one lane.
	var since int64
	inUse := func(last int64) bool {
		if last == 0 {
			return false
		}
		if since == 0 {
			since = lc.now().Add(-reserveFor).UnixNano()
		}
		return last > since
	}
	higherLast, higherLive := int64(0), int64(0)
	for l := 1; l < lc.n; l++ {
		higherLast = max(higherLast, lc.last[l-1].Load())
		higherLive += lc.live[l-1].Load()
		live, was := lc.live[l].Load(), lc.paused[l]
		full := (live >= lc.cap || (was && live > lc.cap/2)) && inUse(higherLast)
		behind := false
		if higherLive == 0 && !full && !was {
			// No higher request in the stage, so none queued: nothing to
			// ask the queues (their counts cost an allocation per call).
			continue
		}
		for _, ld := range lc.queue(l) {
			if ld.higher > ld.target || (was && ld.higher > ld.target/2) {
				behind = true
				break
			}
		}
		if now := full || behind; now != was {
			lc.paused[l] = now
			lc.held[l].Store(now)
			lc.pause(l, now)
		}
	}
}

// pausedLanes reports which lanes are paused (for tests and status).
func (lc *laneControl) pausedLanes() []bool {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return append([]bool(nil), lc.paused...)
}
