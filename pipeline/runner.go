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

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/topics"
)

// Runner drives one stage: one consumer group member with its producer.
type Runner struct {
	cfg       cfg
	spec      topics.Stage
	stage     string
	group     string
	h         any // the processor, for its optional interfaces
	decode    func(context.Context, []byte) (any, error)
	process   func(*Context, any)
	held      []*Context // works finished during a hand-out, not yet produced (poll goroutine)
	logs      logHold    // works whose changelog records wait for the next hand-out
	edges     map[string]edge
	hot       hotMetrics // the children of the per-record metrics, resolved once
	changelog string     // "" when the stage keeps no state
	win       *Window    // nil when the stage keeps no state
	// The client, and in exactly-once mode the session that wraps it: both
	// are replaced when a fenced producer is renewed (renew.go), so they are
	// read through client() and session().
	clp   atomic.Pointer[kgo.Client]
	sessp atomic.Pointer[kgo.GroupTransactSession]
	kopts []kgo.Opt // what the client was made with, to make it again
	txnID string    // exactly-once mode: this instance's transactional id
	// renewals counts nested renewals (renew.go): a producer fenced again
	// as it is renewed is not renewed without end.
	renewals int
	// fenceKick asks the fence loop to look for departed peers' open
	// transactions now (exactly-once mode; fence.go).
	fenceKick chan struct{}
	// hangingSaid are the hanging transactions logged already,
	// hangingNotices those found last, and offsetsPart the partition of
	// the offsets topic holding the group's offsets, -1 until known
	// (hanging.go; the fence loop's).
	hangingSaid    []string
	hangingNotices atomic.Pointer[[]string]
	offsetsPart    int32
	// clMu orders replacing the client against closing it.
	clMu     sync.Mutex
	clClosed bool
	tr       *tracker
	pause    *Pauses
	holds    *holds
	log      *slog.Logger
	m        *Metrics

	// inputPartitions is the input topic's partition count, 0 until known;
	// partitionsKnown is closed once it is.
	inputPartitions atomic.Int32
	partitionsKnown chan struct{}
	atBound         atomic.Bool // the poll loop waits for in-flight work to free half the bound

	workCtx    context.Context
	cancelWork context.CancelFunc
	promise    func(*kgo.Record, error) // onProduced, bound once
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
	// assignMu orders settling a Context against forgetting its partition:
	// settle checks the generation and applies under the read lock, forget
	// removes the partition under the write lock, so no state of stale work
	// can land after the partition's window was dropped.
	assignMu sync.RWMutex
	// txnMu orders a Context's produce against the end of its transaction
	// (exactly-once mode; see endUnit).
	txnMu sync.RWMutex
	// failures are the inputs whose outputs failed to produce in an aborted
	// transaction (exactly-once mode): the next attempt dead-letters them.
	failMu   sync.Mutex
	failures map[offsetKey]bool

	// For Status.
	producerReady atomic.Bool   // exactly-once: the transactional producer is initialized
	runState      atomic.Int32  // runNew, runRunning, runDraining, runStopped
	joined        atomic.Bool   // onAssigned ran at least once
	assignSeq     atomic.Uint64 // odd while onAssigned runs
}

func newRunner(st topics.Stage, h any, decode func(context.Context, []byte) (any, error), process func(*Context, any), opts ...Option) (*Runner, error) {
	c := defaultCfg()
	for _, o := range opts {
		o.apply(&c)
	}
	if err := c.validate(st); err != nil {
		return nil, err
	}
	r := &Runner{
		cfg:             c,
		spec:            st,
		stage:           st.Name,
		group:           st.Group,
		h:               h,
		decode:          decode,
		process:         process,
		edges:           make(map[string]edge, len(st.Outputs)),
		tr:              newTracker(),
		log:             c.logger.With("stage", st.Name, "group", st.Group),
		m:               c.metrics,
		fatal:           make(chan struct{}),
		partitionsKnown: make(chan struct{}),
		ready:           make(chan struct{}),
		fenceKick:       make(chan struct{}, 1),
		offsetsPart:     -1,
	}
	manual := map[string]bool{}
	var written []string
	for _, e := range st.Outputs {
		written = append(written, e.Topics...)
		r.edges[e.Name] = edge{topics: e.Topics, kind: e.Kind}
		if e.Partitioning == topics.AsInput {
			for _, t := range e.Topics {
				manual[t] = true
			}
		}
	}
	if st.Changelog != nil {
		written = append(written, st.Changelog.Topic)
		r.changelog = st.Changelog.Topic
		r.win = NewWindow(st.Changelog.TTL, st.Changelog.MaxKeys)
		r.win.MaxBytes(st.Changelog.MaxBytes)
		keys := r.m.StateKeys.WithLabelValues(st.Name)
		r.win.onSize = func(n int) { keys.Set(float64(n)) }
		manual[st.Changelog.Topic] = true
	}
	if st.DeadLetters != "" {
		written = append(written, st.DeadLetters)
	}
	r.hot = newHotMetrics(r.m, st.Name, written)
	r.tr.bound(c.maxInflight, c.maxInflightBytes)
	r.holds = newHolds()
	r.workCtx, r.cancelWork = context.WithCancel(context.Background())
	r.promise = r.onProduced
	kopts := append(append([]kgo.Opt(nil), c.connOpts...),
		kgo.ConsumerGroup(st.Group),
		// Every input (a stage with priority lanes reads one topic per
		// lane, in one group): the tracker, the pauses and the commits are
		// per partition of any topic already.
		kgo.ConsumeTopics(st.Inputs()...),
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
		kgo.RecordPartitioner(newPartitioner(manual)),
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
	if c.maxRecordBytes > 0 {
		kopts = append(kopts, kgo.ProducerBatchMaxBytes(int32(c.maxRecordBytes)))
	}
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
		r.txnID = st.TransactionalID(id)
		kopts = append(kopts,
			kgo.TransactionalID(r.txnID),
			// The broker aborts a transaction left open (its instance
			// frozen, partitioned away) after this: derived from the bound
			// the runner puts on a unit, so a stuck unit holds the
			// partitions' last stable offset no longer than the runner
			// would hold it itself (plus a margin: the broker's clock for a
			// transaction starts with its first produce, the runner's
			// with the unit).
			kgo.TransactionTimeout(BrokerTransactionTimeout(c.txnTimeout)),
			// With Kafka 4's transactions (KIP-890), the first produce
			// after EndTxn can get CONCURRENT_TRANSACTIONS; franz-go
			// retries it after a metadata refresh, which the default
			// minimum age of 5s delays: measured as 4-5 s stalls.
			kgo.MetadataMinAge(100*time.Millisecond),
		)
		sess, err := kgo.NewGroupTransactSession(kopts...)
		if err != nil {
			return nil, fmt.Errorf("pipeline: %s: new transactional client: %w", st.Name, err)
		}
		r.sessp.Store(sess)
		r.clp.Store(sess.Client())
	} else {
		cl, err := kgo.NewClient(kopts...)
		if err != nil {
			return nil, fmt.Errorf("pipeline: %s: new client: %w", st.Name, err)
		}
		r.clp.Store(cl)
	}
	r.kopts = kopts
	r.pause = newPauses(r.client())
	r.pause.onChange = func(reason string, n int) { r.m.Paused.WithLabelValues(st.Name, reason).Set(float64(n)) }
	if b, ok := h.(Binder); ok {
		b.Bind(r)
	}
	close(r.ready)
	return r, nil
}

func (r *Runner) codec() *schemas.Codec { return r.cfg.codec }

func (r *Runner) closeClient() {
	r.closeOnce.Do(func() {
		r.clMu.Lock()
		r.clClosed = true
		r.clMu.Unlock()
		if s := r.session(); s != nil {
			s.Close()
			return
		}
		r.client().Close()
	})
}

// client is the runner's Kafka client (in exactly-once mode, its session's).
func (r *Runner) client() *kgo.Client { return r.clp.Load() }

// session is the exactly-once session (nil in at-least-once mode).
func (r *Runner) session() *kgo.GroupTransactSession { return r.sessp.Load() }

// Client is the runner's Kafka client. In exactly-once mode it is replaced
// when a fenced producer is renewed: do not keep it.
func (r *Runner) Client() *kgo.Client { return r.client() }

// Pauses is the runner's pause registry.
func (r *Runner) Pauses() *Pauses { return r.pause }

// Logger is the runner's logger, with the stage and group attached.
func (r *Runner) Logger() *slog.Logger { return r.log }

// Metrics are the runner's metrics.
func (r *Runner) Metrics() *Metrics { return r.m }

// Stage is the stage's name.
func (r *Runner) Stage() string { return r.stage }

// Window is the stage's state (nil for a stage without a changelog), for
// tests and status.
func (r *Runner) Window() *Window { return r.win }

// InputPartitions is the input topic's partition count, 0 until known.
func (r *Runner) InputPartitions() int { return int(r.inputPartitions.Load()) }

// Input is the stage's input topic (the one InputPartitions counts).
func (r *Runner) Input() string { return r.spec.Input }

// Go runs fn in a goroutine owned by the runner: it gets the work context and
// the runner waits for it before Run returns.
func (r *Runner) Go(fn func(ctx context.Context)) {
	r.goroutines.Add(1)
	go func() {
		defer r.goroutines.Done()
		fn(r.workCtx)
	}()
}

// Fail stops the runner with err: it cannot go on safely.
func (r *Runner) Fail(err error) {
	r.fatalOnce.Do(func() {
		r.fatalErr = err
		close(r.fatal)
	})
}

// stopping reports whether Fail was called: the runner is on its way out.
func (r *Runner) stopping() bool {
	select {
	case <-r.fatal:
		return true
	default:
		return false
	}
}

// Run consumes until ctx is cancelled, then drains: it stops fetching, waits
// up to the drain timeout for unfinished work, commits what finished, and
// closes the client. It returns nil after a clean drain and the first fatal
// error otherwise; after a fatal error it does not wait for work in flight
// (it may never finish): what did not finish is consumed again.
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
	r.Go(r.learnPartitions)
	if r.cfg.eos {
		r.Go(r.fenceLoop)
	}
	commitDone := make(chan struct{})
	if r.cfg.eos {
		close(commitDone) // offsets are committed inside each transaction
		if r.initProducer(loopCtx) {
			r.eosLoop(loopCtx)
		}
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
	if !r.killed.Load() {
		r.drain()
	}
	r.closeLogs()
	r.drained.Store(true)
	r.tr.closeAll() // what is still out is stale
	r.cancelWork()
	r.goroutines.Wait()
	select {
	case err := <-svcErr:
		if err != nil && !errors.Is(err, context.Canceled) {
			r.Fail(err)
		}
	default:
	}
	if r.killed.Load() {
		return nil
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

// BrokerTransactionTimeout is the transaction timeout the broker enforces
// for a runner whose units are bounded by unit: unit plus a tenth of it (at
// least a second). It must not exceed the broker's
// transaction.max.timeout.ms (15 minutes by default).
func BrokerTransactionTimeout(unit time.Duration) time.Duration {
	return unit + max(time.Second, unit/10)
}

// initProducer initializes the transactional producer before anything is
// consumed: it fences the instance this one replaces (same transactional
// id) and aborts the transaction that instance left open. Until then the
// group's offsets can be unstable (a transaction that died after its offset
// commit), and the consumer would wait for the broker to time that
// transaction out instead of consuming. A broker that cannot be reached is
// waited for; an authorization error stops the stage with what to grant.
func (r *Runner) initProducer(ctx context.Context) bool {
	err := Retry(ctx, Backoff{Initial: 100 * time.Millisecond, Max: 2 * time.Second}, func() error {
		_, _, err := r.client().ProducerID(ctx)
		return err
	}, func(err error) bool {
		if authError(err) || errors.Is(err, kerr.InvalidTransactionTimeout) || errors.Is(err, kgo.ErrClientClosed) || fenced(err) || ctx.Err() != nil {
			return false
		}
		r.log.Warn("cannot initialize the transactional producer; retrying", "err", err)
		return true
	})
	if fenced(err) && ctx.Err() == nil {
		return r.renew(ctx, err)
	}
	if err != nil {
		if errors.Is(err, kerr.InvalidTransactionTimeout) {
			err = fmt.Errorf("%w: runner.transaction_timeout %v makes the broker's transaction timeout %v, above the broker's transaction.max.timeout.ms: lower runner.transaction_timeout or raise transaction.max.timeout.ms",
				err, r.cfg.txnTimeout, BrokerTransactionTimeout(r.cfg.txnTimeout))
		}
		if ctx.Err() == nil && !errors.Is(err, kgo.ErrClientClosed) {
			r.Fail(fmt.Errorf("pipeline: %s: initialize the transactional producer: %w%s", r.stage, err, r.authHint(err)))
		}
		return false
	}
	r.producerReady.Store(true)
	return true
}

// learnPartitions finds the input topic's partition count, which a stage
// needs to tell where a key belongs (the Input of a stage with lanes: all
// its lanes are keyed alike).
func (r *Runner) learnPartitions(ctx context.Context) {
	if !Sleep(ctx, r.cfg.learnDelay) {
		return
	}
	adm := kadm.NewClient(r.client())
	start := time.Now()
	var lastWarn time.Time
	_ = Retry(ctx, Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second}, func() error {
		td, err := adm.ListTopics(ctx, r.spec.Input)
		if err != nil {
			return err
		}
		t, ok := td[r.spec.Input]
		if !ok || t.Err != nil || len(t.Partitions) == 0 {
			return fmt.Errorf("topic %s not in the metadata", r.spec.Input)
		}
		r.inputPartitions.Store(int32(len(t.Partitions)))
		close(r.partitionsKnown)
		return nil
	}, func(err error) bool {
		// A stage that places keys waits for the count (Context.InputPartitions):
		// a wait that lasts says so.
		if time.Since(start) > holdWarnEvery/3 && time.Since(lastWarn) > holdWarnEvery {
			lastWarn = time.Now()
			r.log.Warn("cannot read the input topic's partition count; a stage that places keys by it waits; retrying", "topic", r.spec.Input, "err", err)
		}
		return true
	})
}

func (r *Runner) pollLoop(ctx context.Context) {
	defer r.client().AllowRebalance()
	max := r.cfg.maxInflight
	for ctx.Err() == nil {
		n := r.tr.liveCount()
		r.m.Inflight.WithLabelValues(r.stage).Set(float64(n))
		if n >= max {
			// Stop polling, and wait for half the window to free. Not
			// polling is what stops the fetching: the client buffers at
			// most one fetch per broker until it is polled. Pausing the
			// partitions instead (as this did) drops what the client has
			// buffered for them, and fetches it again on resume: draining
			// a backlog, infer fetched each record about ten times.
			// No hand-out comes to take the held changelog records along
			// while the loop waits, and the works they settle are among
			// those it waits for: what is held goes out now, and what is
			// held while it waits after logWaitAtBound, not logWait (else
			// the wait would last until the hold's timer).
			r.atBound.Store(true)
			r.flushLogs()
			if !r.tr.wait(ctx.Done(), func() bool { return r.tr.liveLocked() <= max/2 }) {
				return
			}
			r.atBound.Store(false)
			continue
		}
		fs := r.client().PollRecords(ctx, r.tr.room(max-n))
		if fs.IsClientClosed() {
			return
		}
		r.fetchErrors(fs)
		r.handOut(fs, nil)
		r.client().AllowRebalance()
	}
}

// handOut decodes the polled records and hands them to the stage, in order
// per partition. A record whose decoding waits on a dependency (the
// registry) holds its partition: it and everything after it are not handed
// out, the partition is paused and rewound to it, and decoding is retried
// until it succeeds. Called from the poll goroutine before AllowRebalance.
// In exactly-once mode every record handed out joins u.
func (r *Runner) handOut(fs kgo.Fetches, u *unit) []*Context {
	now := time.Now()
	var out []*Context
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		t := tp{p.Topic, p.Partition}
		for _, rec := range p.Records {
			if r.stopping() || r.holds.has(t) {
				return
			}
			v, err := r.decodeRecord(rec)
			if err != nil && !errors.Is(err, schemas.ErrMalformed) {
				r.hold(rec, err)
				return
			}
			gen, stale, ok := r.tr.add(t, rec.Offset, rec.LeaderEpoch, recordSize(rec))
			if !ok {
				return // revoked since the fetch: its new owner gets it
			}
			r.hot.consumed.Inc()
			c := &Context{r: r, rec: rec, received: now, gen: gen, stale: stale, unit: u}
			if u != nil {
				u.add(t)
				out = append(out, c)
				// Handed to the stage once the whole unit is counted.
				c.pending = v
				c.pendingErr = err
				continue
			}
			r.dispatch(c, v, err)
		}
	})
	r.flushDueLogs(now)
	r.produceHeld()
	return out
}

// dispatch gives a decoded record to the stage, or dead-letters it.
func (r *Runner) dispatch(c *Context, v any, err error) {
	c.held.Store(1)
	if err != nil {
		r.m.Undecodable.WithLabelValues(r.stage).Inc()
		c.DeadLetter(reasonFor(err), err)
	} else {
		r.process(c, v)
	}
	if c.held.CompareAndSwap(1, 0) {
		return
	}
	r.held = append(r.held, c)
	if len(r.held) >= heldMax {
		r.produceHeld()
	}
}

// heldMax bounds the works whose records wait for the end of their poll's
// hand-out: the first of them waits for at most this many more.
const heldMax = 256

// produceHeld produces the records of the works finished during the
// hand-out of a poll, together.
func (r *Runner) produceHeld() {
	for i, c := range r.held {
		c.produce(phaseRecords, c.out.records, false)
		r.held[i] = nil
	}
	r.held = r.held[:0]
}

// Dead-letter reasons of the runtime.
const (
	ReasonUndecodable   = "undecodable"
	ReasonTooLarge      = "too_large"
	ReasonProduceFailed = "produce_failed"
)

func reasonFor(err error) string {
	if errors.Is(err, errTooLarge) {
		return ReasonTooLarge
	}
	return ReasonUndecodable
}

var errTooLarge = errors.New("far larger than the topic's max.message.bytes: it can only have arrived compressed, and is refused before decoding")

// decodeRecord decodes one input, retrying once a failure that is not the
// bytes' fault.
func (r *Runner) decodeRecord(rec *kgo.Record) (any, error) {
	if m := r.cfg.maxRecordBytes * DecodeLimitFactor; m > 0 && len(rec.Value) > m {
		return nil, fmt.Errorf("%w: value of %d bytes, decode limit %d: %w", schemas.ErrMalformed, len(rec.Value), m, errTooLarge)
	}
	// No timer per record: only a schema id met for the first time asks
	// the registry, and the codec bounds that lookup itself.
	v, err := r.decode(r.workCtx, rec.Value)
	if err != nil && !errors.Is(err, schemas.ErrMalformed) && r.workCtx.Err() == nil {
		v, err = r.decode(r.workCtx, rec.Value) // once more, at once
	}
	return v, err
}

// fetchErrors logs fetch errors, and stops the stage on those that retrying
// cannot fix.
func (r *Runner) fetchErrors(fs kgo.Fetches) {
	fs.EachError(func(t string, p int32, err error) {
		if errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed) {
			return
		}
		if authError(err) {
			r.Fail(fmt.Errorf("%s: not allowed to consume (%s/%d): %w%s", r.group, t, p, err, r.authHint(err)))
			return
		}
		if errors.Is(err, kerr.FencedInstanceID) {
			r.Fail(fmt.Errorf("%s: another process runs with instance id %q and the group took it in this one's place: give every process its own --instance-id", r.group, r.cfg.instanceID))
			return
		}
		if t == "" {
			// A connection or group error, not a partition's.
			r.log.Warn("kafka unreachable or refusing; retrying", "err", err)
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
	r.client().CommitOffsetsSync(ctx, offs, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
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

// drain waits for unfinished work (up to the drain timeout; not at all after
// a fatal error, when it may never finish) and commits what finished.
func (r *Runner) drain() {
	r.closeLogs()
	if !r.stopping() {
		stop := make(chan struct{})
		timer := time.AfterFunc(r.cfg.drainTimeout, func() { close(stop) })
		if !r.tr.wait(stop, func() bool { return r.tr.inflightLocked(nil) == 0 }) {
			r.log.Warn("drain timed out; unfinished records will be re-delivered", "inflight", r.tr.inflight(nil))
		}
		timer.Stop()
	}
	if r.cfg.eos {
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
	// Status must not see the new partitions before their restore pause:
	// the sequence is odd meanwhile.
	r.assignSeq.Add(1)
	defer r.assignSeq.Add(1)
	defer r.joined.Store(true)
	ts := toTPs(assigned)
	for _, t := range ts {
		r.tr.assign(t)
	}
	r.pause.assign(ts)
	if r.win != nil {
		for _, t := range ts {
			if a, ok := r.tr.assignmentOf(t); ok {
				r.restore(t, a)
			}
		}
	}
	if len(ts) > 0 {
		r.log.Info("partitions assigned", "partitions", len(ts))
		if r.cfg.eos {
			r.kickFence() // they may come from a departed peer with a transaction open
		}
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
	if !r.killed.Load() && !r.drained.Load() && !r.stopping() {
		stop := make(chan struct{})
		timer := time.AfterFunc(r.cfg.drainTimeout, func() { close(stop) })
		done := r.urgentLogs()
		r.tr.wait(stop, func() bool { return r.tr.inflightLocked(only) == 0 })
		done()
		timer.Stop()
		if !r.cfg.eos { // exactly-once: nothing is in flight between units
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
	for _, t := range ts {
		r.holds.drop(t)
		if r.win != nil {
			r.win.Drop(t.partition)
		}
	}
}

// finish carries out the write order of a finished Context.
func (r *Runner) finish(c *Context) {
	out, err := c.output()
	if err != nil {
		c.dropStaged()
		r.Fail(fmt.Errorf("pipeline: %s: %w", r.stage, err))
		r.release(c)
		return
	}
	if r.cfg.eos {
		r.finishEOS(c, out)
		return
	}
	if !r.tr.current(c.tp(), c.gen) {
		r.stale(c)
		return
	}
	c.out = out
	if c.held.CompareAndSwap(1, 2) {
		return // the poll goroutine produces it with the rest of the poll
	}
	c.produce(phaseRecords, out.records, false)
}

// release counts the Context as let go of by the stage.
func (r *Runner) release(c *Context) { r.tr.release(recordSize(c.rec)) }

// recordSize is what an input record counts for the in-flight byte bound.
func recordSize(rec *kgo.Record) int { return len(rec.Key) + len(rec.Value) }

// settle applies a Context whose effects are all acknowledged and counts its
// input as finished, unless its partition was revoked meanwhile.
func (r *Runner) settle(c *Context) {
	r.assignMu.RLock()
	defer r.assignMu.RUnlock()
	if !r.tr.current(c.tp(), c.gen) {
		r.stale(c)
		return
	}
	c.apply()
	r.tr.done(c.tp(), c.gen, c.rec.Offset)
	r.release(c)
}

// stale drops a Context whose partition was revoked since it was handed
// out: its offset is no longer this assignment's to commit, and its state
// must not reach the window the partition's next assignment restores. The
// partition's owner re-delivers the input.
func (r *Runner) stale(c *Context) {
	c.dropStaged()
	r.m.Stale.WithLabelValues(r.stage).Inc()
	r.release(c)
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
		r.client().Produce(r.workCtx, rec, func(rec *kgo.Record, err error) {
			if err != nil {
				r.hot.produceErrors.Inc()
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			} else {
				r.hot.produced(rec.Topic).Inc()
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

// failed handles a Context whose effects could not all be produced. On
// shutdown the input stays unfinished and is re-delivered. An output the
// broker refuses for what it is (refusedRecord) dead-letters the input (a
// dead letter always fits its topic), so the partition does not stall on
// it; if even that fails, the stage stops, and the input is consumed again
// after a restart. A principal the broker refuses stops the stage, saying
// so. Any other error is the broker's or the producer's, not the record's:
// the outputs are produced again.
func (r *Runner) failed(c *Context, err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed) || r.killed.Load() ||
		!r.tr.current(c.tp(), c.gen) {
		c.dropStaged()
		r.release(c)
		return
	}
	if authError(err) {
		r.Fail(fmt.Errorf("pipeline: %s: produce: %w%s", r.stage, err, r.authHint(err)))
		c.dropStaged()
		r.release(c)
		return
	}
	if !refusedRecord(err) {
		// The broker will be back, or the producer recovers: produce the
		// same outputs again after a pause (the input stays unfinished
		// meanwhile, so nothing is committed past it), never dead-letter
		// valid requests for it.
		r.log.Warn("produce failed; retrying", "topic", c.rec.Topic, "partition", c.rec.Partition,
			"offset", c.rec.Offset, "err", err)
		r.Go(func(ctx context.Context) {
			if !Sleep(ctx, Backoff{Initial: 200 * time.Millisecond, Max: 200 * time.Millisecond}.Delay(0)+200*time.Millisecond) {
				c.dropStaged()
				r.release(c)
				return
			}
			r.finish(c)
		})
		return
	}
	c.dropStaged()
	r.log.Error("produce failed; dead-lettering the input", "topic", c.rec.Topic,
		"partition", c.rec.Partition, "offset", c.rec.Offset, "err", err)
	dl, derr := r.deadLetterRecord(c.rec, ReasonProduceFailed, err, false, "")
	if derr != nil {
		r.Fail(fmt.Errorf("pipeline: %s: dead letter: %w", r.stage, derr))
		r.release(c)
		return
	}
	r.Go(func(context.Context) { r.produceDeadLetter(c, dl) })
}

// produceDeadLetter produces dl, the dead letter of c's input, and marks
// the input finished once it is acknowledged. An error of the broker's is
// waited out like an output's (UNKNOWN_SERVER_ERROR while a broker
// restarts stopped the stage here); a dead letter the broker refuses, or a
// principal it refuses, stops the stage, and the input is consumed again
// after a restart. On shutdown the input stays unfinished.
func (r *Runner) produceDeadLetter(c *Context, dl *kgo.Record) {
	r.produceAll([]*kgo.Record{dl}, func(err error) {
		switch {
		case err == nil:
			r.tr.done(c.tp(), c.gen, c.rec.Offset)
			r.release(c)
		case errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed) || r.killed.Load():
			r.release(c)
		case authError(err) || refusedRecord(err):
			r.Fail(fmt.Errorf("pipeline: %s: produce dead letter for %s/%d@%d: %w%s", r.stage,
				c.rec.Topic, c.rec.Partition, c.rec.Offset, err, r.authHint(err)))
			r.release(c)
		default:
			r.log.Warn("produce dead letter failed; retrying", "topic", c.rec.Topic, "partition", c.rec.Partition,
				"offset", c.rec.Offset, "err", err)
			r.Go(func(ctx context.Context) {
				if !Sleep(ctx, 400*time.Millisecond) {
					r.release(c)
					return
				}
				r.produceDeadLetter(c, dl)
			})
		}
	})
}

// authError reports errors that retrying cannot fix: the broker refuses
// this principal. Failing the stage says so at once, instead of a warning
// every poll while nothing moves.
func authError(err error) bool {
	for _, e := range []error{kerr.GroupAuthorizationFailed, kerr.TopicAuthorizationFailed,
		kerr.ClusterAuthorizationFailed, kerr.TransactionalIDAuthorizationFailed, kerr.SaslAuthenticationFailed} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// authHint says what to do about an authorization error.
func (r *Runner) authHint(err error) string {
	if errors.Is(err, kerr.TransactionalIDAuthorizationFailed) {
		return fmt.Sprintf("; exactly-once mode needs Write and Describe on the transactional ids %s* (asyncinfer topics acls --exactly-once prints them)", r.spec.TransactionalIDPrefix())
	}
	if authError(err) {
		return "; asyncinfer topics acls prints the ACLs each stage needs"
	}
	return ""
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
