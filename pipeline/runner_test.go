package pipeline_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

// Work finished out of order never moves the commit past an unfinished
// record: with record 0 held back, nothing is committed however many later
// records finish; once it finishes, the commit jumps past all of them.
func TestOutOfOrderCompletionCommitsLowWaterMark(t *testing.T) {
	e := kafkatest.New(t, 2)
	const n = 20
	pcl := e.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := 0; i <= n; i++ {
		p := int32(0)
		if i == n {
			p = 1 // a witness: its commit proves a commit round ran
		}
		if err := pcl.ProduceSync(kafkatest.Ctx(t), &kgo.Record{Topic: e.Topics.Accepted, Partition: p, Value: []byte{byte(i)}}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	h := newHolder()
	r := newRunner(t, e, testStage(e, "g", false), h, pipeline.CommitInterval(10*time.Millisecond))
	stop := run(t, r)
	kafkatest.Eventually(t, "all records handed over", func() bool { return h.full(0, n, 1) && h.full(1, 1, 1) })

	// Finish 1..n-1, in reverse, each producing an output record.
	for off := int64(n - 1); off >= 1; off-- {
		copyOut(t, h.get(0, off, 0))
	}
	kafkatest.Eventually(t, "outputs acknowledged", func() bool { return len(e.ReadAll(t, e.Topics.Outcomes)) == n-1 })
	// The witness on partition 1 finishes after them: once its commit
	// lands, a commit round ran with 1..n-1 finished and 0 not.
	h.get(1, 0, 0).Finish()
	kafkatest.Eventually(t, "the witness committed", func() bool { return e.Committed(t, "g", e.Topics.Accepted)[1] == 1 })
	if c, ok := e.Committed(t, "g", e.Topics.Accepted)[0]; ok && c > 0 {
		t.Fatalf("committed %d while offset 0 is unfinished", c)
	}
	h.get(0, 0, 0).Finish()
	kafkatest.Eventually(t, "commit past everything", func() bool {
		return e.Committed(t, "g", e.Topics.Accepted)[0] == n
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// At the in-flight bound the runner stops handing out records until half of
// them finish.
func TestInflightBound(t *testing.T) {
	e := kafkatest.New(t, 1)
	const n, bound = 40, 8
	for i := 0; i < n; i++ {
		e.ProduceRaw(t, e.Topics.Accepted, nil, []byte{byte(i)})
	}
	h := newHolder()
	r := newRunner(t, e, testStage(e, "g", false), h, pipeline.MaxInFlight(bound), pipeline.DrainTimeout(100*time.Millisecond))
	run(t, r)
	kafkatest.Eventually(t, "the first window", func() bool { return h.count() == bound })
	kafkatest.Eventually(t, "waiting at the bound", func() bool { return strings.Contains(r.Status().Waiting, "in-flight bound") })
	if r.Pauses().Paused(e.Topics.Accepted, 0) {
		// The client drops what it buffered for a paused partition and
		// fetches it again on resume: at the bound the runner stops
		// polling instead.
		t.Error("paused at the in-flight bound")
	}
	if got := h.count(); got != bound {
		t.Fatalf("handed out %d records with %d unfinished, bound %d", got, got, bound)
	}
	for off := int64(0); off < bound/2; off++ {
		h.get(0, off, 0).Finish()
	}
	kafkatest.Eventually(t, "more records after half finished", func() bool { return h.count() > bound })
	if got := h.count(); got > bound+bound/2 {
		t.Errorf("handed out %d records with the bound at %d", got, bound)
	}
}

// A Context handed out before its partition was revoked and then assigned
// back to the same member is stale: its Done is closed, and finishing it
// neither marks the new copy of its offset finished (the commit would pass a
// record still in flight) nor applies its state.
func TestStaleWorkAfterReassignIsIgnored(t *testing.T) {
	e := kafkatest.New(t, 2)
	const n = 5
	pcl := e.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for p := int32(0); p < 2; p++ {
		for i := 0; i < n; i++ {
			if err := pcl.ProduceSync(kafkatest.Ctx(t), &kgo.Record{Topic: e.Topics.Accepted, Partition: p, Value: []byte{byte(i)}}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	start := func(h *holder) (*pipeline.Runner, func() error) {
		t.Helper()
		r := newRunner(t, e, testStage(e, "g", true), h,
			pipeline.ConnOpts(kgo.HeartbeatInterval(50*time.Millisecond)),
			pipeline.CommitInterval(10*time.Millisecond), pipeline.DrainTimeout(50*time.Millisecond))
		return r, run(t, r)
	}

	a := newHolder()
	ra, stopA := start(a)
	kafkatest.Eventually(t, "first member handed every record", func() bool { return a.full(0, n, 1) && a.full(1, n, 1) })

	// A second member takes one partition (its copies stay unfinished, so
	// the revoke gives up waiting), then leaves, and it comes back.
	b := newHolder()
	_, stopB := start(b)
	kafkatest.Eventually(t, "second member handed a partition", func() bool { return len(b.partitions()) == 1 })
	moved := b.partitions()[0]
	kept := 1 - moved
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	kafkatest.Eventually(t, "partition handed out again", func() bool { return a.full(moved, n, 2) })

	for off := int64(0); off < n; off++ {
		c := a.get(moved, off, 0)
		select {
		case <-c.Done():
		default:
			t.Fatalf("%d@%d: Done not closed after the revoke", moved, off)
		}
		c.Remember("stale-"+string(rune('a'+off)), "req", "")
		copyOut(t, c)
	}
	// Once the kept partition's commit lands, a commit round ran after the
	// stale work settled: the moved partition must not be past its first
	// (unfinished) record.
	for off := int64(0); off < n; off++ {
		a.get(kept, off, 0).Finish()
	}
	for off := int64(1); off < n; off++ {
		a.get(moved, off, 1).Finish()
	}
	kafkatest.Eventually(t, "kept partition committed", func() bool { return e.Committed(t, "g", e.Topics.Accepted)[kept] == n })
	if c := e.Committed(t, "g", e.Topics.Accepted)[moved]; c > 0 {
		t.Fatalf("moved partition committed at %d while its record 0 is in flight", c)
	}
	for off := int64(0); off < n; off++ {
		if _, ok := ra.Window().Get(moved, "stale-"+string(rune('a'+off))); ok {
			t.Errorf("stale work's state is in the window")
		}
	}
	if got := len(e.ReadAll(t, e.Topics.Outcomes)); got != 0 {
		t.Errorf("stale work produced %d outputs", got)
	}
	a.get(moved, 0, 1).Finish()
	kafkatest.Eventually(t, "moved partition committed", func() bool { return e.Committed(t, "g", e.Topics.Accepted)[moved] == n })
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
}

// The in-flight bound counts bytes too: with room for 100 records but 8 KB,
// records of 1 KB stop at 8, and the stage gets more once half of the
// bytes are released.
func TestInflightByteBound(t *testing.T) {
	e := kafkatest.New(t, 1)
	const n, bound = 40, 8
	value := make([]byte, 1024-1) // with its 1-byte key
	for i := 0; i < n; i++ {
		e.ProduceRaw(t, e.Topics.Accepted, []byte{byte(i)}, value)
	}
	h := newHolder()
	r := newRunner(t, e, testStage(e, "g", false), h, pipeline.MaxInFlight(100), pipeline.MaxInFlightBytes(bound*1024),
		pipeline.DrainTimeout(100*time.Millisecond))
	run(t, r)
	kafkatest.Eventually(t, "the first window", func() bool { return h.count() == bound })
	kafkatest.Eventually(t, "waiting at the byte bound", func() bool { return strings.Contains(r.Status().Waiting, "in-flight bound") })
	if got := h.count(); got != bound {
		t.Fatalf("handed out %d records of 1 KB with a bound of %d KB", got, bound)
	}
	for off := int64(0); off < bound/2; off++ {
		h.get(0, off, 0).Finish()
	}
	kafkatest.Eventually(t, "more records after half finished", func() bool { return h.count() > bound })
	if got := h.count(); got > bound+bound/2 {
		t.Errorf("handed out %d records with the byte bound at %d", got, bound)
	}
}

// The records of a poll's works are produced together, once the poll is
// handed out (or every HeldMax works), not one work at a time: produced
// one by one, each goes out in a produce request of its own while the
// client is idle, and under load the broker's cost follows its requests.
func TestPollProducedTogether(t *testing.T) {
	e := kafkatest.New(t, 1)
	n := pipeline.HeldMax + 44
	for i := 0; i < n; i++ {
		e.ProduceRaw(t, e.Topics.Accepted, nil, []byte{byte(i)})
	}
	var mu sync.Mutex
	var events []byte
	note := func(b byte) { mu.Lock(); events = append(events, b); mu.Unlock() }
	h := newHolder()
	h.then = func(c *pipeline.Context, _ []byte) { note('P'); copyOut(t, c) }
	hook := bufferedHook(func(r *kgo.Record) {
		if r.Topic == e.Topics.Outcomes {
			note('B')
		}
	})
	r := newRunner(t, e, testStage(e, "g", false), h, pipeline.MaxInFlight(4*n), pipeline.ClientHooks(hook))
	run(t, r)
	kafkatest.Eventually(t, "every output acknowledged", func() bool { return len(e.ReadAll(t, e.Topics.Outcomes)) == n })
	mu.Lock()
	got := string(events)
	mu.Unlock()
	// Runs of hand-outs, each followed by the production of as many
	// records: a poll's (the first poll may hold one record, the next the
	// rest), cut every HeldMax.
	longest := 0
	for rest := got; rest != ""; {
		p := len(rest) - len(strings.TrimLeft(rest, "P"))
		rest = rest[p:]
		b := len(rest) - len(strings.TrimLeft(rest, "B"))
		rest = rest[b:]
		if p == 0 || p != b || p > pipeline.HeldMax {
			t.Fatalf("a run of %d hand-outs then %d records produced (at most %d together); in order:\n%s", p, b, pipeline.HeldMax, got)
		}
		longest = max(longest, p)
	}
	if longest < 2 {
		t.Fatalf("every record produced alone, as its work finished:\n%s", got)
	}
}

type bufferedHook func(*kgo.Record)

func (f bufferedHook) OnProduceRecordBuffered(r *kgo.Record) { f(r) }

// A work's changelog record, produced once its outputs are acknowledged,
// is held until the hold is due (half of logWait old, or logFlushWorks
// works), and then goes out with the next poll's hand-out, just before that
// poll's records (so that both can share a produce request), or after
// logWait when no poll comes. Here logWait is an hour, so only a poll (or
// the drain) can produce them: a hold not yet due stays through a poll, a
// due one goes with it.
func TestChangelogGoesOutWithTheNextPoll(t *testing.T) {
	for _, tc := range []struct {
		name            string
		due             bool   // the hold is due at the second poll (LogDue 0)
		second, drained string // events after the second poll, and after the drain
	}{
		{"not due: held through the poll", false, "PBPB", "PBPBC"},
		{"due: out with the poll", true, "PBPCB", "PBPCBC"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := kafkatest.New(t, 1)
			var mu sync.Mutex
			var events []byte
			note := func(b byte) { mu.Lock(); events = append(events, b); mu.Unlock() }
			seen := func() string { mu.Lock(); defer mu.Unlock(); return string(events) }
			h := newHolder()
			h.then = func(c *pipeline.Context, _ []byte) {
				note('P')
				c.Remember(fmt.Sprintf("k%d", c.Record().Offset), "req", "")
				copyOut(t, c)
			}
			hook := bufferedHook(func(r *kgo.Record) {
				switch r.Topic {
				case e.Topics.Outcomes:
					note('B')
				case e.Topics.DedupState:
					note('C')
				}
			})
			opts := []pipeline.Option{pipeline.ClientHooks(hook), pipeline.LogWait(time.Hour)}
			if tc.due {
				opts = append(opts, pipeline.LogDue(0))
			}
			r := newRunner(t, e, testStage(e, "g", true), h, opts...)
			stop := run(t, r)
			e.ProduceRaw(t, e.Topics.Accepted, nil, []byte{0})
			kafkatest.Eventually(t, "the output acknowledged and its changelog held", func() bool { return r.HeldLogs() == 1 })
			if got := seen(); got != "PB" {
				t.Fatalf("in order: %s, want PB (processed, output produced; the changelog waits)", got)
			}
			e.ProduceRaw(t, e.Topics.Accepted, nil, []byte{1})
			held := 2 // not due: both held
			if tc.due {
				held = 1 // the first went out with the poll
			}
			kafkatest.Eventually(t, "the next output acknowledged and its changelog held", func() bool {
				return r.HeldLogs() == held && strings.Count(seen(), "B") == 2
			})
			if got := seen(); got != tc.second {
				t.Fatalf("in order: %s, want %s", got, tc.second)
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if got := seen(); got != tc.drained {
				t.Errorf("in order: %s, want %s (the drain produces what is held, as one record)", got, tc.drained)
			}
			if n := len(e.StateEntries(t, e.Topics.DedupState)); n != 2 {
				t.Errorf("%d state entries written, want 2", n)
			}
		})
	}
}

// A hold of logFlushWorks works is due however young: the next poll takes
// it along (a backlog's drain writes full records without holding more
// works than that against the in-flight bound).
func TestChangelogFlushesAFullHold(t *testing.T) {
	e := kafkatest.New(t, 1)
	r := startRemembering(t, e, pipeline.LogWait(time.Hour))
	n := pipeline.LogFlushWorks
	produceInputs(t, e, n-1)
	kafkatest.Eventually(t, "every work's changelog held", func() bool { return r.HeldLogs() == n-1 })
	e.ProduceRaw(t, e.Topics.Accepted, nil, []byte{1})
	kafkatest.Eventually(t, "one more work held: still not due", func() bool { return r.HeldLogs() == n })
	if got := len(e.StateEntries(t, e.Topics.DedupState)); got != 0 {
		t.Fatalf("%d entries written before the hold was due", got)
	}
	e.ProduceRaw(t, e.Topics.Accepted, nil, []byte{2})
	kafkatest.Eventually(t, "the full hold out with the next poll", func() bool {
		return len(e.StateEntries(t, e.Topics.DedupState)) == n && r.HeldLogs() == 1
	})
}

// The state entries of works held together go out as one changelog record
// per partition (at most 512 entries each), keyed by the hex SHA-256 of
// their keys, and a new member restores every entry from them.
func TestChangelogEntriesGoOutTogether(t *testing.T) {
	for _, tc := range []struct {
		partitions int32
		n          int
	}{{2, 100}, {1, 600}} {
		t.Run(fmt.Sprintf("%d partitions, %d works", tc.partitions, tc.n), func(t *testing.T) {
			e := kafkatest.New(t, tc.partitions)
			h := newHolder()
			h.then = func(c *pipeline.Context, _ []byte) {
				c.Remember(fmt.Sprintf("k%d-%d", c.Record().Partition, c.Record().Offset), "req", "")
				copyOut(t, c)
			}
			cl := e.Client(t)
			var rs []*kgo.Record
			for i := range tc.n {
				rs = append(rs, &kgo.Record{Topic: e.Topics.Accepted, Key: fmt.Appendf(nil, "a%d", i), Value: []byte{0}})
			}
			if err := cl.ProduceSync(kafkatest.Ctx(t), rs...).FirstErr(); err != nil {
				t.Fatal(err)
			}
			r := newRunner(t, e, testStage(e, "g", true), h, pipeline.LogWait(time.Hour))
			stop := run(t, r)
			// Every work's entries held or written before the drain, which
			// flushes what is held together (a work whose output is
			// acknowledged after the drain began produces at once, alone).
			kafkatest.Eventually(t, "every work's entries held or written", func() bool {
				return r.HeldLogs()+len(e.StateEntries(t, e.Topics.DedupState)) == tc.n
			})
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			recs := e.ReadAll(t, e.Topics.DedupState)
			entries := 0
			keys := map[string]int32{}
			for _, rec := range recs {
				se, err := e.Codec.DecodeStateEntry(kafkatest.Ctx(t), rec.Value)
				if err != nil {
					t.Fatal(err)
				}
				all := append([]schemas.StateEntry{*se}, se.More...)
				entries += len(all)
				if len(all) > 512 {
					t.Errorf("a changelog record of %d entries, want at most 512", len(all))
				}
				sum := sha256.New()
				for _, x := range all {
					keys[x.Key] = rec.Partition
					if !strings.HasPrefix(x.Key, fmt.Sprintf("k%d-", rec.Partition)) {
						t.Errorf("entry %s in a record of partition %d", x.Key, rec.Partition)
					}
					sum.Write(binary.AppendUvarint(nil, uint64(len(x.Key))))
					sum.Write([]byte(x.Key))
				}
				want := []byte(all[0].Key)
				if len(all) > 1 {
					want = hex.AppendEncode(nil, sum.Sum(nil))
				}
				if !bytes.Equal(rec.Key, want) {
					t.Errorf("a record of %d entries keyed %q, want %q", len(all), rec.Key, want)
				}
			}
			if entries != tc.n {
				t.Fatalf("%d entries in the changelog, want %d", entries, tc.n)
			}
			if len(recs) > tc.n/4 {
				t.Errorf("%d changelog records for %d entries: not written together", len(recs), tc.n)
			}
			// A new member restores every entry.
			r2 := newRunner(t, e, testStage(e, "g", true), newHolder())
			stop2 := run(t, r2)
			kafkatest.Eventually(t, "ready", func() bool { return r2.Status().Ready })
			for k, p := range keys {
				if _, ok := r2.Window().Get(p, k); !ok {
					t.Errorf("entry %s not restored", k)
				}
			}
			if err := stop2(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A stage that asks for the input's partition count before the runner has
// learnt it waits for it, and never gets the 0 of "not known yet": dedup,
// given that 0, took requests on the wrong partition where they were and
// accepted one idempotency key on several partitions.
func TestInputPartitionsWaitsUntilKnown(t *testing.T) {
	e := kafkatest.New(t, 3)
	for i := range 6 {
		e.ProduceRaw(t, e.Topics.Accepted, []byte(fmt.Sprintf("k%d", i)), []byte{byte(i)})
	}
	var mu sync.Mutex
	var seen []int
	h := newHolder()
	h.then = func(c *pipeline.Context, _ []byte) {
		n := c.InputPartitions()
		mu.Lock()
		seen = append(seen, n)
		mu.Unlock()
		copyOut(t, c)
	}
	r := newRunner(t, e, testStage(e, "g", false), h, pipeline.LearnPartitionsAfter(300*time.Millisecond))
	stop := run(t, r)
	kafkatest.Eventually(t, "every record handed out", func() bool { return h.count() == 6 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, n := range seen {
		if n != 3 {
			t.Fatalf("InputPartitions gave %v, want 3 every time", seen)
		}
	}
}

// A runner at its in-flight bound waits for half of it to free, and the
// works whose changelog is held are among those it waits for: the held
// records go out at once then, not when the hold is due (here, an hour:
// without it the runner would wait forever).
func TestChangelogAtTheInFlightBound(t *testing.T) {
	e := kafkatest.New(t, 1)
	startRemembering(t, e, pipeline.LogWait(time.Hour), pipeline.MaxInFlight(4))
	const n = 40
	produceInputs(t, e, n)
	kafkatest.Eventually(t, "every work processed past the bound", func() bool {
		return len(e.ReadAll(t, e.Topics.Outcomes)) == n
	})
}

// startRemembering runs a runner whose stage remembers a key per record
// (a changelog entry per work) and copies it out; it stops with the test.
func startRemembering(t *testing.T, e *kafkatest.Env, opts ...pipeline.Option) *pipeline.Runner {
	t.Helper()
	h := newHolder()
	h.then = func(c *pipeline.Context, _ []byte) {
		c.Remember(fmt.Sprintf("k%d", c.Record().Offset), "req", "")
		copyOut(t, c)
	}
	r := newRunner(t, e, testStage(e, "g", true), h, opts...)
	stop := run(t, r)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	return r
}

// produceInputs produces n records to the runner's input.
func produceInputs(t *testing.T, e *kafkatest.Env, n int) {
	t.Helper()
	var rs []*kgo.Record
	for i := range n {
		rs = append(rs, &kgo.Record{Topic: e.Topics.Accepted, Key: fmt.Appendf(nil, "a%d", i), Value: []byte{0}})
	}
	if err := e.Client(t).ProduceSync(kafkatest.Ctx(t), rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}
