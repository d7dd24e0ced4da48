package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/asyncinfer/asyncinfer/schemas"
)

// Handler is a stage. Handle is called from the runner's poll goroutine, in
// offset order per partition, and must not block for long: a stage that
// waits (for a batch, a model) keeps the Work and finishes it later. Every
// Work must be finished exactly once, from any goroutine. ctx is cancelled
// only after the drain, when unfinished work no longer matters.
type Handler interface {
	Handle(ctx context.Context, w *Work)
}

// Assigner is implemented by stages that keep partition-local state.
// Assigned is called for each newly assigned partition before any of its
// records is fetched; a stage that must restore state pauses the partition
// (PauseRestore) there and restores in a goroutine started with Runner.Go.
// Revoked is called after the partition's in-flight work was drained and its
// offset committed (or, when the partition was lost, at once).
type Assigner interface {
	Assigned(ctx context.Context, r *Runner, topic string, partition int32)
	Revoked(topic string, partition int32)
}

// Binder is implemented by stages that need their runner (pauses, dead
// letters, the logger). Bind is called once, by New.
type Binder interface {
	Bind(r *Runner)
}

// Service is implemented by stages that run goroutines of their own (a worker
// pool). Run is started before the first poll with the work context and must
// return when it is cancelled, which happens after the drain.
type Service interface {
	Run(ctx context.Context) error
}

// Output is what finishing one input record produces. The runner produces
// Records, then, once Kafka acknowledged all of them, Changelog, then calls
// Apply, and only then counts the input as finished for the commit. If any
// produce fails, Discard is called instead of Apply and the input is dead-
// lettered (or, on shutdown, left to be re-delivered). If the input's
// partition was revoked since the Work was handed out, the Work is stale:
// Discard is called instead of Apply, and the input is left to the
// partition's next owner (which may be this member again).
type Output struct {
	Records   []*kgo.Record
	Changelog []*kgo.Record
	Apply     func()
	Discard   func()
}

// Work is one input record handed to a stage.
type Work struct {
	Record   *kgo.Record
	Received time.Time
	r        *Runner
	gen      uint64 // the assignment of the record's partition it belongs to
	unit     *unit  // exactly-once mode: the transaction it belongs to
	finished atomic.Bool
}

// Finish finishes the work with out. Calling it twice is a bug in the stage;
// the second call is logged and ignored. Finishing a stale Work (its
// partition was revoked since it was handed out) produces nothing and only
// calls out.Discard.
func (w *Work) Finish(out Output) {
	if !w.finished.CompareAndSwap(false, true) {
		w.r.log.Error("work finished twice", "stage", w.r.stage, "topic", w.Record.Topic,
			"partition", w.Record.Partition, "offset", w.Record.Offset)
		return
	}
	w.r.finish(w, out)
}

func (w *Work) tp() tp { return tp{w.Record.Topic, w.Record.Partition} }

// DeadLetter returns the dead-letter record for the work's input, for a
// stage to put in its Output.Records.
func (w *Work) DeadLetter(reason string, err error) (*kgo.Record, error) {
	return w.r.deadLetterRecord(w.Record, reason, err, false)
}

// Runner drives one stage: one consumer group member with its producer.
type Runner struct {
	cfg   cfg
	stage string
	group string
	h     Handler
	cl    *kgo.Client
	sess  *kgo.GroupTransactSession // exactly-once mode only
	tr    *tracker
	pause *Pauses
	log   *slog.Logger
	m     *Metrics

	workCtx    context.Context
	cancelWork context.CancelFunc
	goroutines sync.WaitGroup

	fatalOnce sync.Once
	fatalErr  error
	fatal     chan struct{}
	killed    atomic.Bool
	drained   atomic.Bool // the drain is over: revokes at close wait no more
	closeOnce sync.Once   // kgo's Close must not run twice concurrently
	// ready is closed when New is done: the client joins the group as soon
	// as it exists, so a rebalance callback can fire before New returns.
	ready chan struct{}
	// assignMu orders settling a Work against forgetting its partition:
	// settle checks the generation and applies under the read lock, forget
	// removes the partition under the write lock, so no Apply of a stale
	// Work can land after the stage's Revoked.
	assignMu sync.RWMutex
	// txnMu orders a Work's produce against the end of its transaction
	// (exactly-once mode; see endUnit).
	txnMu sync.RWMutex
	// failures are the inputs whose outputs failed to produce in an aborted
	// transaction (exactly-once mode): the next attempt dead-letters them.
	failMu   sync.Mutex
	failures map[offsetKey]bool

	// For Status.
	runState  atomic.Int32  // runNew, runRunning, runDraining, runStopped
	joined    atomic.Bool   // onAssigned ran at least once
	assignSeq atomic.Uint64 // odd while onAssigned runs
}

func (r *Runner) closeClient() {
	r.closeOnce.Do(func() {
		if r.sess != nil {
			r.sess.Close()
			return
		}
		r.cl.Close()
	})
}

// New creates the runner of stage as a member of group consuming topics. The
// client connection (seed brokers, TLS, SASL) comes from ConnOpts.
func New(stage, group string, topics []string, h Handler, opts ...Option) (*Runner, error) {
	c := defaultCfg()
	for _, o := range opts {
		o.apply(&c)
	}
	if err := c.validate(stage, group, topics, h); err != nil {
		return nil, err
	}
	r := &Runner{
		cfg:   c,
		stage: stage,
		group: group,
		h:     h,
		tr:    newTracker(),
		log:   c.logger.With("stage", stage, "group", group),
		m:     c.metrics,
		fatal: make(chan struct{}),
		ready: make(chan struct{}),
	}
	r.workCtx, r.cancelWork = context.WithCancel(context.Background())
	kopts := append(append([]kgo.Opt(nil), c.connOpts...),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topics...),
		kgo.DisableAutoCommit(),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(c.isolation),
		kgo.SessionTimeout(c.sessionTimeout),
		kgo.RebalanceTimeout(c.rebalanceTimeout),
		// Pauses are frequent (in-flight bound, breaker): a resumed partition
		// waits for the next fetch, so a short wait keeps resumes quick.
		kgo.FetchMaxWait(c.fetchMaxWait),
		kgo.ProducerLinger(c.linger),
		kgo.RecordPartitioner(newPartitioner(c.manualTopics)),
		// A revoke must not run between a poll and the tracker learning of
		// its records: the callback would drain without them, and after a
		// re-assignment they would join the new generation. Polls and
		// callbacks gate each other; the poll loop allows rebalances as
		// soon as the records are handed out.
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(r.onAssigned),
		kgo.OnPartitionsRevoked(r.onRevoked),
		kgo.OnPartitionsLost(r.onLost),
	)
	if c.instanceID != "" {
		kopts = append(kopts, kgo.InstanceID(c.instanceID))
	}
	if len(c.hooks) > 0 {
		kopts = append(kopts, kgo.WithHooks(c.hooks...))
	}
	if c.eos {
		id := c.instanceID
		if id == "" {
			id = randomID()
			r.log.Warn("exactly-once without an instance id: the transactional id is random, so a restarted process cannot fence its predecessor; give --instance-id")
		}
		kopts = append(kopts,
			kgo.TransactionalID(txnID(group, id)),
			kgo.TransactionTimeout(c.txnTimeout+30*time.Second),
			kgo.RequireStableFetchOffsets(),
			// With Kafka 4's transactions (KIP-890), the first produce
			// after EndTxn can get CONCURRENT_TRANSACTIONS; franz-go
			// retries it after a metadata refresh, which the default
			// minimum age of 5s delays: measured as 4-5 s stalls.
			kgo.MetadataMinAge(100*time.Millisecond),
		)
		sess, err := kgo.NewGroupTransactSession(kopts...)
		if err != nil {
			return nil, fmt.Errorf("pipeline: %s: new transactional client: %w", stage, err)
		}
		r.sess, r.cl = sess, sess.Client()
	} else {
		cl, err := kgo.NewClient(kopts...)
		if err != nil {
			return nil, fmt.Errorf("pipeline: %s: new client: %w", stage, err)
		}
		r.cl = cl
	}
	cl := r.cl
	r.pause = newPauses(cl)
	r.pause.onChange = func(reason string, n int) { r.m.Paused.WithLabelValues(stage, reason).Set(float64(n)) }
	if b, ok := h.(Binder); ok {
		b.Bind(r)
	}
	close(r.ready)
	return r, nil
}

// Client is the runner's Kafka client, for producing outside of a Work.
func (r *Runner) Client() *kgo.Client { return r.cl }

// Pauses is the runner's pause registry.
func (r *Runner) Pauses() *Pauses { return r.pause }

// Logger is the runner's logger, with the stage and group attached.
func (r *Runner) Logger() *slog.Logger { return r.log }

// Metrics are the runner's metrics.
func (r *Runner) Metrics() *Metrics { return r.m }

// Stage is the stage's name.
func (r *Runner) Stage() string { return r.stage }

// ConnOpts are the connection options, for clients of a stage's own (state
// restore).
func (r *Runner) ConnOpts() []kgo.Opt { return r.cfg.connOpts }

// Go runs fn in a goroutine owned by the runner: it gets the work context and
// the runner waits for it before Run returns.
func (r *Runner) Go(fn func(ctx context.Context)) {
	r.goroutines.Add(1)
	go func() {
		defer r.goroutines.Done()
		fn(r.workCtx)
	}()
}

// Fail stops the runner with err: a stage calls it when it cannot go on
// safely (state that cannot be restored).
func (r *Runner) Fail(err error) {
	r.fatalOnce.Do(func() {
		r.fatalErr = err
		close(r.fatal)
	})
}

// Run consumes until ctx is cancelled, then drains: it stops fetching, waits
// up to the drain timeout for unfinished work, commits what finished, and
// closes the client. It returns nil after a clean drain and the first fatal
// error otherwise.
func (r *Runner) Run(ctx context.Context) error {
	r.runState.Store(runRunning)
	defer r.runState.Store(runStopped)
	defer r.closeClient()
	loopCtx, cancelLoop := context.WithCancel(ctx)
	defer cancelLoop()
	go func() {
		select {
		case <-r.fatal:
			cancelLoop()
		case <-loopCtx.Done():
		}
	}()

	svcErr := make(chan error, 1)
	if s, ok := r.h.(Service); ok {
		r.goroutines.Add(1)
		go func() {
			defer r.goroutines.Done()
			svcErr <- s.Run(r.workCtx)
		}()
	}
	commitDone := make(chan struct{})
	if r.sess != nil {
		close(commitDone) // offsets are committed inside each transaction
		r.eosLoop(loopCtx)
	} else {
		go func() {
			defer close(commitDone)
			r.commitLoop(loopCtx)
		}()
		r.pollLoop(loopCtx)
	}
	r.runState.Store(runDraining)
	cancelLoop()
	<-commitDone
	if r.killed.Load() {
		r.cancelWork()
		r.goroutines.Wait()
		return nil
	}
	r.drain()
	r.drained.Store(true)
	r.cancelWork()
	r.goroutines.Wait()
	select {
	case err := <-svcErr:
		if err != nil && !errors.Is(err, context.Canceled) {
			r.Fail(err)
		}
	default:
	}
	select {
	case <-r.fatal:
		return r.fatalErr
	default:
		return nil
	}
}

// Kill stops the runner as a crash would: no drain, no commit, the client
// closed at once. Work in flight may still produce, but nothing it did is
// committed, so its input is re-delivered to the next owner. For tests of
// crash safety.
func (r *Runner) Kill() {
	r.killed.Store(true)
	r.Fail(errors.New("killed"))
	r.closeClient()
}

func (r *Runner) pollLoop(ctx context.Context) {
	defer r.cl.AllowRebalance()
	max := r.cfg.maxInflight
	for ctx.Err() == nil {
		n := r.tr.inflight(nil)
		r.m.Inflight.WithLabelValues(r.stage).Set(float64(n))
		if n >= max {
			// Stop fetching, and wait for half the window to free: the
			// hysteresis keeps the pause from flapping on every record.
			r.pause.PauseAll(PauseInflight)
			if !r.tr.wait(ctx.Done(), func() bool { return r.tr.inflightLocked(nil) <= max/2 }) {
				return
			}
			r.pause.ResumeAll(PauseInflight)
			continue
		}
		fs := r.cl.PollRecords(ctx, max-n)
		if fs.IsClientClosed() {
			return
		}
		r.fetchErrors(fs)
		now := time.Now()
		fs.EachRecord(func(rec *kgo.Record) {
			gen, ok := r.tr.add(tp{rec.Topic, rec.Partition}, rec.Offset, rec.LeaderEpoch)
			if !ok {
				return // revoked since the fetch: its new owner gets it
			}
			r.m.Consumed.WithLabelValues(r.stage).Inc()
			r.h.Handle(r.workCtx, &Work{Record: rec, Received: now, r: r, gen: gen})
		})
		r.cl.AllowRebalance()
	}
}

// fetchErrors logs fetch errors, and stops the stage on those that retrying
// cannot fix.
func (r *Runner) fetchErrors(fs kgo.Fetches) {
	fs.EachError(func(t string, p int32, err error) {
		if errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed) {
			return
		}
		if fatalFetchError(err) {
			r.Fail(fmt.Errorf("%s: not allowed to consume (%s/%d): %w; asyncinfer topics acls prints the ACLs each stage needs", r.group, t, p, err))
			return
		}
		r.log.Warn("fetch error", "topic", t, "partition", p, "err", err)
	})
}

func (r *Runner) commitLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.commitInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.commit(ctx, nil)
		}
	}
}

// commit commits the low-water marks of the given partitions (nil: all) that
// moved. Failures are counted and logged; the next round retries.
func (r *Runner) commit(ctx context.Context, only map[tp]bool) {
	marks := r.tr.commitable(only)
	if len(marks) == 0 {
		return
	}
	offs := make(map[string]map[int32]kgo.EpochOffset)
	for p, m := range marks {
		if offs[p.topic] == nil {
			offs[p.topic] = make(map[int32]kgo.EpochOffset)
		}
		offs[p.topic][p.partition] = kgo.EpochOffset{Epoch: m.epoch, Offset: m.offset}
	}
	r.cl.CommitOffsetsSync(ctx, offs, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				r.m.CommitErrors.WithLabelValues(r.stage).Inc()
				r.log.Warn("commit failed", "err", err)
			}
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if perr := kerr.ErrorForCode(p.ErrorCode); perr != nil {
					r.m.CommitErrors.WithLabelValues(r.stage).Inc()
					r.log.Warn("commit failed", "topic", t.Topic, "partition", p.Partition, "err", perr)
					continue
				}
				r.tr.markCommitted(tp{t.Topic, p.Partition}, marks[tp{t.Topic, p.Partition}])
			}
		}
		r.m.Commits.WithLabelValues(r.stage).Inc()
	})
}

// drain waits for unfinished work (up to the drain timeout) and commits.
func (r *Runner) drain() {
	stop := make(chan struct{})
	timer := time.AfterFunc(r.cfg.drainTimeout, func() { close(stop) })
	defer timer.Stop()
	if !r.tr.wait(stop, func() bool { return r.tr.inflightLocked(nil) == 0 }) {
		r.log.Warn("drain timed out; unfinished records will be re-delivered", "inflight", r.tr.inflight(nil))
	}
	if r.sess != nil {
		return // exactly-once: the last unit ended (and committed) in the loop
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r.commit(ctx, nil)
}

func toTPs(m map[string][]int32) []tp {
	var out []tp
	for t, ps := range m {
		for _, p := range ps {
			out = append(out, tp{t, p})
		}
	}
	return out
}

func (r *Runner) onAssigned(ctx context.Context, _ *kgo.Client, assigned map[string][]int32) {
	<-r.ready
	// Status must not see the new partitions before the stage had its say
	// (a restore pause): the sequence is odd meanwhile.
	r.assignSeq.Add(1)
	defer r.assignSeq.Add(1)
	defer r.joined.Store(true)
	ts := toTPs(assigned)
	for _, t := range ts {
		r.tr.assign(t)
	}
	r.pause.assign(ts)
	if a, ok := r.h.(Assigner); ok {
		for _, t := range ts {
			a.Assigned(ctx, r, t.topic, t.partition)
		}
	}
	if len(ts) > 0 {
		r.log.Info("partitions assigned", "partitions", len(ts))
	}
}

// onRevoked finishes the revoked partitions' work before they move: wait for
// it (bounded by the drain timeout), commit it, forget the partitions.
func (r *Runner) onRevoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	<-r.ready
	ts := toTPs(revoked)
	if len(ts) == 0 {
		return
	}
	only := make(map[tp]bool, len(ts))
	for _, t := range ts {
		only[t] = true
	}
	if !r.killed.Load() && !r.drained.Load() {
		stop := make(chan struct{})
		timer := time.AfterFunc(r.cfg.drainTimeout, func() { close(stop) })
		r.tr.wait(stop, func() bool { return r.tr.inflightLocked(only) == 0 })
		timer.Stop()
		if r.sess == nil { // exactly-once: nothing is in flight between units
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			r.commit(cctx, only)
			cancel()
		}
	}
	r.forget(ts)
	r.log.Info("partitions revoked", "partitions", len(ts))
}

// onLost forgets the partitions at once: another member owns them already,
// and a commit would fail.
func (r *Runner) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	<-r.ready
	ts := toTPs(lost)
	r.forget(ts)
	if len(ts) > 0 {
		r.log.Warn("partitions lost", "partitions", len(ts))
	}
}

func (r *Runner) forget(ts []tp) {
	r.assignMu.Lock()
	defer r.assignMu.Unlock()
	r.tr.remove(ts)
	r.pause.unassign(ts)
	if a, ok := r.h.(Assigner); ok {
		for _, t := range ts {
			a.Revoked(t.topic, t.partition)
		}
	}
}

// finish carries out the write order of an Output.
func (r *Runner) finish(w *Work, out Output) {
	if r.sess != nil {
		r.finishEOS(w, out)
		return
	}
	if !r.tr.current(w.tp(), w.gen) {
		r.stale(w, out)
		return
	}
	r.produceAll(out.Records, func(err error) {
		if err != nil {
			r.failed(w, out, err)
			return
		}
		// Produce from a goroutine: promises must not block on the client.
		r.goroutines.Add(1)
		go func() {
			defer r.goroutines.Done()
			r.produceAll(out.Changelog, func(err error) {
				if err != nil {
					r.failed(w, out, err)
					return
				}
				r.settle(w, out)
			})
		}()
	})
}

// settle applies a Work whose effects are all acknowledged and counts its
// input as finished, unless its partition was revoked meanwhile.
func (r *Runner) settle(w *Work, out Output) {
	r.assignMu.RLock()
	defer r.assignMu.RUnlock()
	if !r.tr.current(w.tp(), w.gen) {
		r.stale(w, out)
		return
	}
	if out.Apply != nil {
		out.Apply()
	}
	r.tr.done(w.tp(), w.gen, w.Record.Offset)
}

// stale drops a Work whose partition was revoked since it was handed out:
// its offset is no longer this assignment's to commit, and its state must
// not reach the window the partition's next assignment restores. The
// partition's owner re-delivers the input.
func (r *Runner) stale(w *Work, out Output) {
	if out.Discard != nil {
		out.Discard()
	}
	r.log.Debug("stale work dropped", "topic", w.Record.Topic, "partition", w.Record.Partition,
		"offset", w.Record.Offset)
}

// produceAll produces rs and calls done once with the first error, after
// every record is acknowledged or failed.
func (r *Runner) produceAll(rs []*kgo.Record, done func(error)) {
	if len(rs) == 0 {
		done(nil)
		return
	}
	var (
		left  atomic.Int64
		mu    sync.Mutex
		first error
	)
	left.Store(int64(len(rs)))
	for _, rec := range rs {
		r.cl.Produce(r.workCtx, rec, func(rec *kgo.Record, err error) {
			if err != nil {
				r.m.ProduceErrors.WithLabelValues(r.stage).Inc()
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			} else {
				r.m.Produced.WithLabelValues(r.stage, rec.Topic).Inc()
			}
			if left.Add(-1) == 0 {
				mu.Lock()
				err := first
				mu.Unlock()
				done(err)
			}
		})
	}
}

// failed handles a Work whose effects could not all be produced. On shutdown
// the input stays unfinished and is re-delivered; otherwise the input is
// dead-lettered so the partition does not stall on it, and if even that
// fails the runner stops.
func (r *Runner) failed(w *Work, out Output, err error) {
	if out.Discard != nil {
		out.Discard()
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed) || r.killed.Load() {
		return
	}
	if !r.tr.current(w.tp(), w.gen) {
		return // revoked meanwhile: the next owner tries again
	}
	r.log.Error("produce failed; dead-lettering the input", "topic", w.Record.Topic,
		"partition", w.Record.Partition, "offset", w.Record.Offset, "err", err)
	dl, derr := r.deadLetterRecord(w.Record, "produce_failed", err, false)
	if derr != nil {
		r.Fail(fmt.Errorf("pipeline: %s: dead letter: %w", r.stage, derr))
		return
	}
	r.goroutines.Add(1)
	go func() {
		defer r.goroutines.Done()
		r.produceAll([]*kgo.Record{dl}, func(err error) {
			if err != nil {
				r.Fail(fmt.Errorf("pipeline: %s: produce dead letter for %s/%d@%d: %w", r.stage,
					w.Record.Topic, w.Record.Partition, w.Record.Offset, err))
				return
			}
			r.tr.done(w.tp(), w.gen, w.Record.Offset)
		})
	}()
}

func (r *Runner) deadLetterRecord(src *kgo.Record, reason string, err error, answered bool) (*kgo.Record, error) {
	if r.cfg.dlqTopic == "" || r.cfg.dlqEncode == nil {
		return nil, errors.New("pipeline: no dead letter topic configured")
	}
	d := NewDeadLetter(r.stage, reason, err, src, r.cfg.maxDLQPayload)
	d.Answered = answered
	v, eerr := r.cfg.dlqEncode(d)
	if eerr != nil {
		return nil, eerr
	}
	r.m.DeadLetters.WithLabelValues(r.stage, reason).Inc()
	return &kgo.Record{Topic: r.cfg.dlqTopic, Key: src.Key, Value: v, Headers: deadLetterHeaders(d)}, nil
}

// DeadLetterCopy returns a dead letter of src marked as answered (an
// operator's copy of a FAILED request, not a terminal answer).
func (r *Runner) DeadLetterCopy(src *kgo.Record, reason string, err error) (*kgo.Record, error) {
	return r.deadLetterRecord(src, reason, err, true)
}

// NewDeadLetterEncoder adapts a schemas codec to the runner's dead-letter
// encoding.
func NewDeadLetterEncoder(c *schemas.Codec, topic string) func(*schemas.DeadLetter) ([]byte, error) {
	return func(d *schemas.DeadLetter) ([]byte, error) { return c.EncodeDeadLetter(topic, d) }
}

// fatalFetchError reports errors that retrying cannot fix: the broker refuses
// this principal. Failing the stage says so at once, instead of a warning
// every poll while nothing moves.
func fatalFetchError(err error) bool {
	for _, e := range []error{kerr.GroupAuthorizationFailed, kerr.TopicAuthorizationFailed,
		kerr.ClusterAuthorizationFailed, kerr.TransactionalIDAuthorizationFailed, kerr.SaslAuthenticationFailed} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
