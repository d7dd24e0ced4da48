package client

import (
	"container/list"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/asyncinfer/asyncinfer/pressure"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/topics"
)

// ErrClosed is returned by calls on a closed Client, by Awaits that Close
// ends, and yielded once by Results iterations that Close ends.
var ErrClosed = errors.New("client: closed")

// DefaultMaxUnclaimed is the default of Config.MaxUnclaimed.
const DefaultMaxUnclaimed = 100_000

// defaultPartitionCheck is how often the reply topic is checked for
// partitions added after New.
const defaultPartitionCheck = time.Minute

// Config configures a Client. Conn and Registry are required.
type Config struct {
	// Conn are the connection options: seed brokers (required), TLS, SASL,
	// client id. The client sets its own partitioner and fetch isolation
	// after them, and defaults ProducerLinger to 0 (Submit waits for the
	// acknowledgement, so a linger only adds latency) and ClientID to
	// "asyncinfer-client" before them. Do not pass consumer options.
	Conn []kgo.Opt
	// Registry is the deployment's schema registry. New registers the
	// request schema under "<requests topic>-value" (a no-op when it is
	// there) and results are decoded with the schemas it holds.
	Registry *sr.Client
	// Prefix is the deployment's topic prefix; "" is
	// topics.DefaultPrefix.
	Prefix string
	// ReplyTopic is where results for this client's requests go, and the
	// topic it reads. It must be on the pipeline's reply allow-list
	// (--reply-topics) and exist. "" is the shared results topic, which every
	// such client reads in full (see the package documentation).
	ReplyTopic string
	// MaxUnclaimed bounds the request ids the client tracks for Await
	// without an Await waiting: ids submitted whose result has not come yet
	// or has come and is kept until an Await takes it. Past the bound the
	// oldest such id is forgotten, with its kept result: an Await for it
	// then waits for its context, as for an id the client never saw. Ids an
	// Await is waiting for do not count and are never forgotten. Each costs
	// a few hundred bytes plus its result. 0 is DefaultMaxUnclaimed (100,000);
	// negative keeps nothing, so Await sees only results that arrive while
	// it waits.
	MaxUnclaimed int
	// Logger receives what the client cannot return: undecodable results,
	// fetch errors, forgotten ids. nil discards.
	Logger *slog.Logger
	// HonourPressure makes Submit shed load at the edge: the client reads
	// the deployment's pressure topic (the admission records dedup
	// publishes per model and priority lane) and Submit returns an
	// *OverloadError, producing nothing, for a request the pipeline would
	// turn away: while its lane is SHEDDING, a fraction of requests (the
	// record's shed_fraction, drawn at random), and any request whose
	// deadline is nearer than the lane's predicted wait. A record older than
	// three of its intervals is ignored: with no fresh verdict, Submit
	// produces as usual. Default false.
	HonourPressure bool

	partitionCheck time.Duration // for tests; 0 is defaultPartitionCheck
}

// Client submits requests and receives their results. It is safe for
// concurrent use.
type Client struct {
	cl       *kgo.Client
	adm      *kadm.Client
	codec    *schemas.Codec
	requests string
	results  string // the deployment's shared results topic
	reply    string // the topic this client reads
	max      int
	log      *slog.Logger

	pressure *pressure.Follower // nil unless Config.HonourPressure
	rnd      func() float64

	closing   chan struct{} // closed by Close
	closeOnce sync.Once
	stop      context.CancelFunc
	wg        sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	pending   map[string]*entry // by request id
	unclaimed *list.List        // of *entry nobody awaits, oldest first
	subs      map[*sub]struct{}
}

// entry is one request id the client tracks: submitted through it, or
// awaited. Its fields are guarded by Client.mu; res and err are set before
// done is closed and read only after.
type entry struct {
	id        string
	submitted bool
	waiters   int
	elem      *list.Element // in unclaimed while waiters == 0
	answered  bool
	done      chan struct{}
	res       *schemas.Result
	err       error
}

// sub is one Results iteration.
type sub struct {
	ch   chan delivery
	done chan struct{} // closed when the iteration ends
}

type delivery struct {
	res *schemas.Result
	err error
}

// New connects to the deployment and starts reading the reply topic from
// its current end (the last stable offset of each partition, so that a
// transaction still open now is read when it commits). Everything produced
// to the reply topic after New returns is read, whenever Await is called.
// The requests and reply topics must exist.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if len(cfg.Conn) == 0 {
		return nil, errors.New("client: Config.Conn is empty: give at least kgo.SeedBrokers")
	}
	if cfg.Registry == nil {
		return nil, errors.New("client: Config.Registry is nil")
	}
	names := topics.New(cfg.Prefix)
	reply := cfg.ReplyTopic
	if reply == "" {
		reply = names.Results
	}
	if names.Internal(reply) {
		return nil, fmt.Errorf("client: reply topic %q is an internal topic of the pipeline", reply)
	}
	codec, err := schemas.NewCodec(ctx, cfg.Registry, map[string]schemas.Kind{names.Requests: schemas.KindRequest})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	opts := append([]kgo.Opt{kgo.ClientID("asyncinfer-client"), kgo.ProducerLinger(0)}, cfg.Conn...)
	opts = append(opts,
		// The partitioning contract: Kafka's default murmur2 for keyed
		// records, the partitioner the pipeline uses and checks.
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	c := &Client{
		cl:        cl,
		adm:       kadm.NewClient(cl),
		codec:     codec,
		requests:  names.Requests,
		results:   names.Results,
		reply:     reply,
		max:       cfg.MaxUnclaimed,
		log:       cfg.Logger,
		closing:   make(chan struct{}),
		pending:   make(map[string]*entry),
		unclaimed: list.New(),
		subs:      make(map[*sub]struct{}),
	}
	if c.max == 0 {
		c.max = DefaultMaxUnclaimed
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	start, err := c.startOffsets(ctx)
	if err != nil {
		cl.Close()
		return nil, err
	}
	// The offsets are exact, not "the end at the first fetch": a result
	// produced between New and that fetch would be skipped.
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{reply: start})
	every := cfg.partitionCheck
	if every <= 0 {
		every = defaultPartitionCheck
	}
	known := make(map[int32]bool, len(start))
	for p := range start {
		known[p] = true
	}
	runCtx, stop := context.WithCancel(context.Background())
	c.stop = stop
	if cfg.HonourPressure {
		f, err := pressure.NewFollower(cfg.Conn, names.Pressure, codec, pressure.WithLogger(c.log))
		if err != nil {
			stop()
			cl.Close()
			return nil, fmt.Errorf("client: %w", err)
		}
		c.pressure, c.rnd = f, mrand.Float64
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			f.Run(runCtx)
		}()
		// The verdicts published so far, before the first Submit.
		select {
		case <-f.CaughtUp():
		case <-ctx.Done():
			c.Close()
			return nil, fmt.Errorf("client: reading the pressure topic %s: %w", names.Pressure, ctx.Err())
		}
	}
	c.wg.Add(2)
	go c.consume(runCtx)
	go c.watchPartitions(runCtx, every, known)
	return c, nil
}

// startOffsets checks that the topics exist and returns where to start
// reading each partition of the reply topic.
func (c *Client) startOffsets(ctx context.Context) (map[int32]kgo.Offset, error) {
	tds, err := c.adm.ListTopics(ctx, c.requests, c.reply)
	if err != nil {
		return nil, fmt.Errorf("client: list topics: %w", err)
	}
	for _, t := range []string{c.requests, c.reply} {
		d, ok := tds[t]
		switch {
		case !ok:
			return nil, fmt.Errorf("client: topic %q not found", t)
		case d.Err != nil:
			return nil, fmt.Errorf("client: topic %q: %w", t, d.Err)
		}
	}
	// The last stable offset, not the high watermark: records of a
	// transaction open now sit below the high watermark and become
	// readable only when it commits, after New.
	offs, err := c.adm.ListCommittedOffsets(ctx, c.reply)
	if err == nil {
		err = offs.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("client: list end offsets of %s: %w", c.reply, err)
	}
	start := make(map[int32]kgo.Offset)
	for p := range tds[c.reply].Partitions {
		start[p] = kgo.NewOffset().AtStart()
	}
	offs.Each(func(o kadm.ListedOffset) {
		if o.Offset >= 0 {
			start[o.Partition] = kgo.NewOffset().At(o.Offset)
		}
	})
	return start, nil
}

// Submit produces req to the requests topic and returns its request id once
// the broker has acknowledged it. It fills in, on req itself, what is
// missing: RequestID (a random UUID), ReplyTopic (Config.ReplyTopic) and
// CreatedAtMs (now). It validates req first (schemas.Request.Validate): an
// invalid request is an error naming the field, and nothing is produced.
//
// The record is keyed by req.Key() (the idempotency key, else the request
// id) with Kafka's default murmur2 partitioner, so repeats land where dedup
// remembers the key.
//
// After an error from the broker or ctx, the request may still have been
// written (a timeout). Submitting the same req again is safe: dedup drops a
// second copy with the same request id silently, and Await still gets the
// one answer. A req whose ReplyTopic is not the topic this client reads is
// produced but not tracked: its result goes elsewhere, so Await cannot see
// it.
func (c *Client) Submit(ctx context.Context, req *schemas.Request) (string, error) {
	if req == nil {
		return "", errors.New("client: submit: nil request")
	}
	if req.RequestID == "" {
		req.RequestID = newID()
	}
	if req.ReplyTopic == "" && c.reply != c.results {
		req.ReplyTopic = c.reply
	}
	if req.CreatedAtMs == 0 {
		req.CreatedAtMs = time.Now().UnixMilli()
	}
	if err := req.Validate(); err != nil {
		return "", fmt.Errorf("client: submit: %w", err)
	}
	if err := c.overloaded(req, time.Now()); err != nil {
		return "", err
	}
	v, err := c.codec.EncodeRequest(c.requests, req)
	if err != nil {
		return "", fmt.Errorf("client: submit: %w", err)
	}
	replyTo := req.ReplyTopic
	if replyTo == "" {
		replyTo = c.results
	}
	// Tracked before it is produced, so that its result, however fast,
	// finds the entry. It stays tracked after a failed produce: the request
	// may have been written.
	if replyTo == c.reply {
		if err := c.track(req.RequestID); err != nil {
			return "", err
		}
	}
	rec := &kgo.Record{Topic: c.requests, Key: []byte(req.Key()), Value: v}
	if err := c.cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		if errors.Is(err, kgo.ErrClientClosed) {
			return "", ErrClosed
		}
		return "", fmt.Errorf("client: submit %s: %w", req.RequestID, err)
	}
	return req.RequestID, nil
}

// ErrOverloaded matches every *OverloadError (errors.Is).
var ErrOverloaded = errors.New("client: overloaded")

// OverloadError is Submit's answer, with Config.HonourPressure, for a
// request the pipeline would turn away now: nothing was produced. Submit the
// request again after RetryAfter (it keeps its request id: it was never
// produced).
type OverloadError struct {
	Model, Lane string
	// Status is the lane's admission status (SHEDDING, or BUSY when only
	// this request's deadline is too near).
	Status string
	// RetryAfter is when the pipeline expects to take such a request again:
	// the time its backlog needs to drain.
	RetryAfter time.Duration
	// PredictedWait is the lane's predicted time to an answer, as published.
	PredictedWait time.Duration
}

func (e *OverloadError) Error() string {
	return fmt.Sprintf("client: model %s is overloaded (lane %s, %s, a predicted wait of %v): retry after %v",
		e.Model, e.Lane, e.Status, e.PredictedWait, e.RetryAfter)
}

// Is makes errors.Is(err, ErrOverloaded) true.
func (e *OverloadError) Is(target error) bool { return target == ErrOverloaded }

// overloaded is the pipeline's verdict on req from the pressure topic: nil
// to produce it.
func (c *Client) overloaded(req *schemas.Request, now time.Time) error {
	if c.pressure == nil {
		return nil
	}
	p := pressure.LaneOf(c.pressure.Admission(req.Model), req.Priority)
	if p == nil || !pressure.Fresh(p, now) {
		return nil
	}
	// The wait published then, less what has passed since: what was ahead
	// drains meanwhile (what came since is dedup's to weigh).
	age := max(0, now.Sub(time.UnixMilli(p.AtMs)))
	wait := max(0, time.Duration(p.PredictedWaitMs)*time.Millisecond-age)
	retry := max(time.Millisecond, time.Duration(p.RetryAfterMs)*time.Millisecond-age)
	e := &OverloadError{Model: req.Model, Lane: p.Lane, Status: p.Status, RetryAfter: retry, PredictedWait: wait}
	switch {
	case p.Status == pressure.StatusPaused || p.Status == pressure.StatusUnknown:
		return nil // requests wait in Kafka, or nothing to go by
	case p.Status == pressure.StatusShedding && p.ShedFraction > 0 && c.rnd() < p.ShedFraction:
		return e
	case req.DeadlineMs > 0 && time.UnixMilli(req.DeadlineMs).Sub(now) < wait:
		return e
	}
	return nil
}

// Await returns the result for requestID: at once if it has come and is
// kept, else when it comes, or ctx's error (wrapped) when ctx ends first.
//
// Results for ids submitted through this client are kept from the moment
// Submit is called until an Await takes them (see Config.MaxUnclaimed for
// the bound). For any other id (submitted by another process with this
// client's reply topic), Await sees the result only if it is waiting when
// the result arrives. Once an Await has returned a result the client forgets
// the id: a later Await for it waits for a repeat. If the result record is
// on the reply topic but cannot be decoded, Await returns that error.
//
// The result may be shared with concurrent Awaits of the same id and with
// Results iterations: treat it as read-only.
func (c *Client) Await(ctx context.Context, requestID string) (*schemas.Result, error) {
	if requestID == "" {
		return nil, errors.New("client: await: empty request id")
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	e := c.pending[requestID]
	if e == nil {
		e = &entry{id: requestID, done: make(chan struct{})}
		c.pending[requestID] = e
	}
	if e.elem != nil {
		c.unclaimed.Remove(e.elem)
		e.elem = nil
	}
	e.waiters++
	c.mu.Unlock()

	select {
	case <-e.done:
	case <-c.closing:
		return nil, ErrClosed
	case <-ctx.Done():
		select {
		case <-e.done: // both ready: the result wins
		default:
			c.mu.Lock()
			e.waiters--
			if c.pending[requestID] == e {
				c.park(e)
			}
			c.mu.Unlock()
			return nil, fmt.Errorf("client: await %s: %w", requestID, ctx.Err())
		}
	}
	c.mu.Lock()
	e.waiters--
	if c.pending[requestID] == e {
		delete(c.pending, requestID)
		if e.elem != nil {
			c.unclaimed.Remove(e.elem)
			e.elem = nil
		}
	}
	c.mu.Unlock()
	return e.res, e.err
}

// Results returns an iterator over every result record read from the reply
// topic from the moment the iteration starts: results for any request id,
// repeats included (identical to the first; drop them by request id). A
// record that does not decode, or a fetch error, is yielded as (nil, err)
// and the iteration goes on. It ends when ctx ends or the loop breaks, with
// no error, or when the client is closed, after yielding ErrClosed.
//
// Results does not take results from Await: both see every result. Each
// iteration has a buffer of 64 results; when it is full the client waits,
// so a slow loop slows this client's reading of the reply topic, Awaits
// included (nothing is dropped: the backlog stays in Kafka). For the same
// reason, do not wait inside the loop for something the client must
// deliver first, such as Await for a result not yet read.
func (c *Client) Results(ctx context.Context) iter.Seq2[*schemas.Result, error] {
	return func(yield func(*schemas.Result, error) bool) {
		s := &sub{ch: make(chan delivery, 64), done: make(chan struct{})}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			yield(nil, ErrClosed)
			return
		}
		c.subs[s] = struct{}{}
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			delete(c.subs, s)
			c.mu.Unlock()
			close(s.done)
		}()
		for {
			select {
			case d := <-s.ch:
				if !yield(d.res, d.err) {
					return
				}
			case <-ctx.Done():
				return
			case <-c.closing:
				yield(nil, ErrClosed)
				return
			}
		}
	}
}

// Close stops reading, fails Submits still waiting for the broker, ends
// Awaits and Results iterations with ErrClosed, and closes the connections.
// Calling it again does nothing.
func (c *Client) Close() {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		close(c.closing)
		c.stop()
		c.cl.Close()
		c.wg.Wait()
	})
}

// track registers a submitted request id.
func (c *Client) track(id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	e := c.pending[id]
	if e == nil {
		e = &entry{id: id, done: make(chan struct{})}
		c.pending[id] = e
	}
	e.submitted = true
	if e.waiters == 0 && e.elem == nil {
		c.park(e)
	}
	return nil
}

// park files an entry nobody awaits (c.mu held): kept, as the newest
// unclaimed entry, if its result is worth keeping; the oldest unclaimed
// entries are forgotten past the bound.
func (c *Client) park(e *entry) {
	if e.waiters > 0 {
		return
	}
	if e.elem != nil {
		c.unclaimed.Remove(e.elem)
		e.elem = nil
	}
	if c.max < 0 || (!e.submitted && !e.answered) {
		delete(c.pending, e.id)
		return
	}
	e.elem = c.unclaimed.PushBack(e)
	for c.unclaimed.Len() > c.max {
		old := c.unclaimed.Remove(c.unclaimed.Front()).(*entry)
		old.elem = nil
		delete(c.pending, old.id)
		c.log.Debug("request id forgotten: too many unclaimed", "request_id", old.id, "answered", old.answered)
	}
}

// consume reads the reply topic until ctx ends or the client closes.
func (c *Client) consume(ctx context.Context) {
	defer c.wg.Done()
	for {
		fs := c.cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		fs.EachError(func(topic string, p int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			c.log.Warn("fetch failed", "topic", topic, "partition", p, "err", err)
			c.publish(ctx, delivery{err: fmt.Errorf("client: fetch %s/%d: %w", topic, p, err)})
		})
		fs.EachRecord(func(r *kgo.Record) { c.handle(ctx, r) })
	}
}

// handle hands one result record to the Await tracking its request id (the
// first answer only) and to every Results iteration.
func (c *Client) handle(ctx context.Context, r *kgo.Record) {
	res, err := c.decode(ctx, r.Value)
	if ctx.Err() != nil {
		return
	}
	id := string(r.Key) // emit keys results by request id
	if err != nil {
		c.log.Warn("undecodable result", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
		err = fmt.Errorf("client: result at %s/%d offset %d: %w", r.Topic, r.Partition, r.Offset, err)
	} else {
		id = res.RequestID
	}
	c.mu.Lock()
	if e := c.pending[id]; e != nil && !e.answered {
		e.res, e.err, e.answered = res, err, true
		close(e.done)
	}
	subs := slices.Collect(maps.Keys(c.subs))
	c.mu.Unlock()
	for _, s := range subs {
		select {
		case s.ch <- delivery{res, err}:
		case <-s.done:
		case <-ctx.Done():
			return
		}
	}
}

func (c *Client) publish(ctx context.Context, d delivery) {
	c.mu.Lock()
	subs := slices.Collect(maps.Keys(c.subs))
	c.mu.Unlock()
	for _, s := range subs {
		select {
		case s.ch <- d:
		case <-s.done:
		case <-ctx.Done():
			return
		}
	}
}

// decode decodes a result, retrying for as long as the error is not about
// the message (the registry unreachable): skipping the record would lose
// its result for good, since nothing reads it again.
func (c *Client) decode(ctx context.Context, b []byte) (*schemas.Result, error) {
	wait := 100 * time.Millisecond
	for {
		res, err := c.codec.DecodeResult(ctx, b)
		if err == nil || errors.Is(err, schemas.ErrMalformed) || ctx.Err() != nil {
			return res, err
		}
		c.log.Warn("cannot decode result; retrying", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// watchPartitions adds partitions of the reply topic created after New,
// read from their start: everything in them was produced after New.
func (c *Client) watchPartitions(ctx context.Context, every time.Duration, known map[int32]bool) {
	defer c.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		tds, err := c.adm.ListTopics(ctx, c.reply)
		if err == nil {
			err = tds[c.reply].Err
		}
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("cannot list reply topic partitions", "topic", c.reply, "err", err)
			}
			continue
		}
		add := make(map[int32]kgo.Offset)
		for p := range tds[c.reply].Partitions {
			if !known[p] {
				known[p] = true
				add[p] = kgo.NewOffset().AtStart()
			}
		}
		if len(add) > 0 {
			c.log.Info("reading new reply topic partitions", "topic", c.reply, "partitions", slices.Sorted(maps.Keys(add)))
			c.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{c.reply: add})
		}
	}
}

// newID returns a random (version 4) UUID.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails: it crashes the program instead
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
