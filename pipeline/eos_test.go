package pipeline_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
	"github.com/asyncinfer/asyncinfer/pipeline"
)

// copier copies each input to the outcomes topic, keyed by the input's
// offset, and remembers the offset in its state. Inputs for which hold
// returns true are finished only when release is closed.
type copier struct {
	t       testing.TB
	hold    func(off int64) bool
	release chan struct{}
}

func newCopier(t testing.TB, hold func(int64) bool) *copier {
	return &copier{t: t, hold: hold, release: make(chan struct{})}
}

func (cp *copier) Process(c *pipeline.Context, _ []byte) {
	off := c.Record().Offset
	c.Remember(offKey(off), "req", "")
	if cp.hold != nil && cp.hold(off) {
		go func() { <-cp.release; copyOut(cp.t, c) }()
		return
	}
	copyOut(cp.t, c)
}

func offKey(off int64) string { return fmt.Sprintf("off-%d", off) }

func runEOS(t *testing.T, e *kafkatest.Env, p pipeline.Processor[[]byte], instance string, timeout time.Duration) (*pipeline.Runner, func() error) {
	t.Helper()
	r := newRunner(t, e, testStage(e, "eos", true), p,
		pipeline.InstanceID(instance), pipeline.ExactlyOnce(timeout), pipeline.SessionTimeout(6*time.Second))
	return r, run(t, r)
}

// byOffset counts the records of the copy per input offset.
func byOffset(rs []*kgo.Record) map[int64]int {
	out := map[int64]int{}
	for _, r := range rs {
		out[int64(r.Key[0])]++
	}
	return out
}

// A unit that does not finish within the transaction timeout is aborted:
// the outputs its finished records produced are invisible to read_committed
// readers, their state is discarded, and the records are consumed again and
// committed once. read_uncommitted shows the aborted copies were written.
func TestEOSAbortLeavesNoTrace(t *testing.T) {
	e := kafkatest.New(t, 1)
	const n = 10
	for i := range n {
		e.ProduceRaw(t, e.Topics.Accepted, nil, []byte{byte(i)})
	}
	var first sync.Once
	held := false
	c := newCopier(t, func(off int64) bool {
		// Hold offset 7 the first time only: its unit times out.
		hold := false
		if off == 7 {
			first.Do(func() { hold, held = true, true })
		}
		return hold
	})
	r, stop := runEOS(t, e, c, "a", 500*time.Millisecond)
	kafkatest.Eventually(t, "an abort", func() bool { return testutil.ToFloat64(r.Metrics().Aborts.WithLabelValues("test")) >= 1 })
	kafkatest.Eventually(t, "every input committed once", func() bool { return len(e.ReadCommitted(t, e.Topics.Outcomes)) == n })
	kafkatest.Eventually(t, "every input's state applied", func() bool { return r.Window().Len() == n })
	close(c.release) // the held work of the aborted unit finishes late: stale
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if !held {
		t.Fatal("offset 7 was never held")
	}
	for off, k := range byOffset(e.ReadCommitted(t, e.Topics.Outcomes)) {
		if k != 1 {
			t.Errorf("offset %d copied %d times in committed output, want 1", off, k)
		}
	}
	if got := len(e.ReadAll(t, e.Topics.Outcomes)); got <= n {
		t.Errorf("read_uncommitted holds %d records: the aborted unit's copies should be there, hidden from read_committed", got)
	}
}

// A zombie is fenced: while instance "x" holds a unit open (some outputs
// produced, others not), a new process with the same instance id takes over.
// It fences the old producer (its open transaction is aborted) and commits
// every input once; the old one, released, cannot commit and stops with the
// fencing error.
func TestEOSZombieIsFenced(t *testing.T) {
	e := kafkatest.New(t, 1)
	const n = 10
	for i := range n {
		e.ProduceRaw(t, e.Topics.Accepted, nil, []byte{byte(i)})
	}
	old := newCopier(t, func(off int64) bool { return off >= 5 })
	rOld, stopOld := runEOS(t, e, old, "x", time.Minute)
	kafkatest.Eventually(t, "the old instance wrote its first outputs", func() bool {
		return len(e.ReadAll(t, e.Topics.Outcomes)) >= 5
	})
	if got := len(e.ReadCommitted(t, e.Topics.Outcomes)); got != 0 {
		t.Fatalf("%d outputs committed while the unit is open", got)
	}

	fresh := newCopier(t, nil)
	_, stopNew := runEOS(t, e, fresh, "x", time.Minute)
	kafkatest.Eventually(t, "the new instance committed every input", func() bool {
		return len(e.ReadCommitted(t, e.Topics.Outcomes)) >= n
	})
	close(old.release) // the zombie wakes up and tries to finish its unit
	errOld := stopOld()
	if errOld == nil || !strings.Contains(strings.ToLower(errOld.Error()), "fenced") {
		t.Errorf("the zombie's run ended with %v, want a fencing error", errOld)
	}
	if err := stopNew(); err != nil {
		t.Fatal(err)
	}
	for off, k := range byOffset(e.ReadCommitted(t, e.Topics.Outcomes)) {
		if k != 1 {
			t.Errorf("offset %d copied %d times in committed output, want 1", off, k)
		}
	}
	if got := len(e.ReadCommitted(t, e.Topics.Outcomes)); got != n {
		t.Errorf("%d committed outputs, want %d", got, n)
	}
	if got := rOld.Window().Len(); got != 0 {
		t.Errorf("the zombie applied the state of %d records", got)
	}
}

// A restarted instance resumes at once after its predecessor died with a
// transaction open past its offset commit (kill -9 while the transaction
// was ending): the group's offsets are unstable until that transaction ends,
// and a consumer that waited for them would sit idle until the broker timed
// it out (42 s were seen). Initializing the transactional producer at start
// fences the dead instance and aborts its transaction, so the offsets are
// stable again at once. The dead transaction's timeout here is 10 minutes: a
// restart that waited for it would fail the test's minute.
func TestEOSRestartAfterKillResumesAtOnce(t *testing.T) {
	e := kafkatest.New(t, 1)
	const n = 10
	for i := range n {
		e.ProduceRaw(t, e.Topics.Accepted, nil, []byte{byte(i)})
	}
	st := testStage(e, "eos", true)
	leaveDeadTransaction(t, e, st.TransactionalID("x"), st.Group, st.Input, n)
	fresh := newRunner(t, e, st, newCopier(t, nil),
		pipeline.InstanceID("x"), pipeline.ExactlyOnce(time.Minute), pipeline.SessionTimeout(6*time.Second))
	stop := run(t, fresh)
	kafkatest.Eventually(t, "every input committed by the restarted instance", func() bool {
		return len(e.ReadCommitted(t, e.Topics.Outcomes)) == n
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for off, k := range byOffset(e.ReadCommitted(t, e.Topics.Outcomes)) {
		if k != 1 {
			t.Errorf("offset %d copied %d times, want 1", off, k)
		}
	}
}

// leaveDeadTransaction leaves what a transactional stage instance killed
// while ending its transaction leaves: the transaction open on txnID, with
// the group's offset for topic's partition 0 committed in it (pending),
// and nobody to end it.
func leaveDeadTransaction(t *testing.T, e *kafkatest.Env, txnID, group, topic string, offset int64) {
	t.Helper()
	ctx := kafkatest.Ctx(t)
	cl := e.Client(t)
	init := kmsg.NewPtrInitProducerIDRequest()
	init.TransactionalID = &txnID
	init.TransactionTimeoutMillis = int32((10 * time.Minute).Milliseconds())
	initResp, err := init.RequestWith(ctx, cl)
	if err == nil {
		err = kerr.ErrorForCode(initResp.ErrorCode)
	}
	if err != nil {
		t.Fatalf("init producer id: %v", err)
	}
	add := kmsg.NewPtrAddOffsetsToTxnRequest()
	add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = txnID, initResp.ProducerID, initResp.ProducerEpoch, group
	addResp, err := add.RequestWith(ctx, cl)
	if err == nil {
		err = kerr.ErrorForCode(addResp.ErrorCode)
	}
	if err != nil {
		t.Fatalf("add offsets to txn: %v", err)
	}
	commit := kmsg.NewPtrTxnOffsetCommitRequest()
	commit.TransactionalID, commit.Group, commit.ProducerID, commit.ProducerEpoch = txnID, group, initResp.ProducerID, initResp.ProducerEpoch
	commit.Generation, commit.MemberID = -1, ""
	td, err := e.Admin.ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	rt := kmsg.NewTxnOffsetCommitRequestTopic()
	rt.Topic, rt.TopicID = topic, td[topic].ID // by name or by id, as the version says
	rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
	rp.Partition, rp.Offset, rp.LeaderEpoch = 0, offset, -1
	rt.Partitions = append(rt.Partitions, rp)
	commit.Topics = append(commit.Topics, rt)
	commitResp, err := commit.RequestWith(ctx, cl)
	if err == nil {
		for _, t := range commitResp.Topics {
			for _, p := range t.Partitions {
				if err == nil {
					err = kerr.ErrorForCode(p.ErrorCode)
				}
			}
		}
	}
	if err != nil {
		t.Fatalf("txn offset commit: %v", err)
	}
}

// A transaction timeout the broker refuses stops the stage at start with an
// error that names both settings, instead of retrying or failing later.
func TestEOSTransactionTimeoutAboveBrokerMax(t *testing.T) {
	e := kafkatest.New(t, 1)
	r := newRunner(t, e, testStage(e, "eos", false), newCopier(t, nil),
		pipeline.InstanceID("x"), pipeline.ExactlyOnce(20*time.Minute))
	err := r.Run(kafkatest.Ctx(t)) // returns by itself: the broker refuses
	for _, want := range []string{"runner.transaction_timeout", "transaction.max.timeout.ms"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Run: %v, want an error naming %s", err, want)
		}
	}
}

// A group session that dies while a unit is open (the broker restarted,
// the heartbeat failed) must not keep the unit's end waiting beyond the
// session timeout. franz-go's End confirms the membership with a heartbeat
// that only the group's heartbeat loop answers; that loop has quit, and the
// group's onLost waits for the rebalance the runner blocks until the unit
// ends (franz-go #1053), so End waited for its whole deadline: the
// transaction timeout plus 10 s (20 s idle after a clean broker restart on
// Apache Kafka, 70 s here). An End that has not returned within the session
// timeout waits for a session that is gone: it is given up and the
// transaction aborted, the partitions are lost and assigned again, and the
// record is consumed again and committed once.
func TestEOSEndAfterTheGroupSessionDied(t *testing.T) {
	e := kafkatest.New(t, 1)
	e.ProduceRaw(t, e.Topics.Accepted, nil, []byte{0})
	var deliveries atomic.Int32
	handed := make(chan struct{})
	cp := newCopier(t, func(int64) bool {
		if deliveries.Add(1) == 1 {
			close(handed)
			return true // the first delivery waits for release
		}
		return false
	})
	// The heartbeat after the record was handed out fails: the member's
	// session is over as far as the client's group loop knows.
	var failing atomic.Bool
	hbFailed := make(chan struct{})
	var once sync.Once
	e.Cluster.ControlKey(int16(kmsg.Heartbeat), func(req kmsg.Request) (kmsg.Response, error, bool) {
		e.Cluster.KeepControl()
		if !failing.Load() {
			return nil, nil, false
		}
		failing.Store(false)
		resp := req.ResponseKind().(*kmsg.HeartbeatResponse)
		resp.ErrorCode = kerr.UnknownMemberID.Code
		once.Do(func() { close(hbFailed) })
		return resp, nil, true
	})
	const session = 6 * time.Second
	r := newRunner(t, e, testStage(e, "eos", true), cp,
		pipeline.InstanceID("x"), pipeline.ExactlyOnce(time.Minute), pipeline.SessionTimeout(session))
	stop := run(t, r)
	<-handed
	failing.Store(true)
	select {
	case <-hbFailed:
	case <-time.After(30 * time.Second):
		t.Fatal("no heartbeat within 30 s")
	}
	released := time.Now()
	close(cp.release)
	kafkatest.Eventually(t, "the record committed", func() bool {
		return len(e.ReadCommitted(t, e.Topics.Outcomes)) == 1
	})
	took := time.Since(released)
	t.Logf("committed %v after the work finished", took)
	if took > session+5*time.Second {
		t.Errorf("the record was committed %v after its work finished, want within the session timeout (%v) and a rejoin", took, session)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := len(e.ReadCommitted(t, e.Topics.Outcomes)); got != 1 {
		t.Errorf("%d committed outputs, want 1", got)
	}
}

// A commit whose answer is lost (the broker committed, then went down
// before answering) stands: franz-go reports the end as failed, the retry
// aborts nothing, and the consumer would be rewound to the offsets before
// the unit and its records produced again in a second transaction, every
// one of them answered twice (seen after a clean broker stop on Apache
// Kafka). The group's committed offsets, read once the producer id is
// re-initialized, say the unit committed: its state is applied and nothing
// is consumed again.
//
// The answer can also come back as an error that leaves the commit unsure
// (UNKNOWN_SERVER_ERROR): franz-go then retries the end as an abort, which
// sends nothing (the failed call ended the transaction on the client), and
// returns "not committed" without an error. Believed, the unit's state was
// dropped while its offsets, committed at the broker, moved the consumer
// past its inputs: the keys they remembered were gone for good, and a
// later request with one of them was not known as a duplicate (seen in CI,
// Apache Kafka killed mid-stream, exactly-once: 4 duplicates answered
// SUCCEEDED).
func TestEOSCommitWhoseAnswerWasLost(t *testing.T) {
	for _, how := range []string{"connection closed", "unknown server error"} {
		t.Run(how, func(t *testing.T) { commitAnswerLost(t, how == "unknown server error") })
	}
}

// commitAnswerLost commits the stage's first transaction at the broker and
// loses its answer: the connection closes, or (answerErr) an
// UNKNOWN_SERVER_ERROR comes back.
func commitAnswerLost(t *testing.T, answerErr bool) {
	e := kafkatest.New(t, 1)
	const n = 5
	for i := range n {
		e.ProduceRaw(t, e.Topics.Accepted, nil, []byte{byte(i)})
	}
	replay := e.Client(t)
	// The broker stays unreachable for the stage's commit until it gives
	// the commit up: its retries of EndTxn get no answer either, until it
	// re-initializes its producer id or asks to abort.
	var lost, down atomic.Bool
	e.Cluster.ControlKey(int16(kmsg.InitProducerID), func(kmsg.Request) (kmsg.Response, error, bool) {
		e.Cluster.KeepControl()
		down.Store(false)
		return nil, nil, false
	})
	e.Cluster.ControlKey(int16(kmsg.EndTxn), func(req kmsg.Request) (kmsg.Response, error, bool) {
		e.Cluster.KeepControl()
		end := req.(*kmsg.EndTxnRequest)
		if !end.Commit {
			down.Store(false)
		}
		if down.Load() {
			return nil, errors.New("unreachable"), true
		}
		if !end.Commit || lost.Load() {
			return nil, nil, false
		}
		lost.Store(true)
		// The broker commits (the same request, on another connection),
		// and the answer never reaches the stage.
		e.Cluster.SleepControl(func() {
			again := kmsg.NewPtrEndTxnRequest()
			again.TransactionalID, again.ProducerID, again.ProducerEpoch, again.Commit = end.TransactionalID, end.ProducerID, end.ProducerEpoch, true
			resp, err := again.RequestWith(kafkatest.Ctx(t), replay)
			if err == nil {
				err = kerr.ErrorForCode(resp.ErrorCode)
			}
			if err != nil {
				t.Errorf("commit the transaction: %v", err)
			}
			if !answerErr {
				down.Store(true)
			}
		})
		if answerErr {
			resp := end.ResponseKind().(*kmsg.EndTxnResponse)
			resp.ErrorCode = kerr.UnknownServerError.Code
			return resp, nil, true
		}
		return nil, errors.New("the answer is lost"), true
	})
	r, stop := runEOS(t, e, newCopier(t, nil), "x", 10*time.Second)
	kafkatest.Eventually(t, "the unit ended", func() bool {
		m := r.Metrics()
		return lost.Load() && testutil.ToFloat64(m.Commits.WithLabelValues("test"))+testutil.ToFloat64(m.Aborts.WithLabelValues("test")) > 0
	})
	// One more record, after those: once it is committed, whatever was
	// consumed again before it was too.
	e.ProduceRaw(t, e.Topics.Accepted, nil, []byte{n})
	kafkatest.Eventually(t, "the next record committed", func() bool {
		return e.Committed(t, "eos", e.Topics.Accepted)[0] == n+1
	})
	// The broker commits before End returns, and the state is applied
	// after: wait for it. A unit whose state was dropped leaves it short
	// for good.
	kafkatest.Eventually(t, fmt.Sprintf("the state to hold %d entries", n+1), func() bool {
		return r.Window().Len() == n+1
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for off, k := range byOffset(e.ReadCommitted(t, e.Topics.Outcomes)) {
		if k != 1 {
			t.Errorf("offset %d copied %d times in committed output, want 1", off, k)
		}
	}
}

// An abort that never reached the broker leaves nothing open behind it. The
// group session dies while a unit is open (a heartbeat fails), so the end
// of its transaction gives up after the session timeout, the unit's offsets
// committed in it; then the broker is unreachable for 2 s, and the abort
// cannot reach it (franz-go's abort after an end that failed re-initializes
// the producer id, and when that fails too it returns as if done). The
// transaction stays open at the broker with its offsets pending, and the
// consumer that rejoins waits for them to be stable: until the broker times
// the transaction out (90 s here; 30 to 60 s were seen after a broker
// restart on Apache Kafka). Re-initializing the producer id once the broker
// answers fences it at once.
func TestEOSAbortThatNeverReachedTheBroker(t *testing.T) {
	e := kafkatest.New(t, 1)
	const n = 5
	for i := range n {
		e.ProduceRaw(t, e.Topics.Accepted, nil, []byte{byte(i)})
	}
	var failHB, hbFailed atomic.Bool
	var mu sync.Mutex
	var downSince time.Time
	var refused int
	unreachable := func(start bool) bool {
		mu.Lock()
		defer mu.Unlock()
		if downSince.IsZero() && start {
			downSince = time.Now()
		}
		if !downSince.IsZero() && time.Since(downSince) < 2*time.Second {
			refused++
			return true
		}
		return false
	}
	e.Cluster.ControlKey(int16(kmsg.Heartbeat), func(req kmsg.Request) (kmsg.Response, error, bool) {
		e.Cluster.KeepControl()
		if !failHB.Load() || hbFailed.Load() {
			return nil, nil, false
		}
		hbFailed.Store(true)
		resp := req.ResponseKind().(*kmsg.HeartbeatResponse)
		resp.ErrorCode = kerr.UnknownMemberID.Code
		return resp, nil, true
	})
	for _, key := range []kmsg.Key{kmsg.InitProducerID, kmsg.EndTxn} {
		e.Cluster.ControlKey(int16(key), func(kmsg.Request) (kmsg.Response, error, bool) {
			e.Cluster.KeepControl()
			// The first request after the failed end (franz-go's abort
			// re-initializing the producer id) finds the broker gone.
			if unreachable(hbFailed.Load() && key == kmsg.InitProducerID) {
				return nil, errors.New("unreachable"), true
			}
			return nil, nil, false
		})
	}
	handed := make(chan struct{})
	var once sync.Once
	cp := newCopier(t, func(int64) bool { once.Do(func() { close(handed) }); return true })
	_, stop := runEOS(t, e, cp, "x", time.Minute)
	<-handed
	failHB.Store(true)
	kafkatest.Eventually(t, "a heartbeat failed", hbFailed.Load)
	close(cp.release)
	kafkatest.Eventually(t, "every input committed after the outage", func() bool {
		return e.Committed(t, "eos", e.Topics.Accepted)[0] == n
	})
	mu.Lock()
	if refused == 0 {
		t.Error("no request refused: the abort reached the broker, the test proves less than it says")
	}
	mu.Unlock()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for off, k := range byOffset(e.ReadCommitted(t, e.Topics.Outcomes)) {
		if k != 1 {
			t.Errorf("offset %d copied %d times in committed output, want 1", off, k)
		}
	}
}

// A transaction of the stage that the broker left open, though its
// coordinator ended it, is named where it hangs: on its group's offsets
// partition, and on a partition the stage writes. In the status notices with
// the command that ends it, and in the gauge. kfake cannot leave one
// hanging, so a topic of 4 partitions the stage does not write stands in
// for __consumer_offsets, and the answer to DescribeProducers is made up:
// the stage's own producer, at its epoch (its transaction state is Empty:
// it consumed nothing), with a transaction open for an hour on the
// offsets partition, from offset 42, and on outcomes/2, from offset 7.
// Everything else (which partitions the stage asks about, the
// coordinator's word through ListTransactions and DescribeTransactions) is
// kfake's.
func TestEOSNamesATransactionLeftHanging(t *testing.T) {
	e := kafkatest.New(t, 4)
	st := testStage(e, "eos", true)
	offsets := e.Topics.Requests
	adm := kadm.NewClient(e.Client(t))
	var mu sync.Mutex
	asked := map[string]map[int32]bool{}
	var producer atomic.Pointer[kadm.DescribedTransaction]
	e.Cluster.ControlKey(int16(kmsg.DescribeProducers), func(req kmsg.Request) (kmsg.Response, error, bool) {
		e.Cluster.KeepControl()
		dp := req.(*kmsg.DescribeProducersRequest)
		resp := dp.ResponseKind().(*kmsg.DescribeProducersResponse)
		mu.Lock()
		defer mu.Unlock()
		for _, rt := range dp.Topics {
			t := kmsg.NewDescribeProducersResponseTopic()
			t.Topic = rt.Topic
			for _, p := range rt.Partitions {
				if asked[rt.Topic] == nil {
					asked[rt.Topic] = map[int32]bool{}
				}
				asked[rt.Topic][p] = true
				rp := kmsg.NewDescribeProducersResponseTopicPartition()
				rp.Partition = p
				start := int64(-1)
				switch {
				case rt.Topic == offsets:
					start = 42
				case rt.Topic == e.Topics.Outcomes && p == 2:
					start = 7
				}
				if x := producer.Load(); x != nil && start >= 0 {
					ap := kmsg.NewDescribeProducersResponseTopicPartitionActiveProducer()
					ap.ProducerID, ap.ProducerEpoch = x.ProducerID, int32(x.ProducerEpoch)
					ap.LastTimestamp = time.Now().Add(-time.Hour).UnixMilli()
					ap.CurrentTxnStartOffset = start
					rp.ActiveProducers = append(rp.ActiveProducers, ap)
				}
				t.Partitions = append(t.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, t)
		}
		return resp, nil, true
	})
	r := newRunner(t, e, st, newCopier(t, nil), pipeline.InstanceID("x"), pipeline.ExactlyOnce(2*time.Second),
		pipeline.SessionTimeout(6*time.Second), pipeline.OffsetsTopic(offsets))
	stop := run(t, r)
	kafkatest.Eventually(t, "the stage's producer initialized", func() bool {
		d, err := adm.DescribeTransactions(kafkatest.Ctx(t), st.TransactionalID("x"))
		if err != nil {
			return false
		}
		x, ok := d[st.TransactionalID("x")]
		if !ok || x.Err != nil || x.ProducerID < 0 {
			return false
		}
		producer.Store(&x)
		return true
	})
	part := pipeline.OffsetsPartition(st.Group, 4)
	wants := []string{
		fmt.Sprintf("open on %s/%d from offset 42", offsets, part), "this stage consumes nothing",
		fmt.Sprintf("open on %s/2 from offset 7", e.Topics.Outcomes), "its last stable offset is stuck there",
	}
	kafkatest.Eventually(t, "the stage names both hanging transactions", func() bool {
		said := strings.Join(r.Status().Notices, "\n")
		for _, w := range wants {
			if !strings.Contains(said, w) {
				return false
			}
		}
		return strings.Contains(said, "kafka-transactions.sh")
	})
	mu.Lock()
	if len(asked[offsets]) != 1 || !asked[offsets][part] {
		t.Errorf("the stage described the producers of %s partitions %v, want its group's only: %d", offsets, asked[offsets], part)
	}
	for _, topic := range []string{e.Topics.Outcomes, e.Topics.DedupState, e.Topics.DLQ} {
		if len(asked[topic]) != 4 {
			t.Errorf("the stage described the producers of %d partitions of %s, which it writes, want all 4", len(asked[topic]), topic)
		}
	}
	if len(asked[e.Topics.Accepted]) != 0 {
		t.Errorf("the stage described the producers of its input %s, which it does not write", e.Topics.Accepted)
	}
	mu.Unlock()
	if g := testutil.ToFloat64(r.Metrics().Hanging.WithLabelValues("test")); g != 2 {
		t.Errorf("hanging transactions gauge %v, want 2", g)
	}
	// Once the partitions have them no more, neither has the stage.
	producer.Store(nil)
	kafkatest.Eventually(t, "the notices gone", func() bool { return len(r.Status().Notices) == 0 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
