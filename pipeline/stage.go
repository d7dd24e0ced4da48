package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/topics"
)

// Processor is a stage's decision function. The runner decodes each input
// record into In (undecodable input never reaches it: the runner
// dead-letters it) and calls Process from its poll goroutine, in offset
// order per partition. Process must not block for long: a stage that waits
// (for a batch, a model) keeps the Context and finishes it later, from any
// goroutine, but only one goroutine at a time. Every Context ends exactly
// once: Finish, DeadLetter, or Fail.
type Processor[In any] interface {
	Process(c *Context, in In)
}

// Decoder turns an input record's value into a stage's input. An error that
// matches schemas.ErrMalformed is the bytes' fault: the record is
// dead-lettered. Any other error is a dependency's (the schema registry):
// the record and its partition wait, and decoding is retried until it
// succeeds.
type Decoder[In any] func(ctx context.Context, value []byte) (In, error)

// Service is implemented by stages that run goroutines of their own (a
// worker pool). Run is started before the first poll with the work context,
// which is cancelled after the drain, and must return then.
type Service interface {
	Run(ctx context.Context) error
}

// Noticer is implemented by stages with something an operator should know
// that is not an error (a producer that ignores the partitioning rule): the
// notices show on the status page and in /status.json.
type Noticer interface {
	Notices() []string
}

// Binder is implemented by stages that need their runner: its pauses (a
// circuit breaker pauses the input) and its logger. Bind is called once, by
// New, before any record is processed.
type Binder interface {
	Bind(r *Runner)
}

// New creates the runner of one stage of the graph: a consumer group member
// reading st.Inputs() (its Input, or its lanes), decoding each record with
// decode and handing it to p,
// writing only to st's edges, its changelog and its dead letters.
func New[In any](st topics.Stage, decode Decoder[In], p Processor[In], opts ...Option) (*Runner, error) {
	if decode == nil || any(p) == nil {
		return nil, fmt.Errorf("pipeline: %s: decoder and processor are required", st.Name)
	}
	return newRunner(st, p,
		func(ctx context.Context, b []byte) (any, error) { return decode(ctx, b) },
		func(c *Context, v any) { p.Process(c, v.(In)) },
		opts...)
}

// Raw is the decoder of a stage that reads bytes as they are.
func Raw(_ context.Context, b []byte) ([]byte, error) { return b, nil }

// edge is a declared output of the stage, resolved for producing.
type edge struct {
	topics []string
	kind   schemas.Kind
}

// Context is one input record in the hands of its stage, and everything the
// stage may do about it: read the record, emit to a declared edge (the
// runtime encodes), read and remember state (the runtime writes the
// changelog, applies the change once the outputs are durable, restores it on
// assignment), and end it. Done is closed when the work goes stale (its
// partition was revoked, its transaction aborted, or the runner is going
// away): whatever the stage still does for it will not take effect.
//
// A Context is used by one goroutine at a time.
type Context struct {
	r        *Runner
	rec      *kgo.Record
	received time.Time
	gen      uint64
	stale    <-chan struct{}
	unit     *unit // exactly-once mode: the transaction it belongs to
	outs     []*kgo.Record
	changes  []schemas.StateEntry
	onCommit func()
	out      output // what finishing produces (set by the runner)
	w        write  // its produce in progress
	ended    atomic.Bool
	// held: 1 while the poll goroutine is in the stage's Process for it, 2
	// once it finished meanwhile: its produce is then left to the poll
	// goroutine, which produces the records of a poll's works together.
	held atomic.Int32
	// Exactly-once mode: the decoded input, kept until the whole unit is
	// counted and the stage gets it.
	pending    any
	pendingErr error
	// In-place room for what a stage usually writes per input (an output
	// and one state entry; a second output, and the changelog record of
	// exactly-once mode, take a record of their own): allocated with the
	// Context, not one object at a time. Franz-go holds the records until
	// their promise, which keeps the Context alive. One record, not two:
	// every Context is zeroed and collected, and at least once (the
	// default) the changelog goes in records of many works' entries
	// (produceLogs), so the second record was room no default stage used:
	// 696 bytes with it (the 704-byte size class), 536 without (576).
	outRoom    [2]*kgo.Record
	recRoom    [1]kgo.Record
	recUsed    int
	changeRoom [1]schemas.StateEntry
	logRoom    [1]*kgo.Record
}

// newRecord is a record for c's outputs, from its room while there is some.
func (c *Context) newRecord() *kgo.Record {
	if c.recUsed < len(c.recRoom) {
		c.recUsed++
		return &c.recRoom[c.recUsed-1]
	}
	return new(kgo.Record)
}

// ErrStale is the error of a Context whose work went stale.
var ErrStale = errors.New("pipeline: work is stale (partition revoked, transaction aborted, or shutting down)")

// Record is the input record. The stage must not modify it.
func (c *Context) Record() *kgo.Record { return c.rec }

// Received is when the runner handed the record out.
func (c *Context) Received() time.Time { return c.received }

// Done is closed when the work goes stale.
func (c *Context) Done() <-chan struct{} { return c.stale }

// Err is ErrStale once Done is closed, nil before.
func (c *Context) Err() error {
	select {
	case <-c.stale:
		return ErrStale
	default:
		return nil
	}
}

// InputPartitions is the input topic's partition count. Until the runner
// has learnt it (a metadata request at start-up) it waits: a stage that
// places keys by it must not decide on a guess (dedup, given 0 for "not
// known yet", took misplaced requests where they were, and accepted one
// idempotency key on several partitions). It is 0 once the work is stale.
func (c *Context) InputPartitions() int {
	if n := c.r.InputPartitions(); n > 0 {
		return n
	}
	select {
	case <-c.r.partitionsKnown:
		return c.r.InputPartitions()
	case <-c.stale:
		return 0
	}
}

// Logger is the runner's logger.
func (c *Context) Logger() *slog.Logger { return c.r.log }

// Emit adds v, encoded for the edge's topic (a *schemas.Request or
// *schemas.Result; []byte goes as it is), to the outputs. A record that
// would not fit the topic's size limit is not added: the error matches
// ErrTooLarge, and the stage answers instead.
func (c *Context) Emit(edgeName string, key []byte, v any, headers []kgo.RecordHeader) error {
	return c.EmitTo(edgeName, "", key, v, headers)
}

// EmitTo is Emit to one of the edge's topics ("": its first).
func (c *Context) EmitTo(edgeName, topic string, key []byte, v any, headers []kgo.RecordHeader) error {
	topic, err := c.edgeTopic(edgeName, topic)
	if err != nil {
		return err
	}
	var b []byte
	switch v := v.(type) {
	case []byte:
		b = v
	case *schemas.Result:
		b, err = c.r.codec().EncodeResult(topic, v)
	case *schemas.Request:
		b, err = c.r.codec().EncodeRequest(topic, v)
	default:
		err = fmt.Errorf("pipeline: %s: cannot emit a %T", c.r.stage, v)
	}
	if err != nil {
		return err
	}
	return c.emit(topic, key, b, headers)
}

// EmitBytesTo is EmitTo of bytes that go as they are (a record forwarded
// unchanged): the same as EmitTo with a []byte, without boxing the slice
// in an interface (an allocation per record).
func (c *Context) EmitBytesTo(edgeName, topic string, key, value []byte, headers []kgo.RecordHeader) error {
	topic, err := c.edgeTopic(edgeName, topic)
	if err != nil {
		return err
	}
	return c.emit(topic, key, value, headers)
}

// edgeTopic resolves the topic an emit to edgeName writes to.
func (c *Context) edgeTopic(edgeName, topic string) (string, error) {
	if c.Ended() {
		return "", errors.New("pipeline: emit after the work ended")
	}
	e, ok := c.r.edges[edgeName]
	if !ok {
		return "", fmt.Errorf("pipeline: %s: no edge %q is declared", c.r.stage, edgeName)
	}
	if topic == "" {
		return e.topics[0], nil
	}
	if !contains(e.topics, topic) {
		return "", fmt.Errorf("pipeline: %s: edge %q does not write to %s", c.r.stage, edgeName, topic)
	}
	return topic, nil
}

// emit adds a record to the outputs, if it fits.
func (c *Context) emit(topic string, key, value []byte, headers []kgo.RecordHeader) error {
	rec := c.newRecord()
	*rec = kgo.Record{Topic: topic, Key: key, Value: value, Headers: headers}
	if err := c.r.fits(rec); err != nil {
		return err
	}
	if c.outs == nil {
		c.outs = c.outRoom[:0]
	}
	c.outs = append(c.outs, rec)
	return nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// MaxStateRef is the longest key or request id a stage's state keeps as it
// is (StateRef).
const MaxStateRef = 1 << 10

// StateRef is the form in which a stage's state keeps a key or a request
// id: itself up to MaxStateRef bytes, else "sha256:" and the hex of its
// SHA-256. A client chooses both, up to the size of a message; kept whole,
// an entry (the key twice, the request id once) would not fit the changelog
// for ids above a third of the topic's limit, and writing it would fail
// after the outputs were written (a 400 KB request id was dead-lettered
// produce_failed at least once, and lost exactly once). Get and Remember
// apply it; a stage that compares an entry's request id with a request's
// compares their refs, and an entry's request id is the original's ref.
func StateRef(s string) string {
	if len(s) <= MaxStateRef {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Get returns the live state entry for key on the record's partition:
// staged by work in flight, or committed. Its key and request id are refs
// (StateRef).
func (c *Context) Get(key string) (schemas.StateEntry, bool) {
	if c.r.win == nil {
		return schemas.StateEntry{}, false
	}
	return c.r.win.Get(c.rec.Partition, StateRef(key))
}

// Remember stages a state entry for key: it is visible to Get at once, and
// written to the changelog with the outputs; it takes effect when they are
// durable, and is dropped without a trace if they are not. The key and the
// request id are kept as their refs (StateRef), so that the entry fits the
// changelog whatever their size.
func (c *Context) Remember(key, requestID string, status schemas.Status) {
	if c.Ended() {
		return
	}
	if c.r.win == nil {
		c.r.log.Error("Remember on a stage without a changelog", "stage", c.r.stage)
		return
	}
	e := c.r.win.entryAt(c.received, StateRef(key), StateRef(requestID), status)
	c.r.win.Stage(c.rec.Partition, e)
	if c.changes == nil {
		c.changes = c.changeRoom[:0]
	}
	c.changes = append(c.changes, e)
}

// OnCommit sets fn to run once the work's effects are durable (metrics that
// must not count work that went stale).
func (c *Context) OnCommit(fn func()) { c.onCommit = fn }

// Finish ends the work: the runtime produces its outputs and state, and only
// once they are durable counts the input as done.
func (c *Context) Finish() {
	if !c.end() {
		return
	}
	c.r.finish(c)
}

// DeadLetter ends the work with the input written to the dead letters,
// instead of whatever was emitted or remembered.
func (c *Context) DeadLetter(reason string, err error) {
	if !c.end() {
		return
	}
	c.dropStaged()
	dl, derr := c.r.deadLetterRecord(c.rec, reason, err, false, "")
	if derr != nil {
		c.r.Fail(derr)
		c.r.release(c)
		return
	}
	c.outs = []*kgo.Record{dl}
	c.r.finish(c)
}

// DeadLetterCopy adds an operator's copy of the input to the dead letters,
// marked answered: the request also gets its terminal answer (a FAILED
// result), so the copy is never counted as one.
func (c *Context) DeadLetterCopy(requestID, reason string, err error) {
	if c.Ended() {
		return
	}
	dl, derr := c.r.deadLetterRecord(c.rec, reason, err, true, requestID)
	if derr != nil {
		c.r.log.Error("dead letter copy", "err", derr)
		return
	}
	c.outs = append(c.outs, dl)
}

// Drop lets go of stale work (Err is not nil): nothing of it takes effect,
// and its input goes to whoever owns the partition now. Dropping work that
// is not stale would leave its input unfinished for good: that is a bug in
// the stage, and it stops the stage like Fail.
func (c *Context) Drop() {
	if c.Err() == nil {
		c.Fail(errors.New("dropped work that is not stale (a bug in the stage)"))
		return
	}
	if !c.end() {
		return
	}
	c.r.stale(c)
}

// Fail gives up the work and stops the stage: it cannot go on safely (a bug,
// state that cannot be restored). The input is not done; it is consumed
// again after the restart.
func (c *Context) Fail(err error) {
	if !c.end() {
		return
	}
	c.dropStaged()
	c.r.Fail(fmt.Errorf("pipeline: %s: %s/%d@%d: %w", c.r.stage, c.rec.Topic, c.rec.Partition, c.rec.Offset, err))
	c.r.release(c)
}

// Ended reports whether the work was ended (Finish, DeadLetter, Drop, Fail).
func (c *Context) Ended() bool { return c.ended.Load() }

func (c *Context) end() bool {
	if !c.ended.CompareAndSwap(false, true) {
		c.r.log.Error("work ended twice", "topic", c.rec.Topic, "partition", c.rec.Partition, "offset", c.rec.Offset)
		return false
	}
	return true
}

// dropStaged undoes the state the work staged.
func (c *Context) dropStaged() {
	for _, e := range c.changes {
		c.r.win.Discard(c.rec.Partition, e)
	}
	c.changes = nil
}

func (c *Context) tp() tp { return tp{c.rec.Topic, c.rec.Partition} }

// output is what finishing a Context produces, in write order.
type output struct {
	records   []*kgo.Record
	changelog []*kgo.Record
}

// output builds the changelog records of the staged state in exactly-once
// mode, one per entry, for the work's transaction. At least once the
// runtime writes the entries of the works it settles together as one record
// per partition (produceLogs), so there is nothing to build here.
func (c *Context) output() (output, error) {
	o := output{records: c.outs}
	if !c.r.cfg.eos {
		return o, nil
	}
	if len(c.changes) > 0 {
		o.changelog = c.logRoom[:0]
	}
	for i := range c.changes {
		e := &c.changes[i]
		v, err := c.r.codec().EncodeStateEntry(c.r.changelog, e)
		if err != nil {
			return output{}, fmt.Errorf("encode state entry: %w", err)
		}
		key := c.rec.Key // the usual case: the input is keyed by the state's key
		if string(key) != e.Key {
			key = []byte(e.Key)
		}
		rec := c.newRecord()
		*rec = kgo.Record{Topic: c.r.changelog, Partition: c.rec.Partition, Key: key, Value: v}
		o.changelog = append(o.changelog, rec)
	}
	return o, nil
}

// apply makes the staged state permanent: the work's effects are durable.
func (c *Context) apply() {
	for _, e := range c.changes {
		c.r.win.Commit(c.rec.Partition, e)
	}
	if c.onCommit != nil {
		c.onCommit()
	}
}
