package schemas

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// The direct decoder reads a body, once scan has accepted it (or strict, in
// one pass without scan: onePass in codec.go), straight into
// the Go types by the writer's node tree: no goavro native form, no boxed
// values, tensor data decoded into []float32 and the like in one allocation
// per array (two when an array comes in more than one block).
//
// It maps as goavro's native form and the mapping of native_test.go do, and
// the tests hold it to them (FuzzDirectDecoder, FuzzWriterSchema): fields by
// name (a field the writer lacks, or wrote as null, takes its zero value; a
// field we do not know is skipped); a value is accepted when Avro's promotion
// rules allow it (int to long to float to double, string and bytes either
// way, an enum as its symbol), and an int32 field also takes a long that
// fits; empty arrays and maps become nil. The first error is the one the
// reference meets first, walking the Go type's fields in order, so that a
// message is refused with the same words by both.
//
// The head decoders are the same code reading fewer fields into memory: they
// check everything the full decoder checks (a field of the wrong type, a
// status we do not know, an int that does not fit) and so fail exactly when
// it fails, but they keep only the head fields and, for a request's inputs,
// a tensorSummary of views into the message.

// target is a Go type the decoder fills.
type target uint8

const (
	forRequest target = iota
	forTensor
	forResult
	forTimings
	forDeadLetter
	forStateEntry
	forPressure
	numTargets
)

// The fields of each Go type, in the order of the struct (which is the
// order the reference converts them in, and so ranks their errors in).
const (
	rqRequestID = iota
	rqIdempotencyKey
	rqTenant
	rqModel
	rqModelVersion
	rqInputs
	rqParameters
	rqPriority
	rqDeadlineMs
	rqReplyTopic
	rqCreatedAtMs
)

const (
	tnName = iota
	tnDatatype
	tnShape
	tnFP32
	tnFP64
	tnInt32
	tnInt64
	tnBool
	tnBytes
	tnRaw
)

const (
	rsRequestID = iota
	rsIdempotencyKey
	rsTenant
	rsStatus
	rsReason
	rsErrorCode
	rsErrorMessage
	rsRetryAfterMs
	rsOriginalRequestID
	rsOriginalStatus
	rsAttempt
	rsOutputs
	rsModel
	rsModelVersion
	rsBatchSize
	rsTimings
	rsReplyTopic
	rsCreatedAtMs
	rsCompletedAtMs
)

const (
	tmQueuedMs = iota
	tmBatchWaitMs
	tmInferenceMs
	tmEndToEndMs
)

const (
	dlReason = iota
	dlError
	dlStage
	dlSourceTopic
	dlSourcePartition
	dlSourceOffset
	dlRequestID
	dlAnswered
	dlPayload
	dlPayloadSize
	dlPayloadSHA256
	dlTruncated
	dlAtMs
)

const (
	seKey = iota
	seRequestID
	seStatus
	seExpiresAtMs
	seMore
)

const (
	prSource = iota
	prModel
	prLane
	prMinPriority
	prInstance
	prStatus
	prAtMs
	prIntervalMs
	prPredictedWaitMs
	prRetryAfterMs
	prShedFraction
	prCapacityPerSecond
	prBacklog
	prRunning
	prFixedMs
	prPerItemMs
	prBatch
	prBatchLimit
	prBatchMeasured
)

// targetFields names each Go type's fields as the schemas do.
var targetFields = [numTargets][]string{
	forRequest: {
		rqRequestID: "request_id", rqIdempotencyKey: "idempotency_key", rqTenant: "tenant",
		rqModel: "model", rqModelVersion: "model_version", rqInputs: "inputs",
		rqParameters: "parameters", rqPriority: "priority", rqDeadlineMs: "deadline_ms",
		rqReplyTopic: "reply_topic", rqCreatedAtMs: "created_at_ms",
	},
	forTensor: {
		tnName: "name", tnDatatype: "datatype", tnShape: "shape", tnFP32: "fp32_contents",
		tnFP64: "fp64_contents", tnInt32: "int_contents", tnInt64: "int64_contents",
		tnBool: "bool_contents", tnBytes: "bytes_contents", tnRaw: "raw_contents",
	},
	forResult: {
		rsRequestID: "request_id", rsIdempotencyKey: "idempotency_key", rsTenant: "tenant",
		rsStatus: "status", rsReason: "reason", rsErrorCode: "error_code",
		rsErrorMessage: "error_message", rsRetryAfterMs: "retry_after_ms",
		rsOriginalRequestID: "original_request_id", rsOriginalStatus: "original_status",
		rsAttempt: "attempt", rsOutputs: "outputs", rsModel: "model",
		rsModelVersion: "model_version", rsBatchSize: "batch_size", rsTimings: "timings",
		rsReplyTopic: "reply_topic", rsCreatedAtMs: "created_at_ms", rsCompletedAtMs: "completed_at_ms",
	},
	forTimings: {
		tmQueuedMs: "queued_ms", tmBatchWaitMs: "batch_wait_ms", tmInferenceMs: "inference_ms",
		tmEndToEndMs: "end_to_end_ms",
	},
	forDeadLetter: {
		dlReason: "reason", dlError: "error", dlStage: "stage", dlSourceTopic: "source_topic",
		dlSourcePartition: "source_partition", dlSourceOffset: "source_offset",
		dlRequestID: "request_id", dlAnswered: "answered", dlPayload: "payload",
		dlPayloadSize: "payload_size", dlPayloadSHA256: "payload_sha256",
		dlTruncated: "truncated", dlAtMs: "at_ms",
	},
	forStateEntry: {
		seKey: "key", seRequestID: "request_id", seStatus: "status", seExpiresAtMs: "expires_at_ms",
		seMore: "more",
	},
	forPressure: {
		prSource: "source", prModel: "model", prLane: "lane", prMinPriority: "min_priority",
		prInstance: "instance", prStatus: "status", prAtMs: "at_ms", prIntervalMs: "interval_ms",
		prPredictedWaitMs: "predicted_wait_ms", prRetryAfterMs: "retry_after_ms",
		prShedFraction: "shed_fraction", prCapacityPerSecond: "capacity_per_second",
		prBacklog: "backlog", prRunning: "running", prFixedMs: "fixed_ms", prPerItemMs: "per_item_ms", prBatch: "batch",
		prBatchLimit: "batch_limit", prBatchMeasured: "batch_measured",
	},
}

var noOrder = [numTargets]int8{-1, -1, -1, -1, -1, -1, -1}

var fieldOrders = func() map[string][numTargets]int8 {
	m := make(map[string][numTargets]int8)
	for t, names := range targetFields {
		for i, name := range names {
			o, ok := m[name]
			if !ok {
				o = noOrder
			}
			o[t] = int8(i)
			m[name] = o
		}
	}
	return m
}()

// fieldOrder is where a writer field of the name goes in each Go type.
func fieldOrder(name string) [numTargets]int8 {
	if o, ok := fieldOrders[name]; ok {
		return o
	}
	return noOrder
}

// where is the Go field a value is decoded into: its place ranks errors in
// the order the reference meets them, and it prints as the reference names
// fields, e.g. inputs[1].shape[2], timings.queued_ms, parameters["k"].
type where struct {
	name  [2]string // the field, and the field of the record it holds
	order [2]int8
	item  [2]int32 // index in the array at each level; -1: none
	key   []byte   // the parameters key, a view into the body
	keyed bool
}

func (w *where) before(o *where) bool {
	for i := range 2 {
		if w.order[i] != o.order[i] {
			return w.order[i] < o.order[i]
		}
		if w.item[i] != o.item[i] {
			return w.item[i] < o.item[i]
		}
	}
	return bytes.Compare(w.key, o.key) < 0
}

func (w *where) String() string {
	var b strings.Builder
	b.WriteString(w.name[0])
	for i := range 2 {
		if i == 1 && w.name[1] != "" {
			b.WriteString("." + w.name[1])
		}
		if w.item[i] >= 0 {
			b.WriteString("[" + strconv.Itoa(int(w.item[i])) + "]")
		}
	}
	if w.keyed {
		b.WriteString("[" + strconv.Quote(string(w.key)) + "]")
	}
	return b.String()
}

// reader decodes one body that scan accepted, or, strict, one that scan has
// not seen (onePass). Unstrict, it trusts what scan checked (lengths,
// counts, indexes), so reading cannot fail but for a bug, which panics and
// is recovered as a malformed message. Strict, it checks what it would
// otherwise trust and panics (errOnePass) at the first thing scan would
// refuse: a block count larger than the bytes left can hold, a boolean
// byte above 1, an int out of range, an enum index out of range, a length
// that is negative or past the end, a map key repeated (or a map it cannot
// check); what Go checks itself (a slice past the end, a union index out
// of range) panics anyway. Conversions can fail either way, and reading
// goes on after a failure, so that the error reported is the first in the
// reference's order whatever the order of the writer's fields.
type reader struct {
	buf    []byte
	off    int
	at     where
	err    error
	errAt  where
	strict bool
}

// errOnePass is the panic of a strict reader at what scan would refuse.
var errOnePass = errors.New("schemas: not for one pass")

// refuse stops a strict reader: scan is to judge the message.
func refuse() { panic(errOnePass) }

// intv reads a writer's int, checking its range when strict.
func (r *reader) intv() int64 {
	v := r.varint()
	if r.strict && (v < math.MinInt32 || v > math.MaxInt32) {
		refuse()
	}
	return v
}

// boolv reads a writer's boolean, checking its byte when strict.
func (r *reader) boolv() bool {
	b := r.buf[r.off]
	if r.strict && b > 1 {
		refuse()
	}
	r.off++
	return b == 1
}

// enumv reads a writer's enum index, checking it when strict (a look-up
// by it panics anyway; skipping it does not).
func (r *reader) enumv(n *node) int64 {
	i := r.varint()
	if r.strict && (i < 0 || i >= int64(len(n.symbols))) {
		refuse()
	}
	return i
}

func (r *reader) fail(format string, args ...any) {
	if r.err != nil && !r.at.before(&r.errAt) {
		return
	}
	r.err = fmt.Errorf("field %s: %s", r.at.String(), fmt.Sprintf(format, args...))
	r.errAt = r.at
}

func (r *reader) wrongType(n *node, want string) {
	r.fail("wrong type: writer has %s, want %s", n.typeName(), want)
	r.skip(n)
}

// field starts a field of the top-level record.
func (r *reader) field(f *field, t target) int8 {
	o := f.order[t]
	r.at.name = [2]string{f.name}
	r.at.order = [2]int8{o, -1}
	r.at.item = [2]int32{-1, -1}
	return o
}

// level is the level of an array met now: 1 inside a record held by a
// top-level field (a tensor's shape), 0 otherwise (inputs).
func (r *reader) level() int {
	if r.at.name[1] != "" {
		return 1
	}
	return 0
}

// Reading the wire.

func (r *reader) varint() int64 {
	if b := r.buf[r.off]; b < 0x80 {
		r.off++
		return int64(b>>1) ^ -int64(b&1)
	}
	v, n := binary.Uvarint(r.buf[r.off:])
	if n <= 0 {
		panic("a varint the scan accepted does not read")
	}
	r.off += n
	return int64(v>>1) ^ -int64(v&1)
}

// view returns the next string or bytes value, aliasing the body.
func (r *reader) view() []byte {
	n := int(r.varint())
	b := r.buf[r.off : r.off+n : r.off+n]
	r.off += n
	return b
}

func (r *reader) fixed(size int) []byte {
	b := r.buf[r.off : r.off+size : r.off+size]
	r.off += size
	return b
}

func (r *reader) f32() float32 {
	v := math.Float32frombits(binary.LittleEndian.Uint32(r.buf[r.off:]))
	r.off += 4
	return v
}

func (r *reader) f64() float64 {
	v := math.Float64frombits(binary.LittleEndian.Uint64(r.buf[r.off:]))
	r.off += 8
	return v
}

// block reads the count of a block of the array or map n, and its size in
// bytes when the count is negative (unused: scan walked the items, not the
// size, and so must the reader). Strict, it checks that the count is one
// that scan accepts: items of the fewest bytes n's items take (a map's
// key at least its length byte more) fit in what is left, so that nothing
// is allocated for items the body cannot hold.
func (r *reader) block(n *node) int {
	c := r.varint()
	if c < 0 {
		c = -c
		r.varint()
	}
	if r.strict {
		item := int64(n.items.minSize())
		if n.kind == tMap {
			item++
		}
		if c < 0 || item == 0 || c > int64(len(r.buf)-r.off)/item {
			refuse()
		}
	}
	return int(c)
}

// resolve reads the union branches of a value of n; nil means no value:
// the field is absent, null, or a null branch.
func (r *reader) resolve(n *node) *node {
	for n != nil {
		switch n.kind {
		case tNull:
			return nil
		case tUnion:
			n = n.branches[r.varint()]
		default:
			return n
		}
	}
	return nil
}

// wireSize is the size of every value of n when it is fixed and takes no
// checking, for skipping arrays of them at once.
func wireSize(n *node) (int, bool) {
	switch n.kind {
	case tNull:
		return 0, true
	case tBoolean:
		return 1, true
	case tFloat:
		return 4, true
	case tDouble:
		return 8, true
	case tFixed:
		return n.size, true
	}
	return 0, false
}

func (r *reader) skip(n *node) {
	switch n.kind {
	case tNull:
	case tBoolean:
		r.boolv()
	case tInt:
		r.intv()
	case tLong:
		r.varint()
	case tEnum:
		r.enumv(n)
	case tFloat:
		r.off += 4
	case tDouble:
		r.off += 8
	case tBytes, tString:
		r.view()
	case tFixed:
		r.off += n.size
	case tRecord:
		for i := range n.fields {
			r.skip(n.fields[i].typ)
		}
	case tUnion:
		r.skip(n.branches[r.varint()])
	case tArray, tMap:
		for first := true; ; first = false {
			c := r.block(n)
			if c == 0 {
				return
			}
			if r.strict && n.kind == tMap && (c > 1 || !first) {
				refuse() // its keys are not compared here: scan does
			}
			r.skipItems(n, c)
		}
	}
}

// skipItems skips count items of the array or map n.
func (r *reader) skipItems(n *node, count int) {
	if size, ok := wireSize(n.items); ok && n.kind == tArray && (!r.strict || n.items.kind != tBoolean) {
		r.off += count * size
		return
	}
	for range count {
		if n.kind == tMap {
			l := int(r.varint())
			r.off += l
		}
		r.skip(n.items)
	}
}

// more counts the items of an array from the block whose count was just
// read (count), to its end, without moving.
func (r *reader) more(n *node, count int) int {
	at := r.off
	total := 0
	for count > 0 {
		total += count
		r.skipItems(n, count)
		count = r.block(n)
	}
	r.off = at
	return total
}

// sized returns out with room for the count items of the block just read
// (0: inside a block, nothing to do). It allocates exactly as many as the
// array has, so that an array is allocated once when it comes in one block
// (as every encoder we know writes it), and twice at most when it does not.
func sized[T any](r *reader, arr *node, out []T, count int) []T {
	if cap(out)-len(out) >= count {
		return out
	}
	if out == nil {
		return make([]T, 0, count)
	}
	grown := make([]T, len(out), len(out)+r.more(arr, count))
	copy(grown, out)
	return grown
}

// Conversions, one per Go type, each accepting what Avro promotes to it.

// want is a Go type a value converts to.
type want uint8

const (
	wString want = iota
	wLong
	wInt
	wFloat
	wDouble
	wBoolean
	wBytes
)

var wantNames = [...]string{"string", "long", "int", "float", "double", "boolean", "bytes"}

// accepts reports whether a writer value of kind k converts to w; an int
// from a long must also fit, which only the value tells.
func accepts(w want, k kindOf) bool {
	switch w {
	case wString:
		return k == tString || k == tEnum || k == tBytes || k == tFixed
	case wBytes:
		return k == tBytes || k == tFixed || k == tString
	case wLong, wInt:
		return k == tInt || k == tLong
	case wFloat:
		return k == tFloat || k == tInt || k == tLong
	case wDouble:
		return k == tDouble || k == tFloat || k == tInt || k == tLong
	case wBoolean:
		return k == tBoolean
	}
	return false
}

// text reads a value that converts to a string, as a view: the bytes of a
// string, bytes or fixed, the symbol of an enum.
func (r *reader) text(n *node) []byte {
	if n = r.resolve(n); n == nil {
		return nil
	}
	switch n.kind {
	case tString, tBytes:
		return r.view()
	case tFixed:
		return r.fixed(n.size)
	case tEnum:
		return n.symbytes[r.enumv(n)]
	}
	r.wrongType(n, "string")
	return nil
}

func (r *reader) str(n *node) string {
	if n = r.resolve(n); n != nil && n.kind == tEnum {
		return n.symbols[r.enumv(n)] // shared, not copied
	}
	return string(r.text(n))
}

// name reads a string that repeats from message to message (a model's
// name, say), interned.
func (r *reader) name(n *node) string {
	if n = r.resolve(n); n != nil && n.kind == tEnum {
		return n.symbols[r.enumv(n)]
	}
	return intern(r.text(n))
}

// strIf reads a string into memory only when it is kept.
func (r *reader) strIf(n *node, keep bool) string {
	if keep {
		return r.str(n)
	}
	r.text(n)
	return ""
}

// nameIf reads a name (interned) into memory only when it is kept.
func (r *reader) nameIf(n *node, keep bool) string {
	if keep {
		return r.name(n)
	}
	r.text(n)
	return ""
}

// status reads a status as one of the constants, without allocating.
func (r *reader) status(n *node) Status {
	b := r.text(n)
	if len(b) == 0 {
		return ""
	}
	for _, s := range [...]Status{StatusSucceeded, StatusFailed, StatusExpired, StatusRejected, StatusDuplicate} {
		if string(b) == string(s) {
			return s
		}
	}
	r.fail("unknown status %q", b)
	return ""
}

func (r *reader) long(n *node) int64 {
	if n = r.resolve(n); n == nil {
		return 0
	}
	if !accepts(wLong, n.kind) {
		r.wrongType(n, "long")
		return 0
	}
	if n.kind == tInt {
		return r.intv()
	}
	return r.varint()
}

func (r *reader) int(n *node) int32 {
	if n = r.resolve(n); n == nil {
		return 0
	}
	if !accepts(wInt, n.kind) {
		r.wrongType(n, "int")
		return 0
	}
	v := r.varint()
	if v < math.MinInt32 || v > math.MaxInt32 {
		r.fail("%d does not fit an int", v)
		return 0
	}
	return int32(v)
}

func (r *reader) float32(n *node) float32 {
	if n = r.resolve(n); n == nil {
		return 0
	}
	switch n.kind {
	case tFloat:
		return r.f32()
	case tInt:
		return float32(r.intv())
	case tLong:
		return float32(r.varint())
	}
	r.wrongType(n, "float")
	return 0
}

func (r *reader) float64(n *node) float64 {
	if n = r.resolve(n); n == nil {
		return 0
	}
	switch n.kind {
	case tDouble:
		return r.f64()
	case tFloat:
		return float64(r.f32())
	case tInt:
		return float64(r.intv())
	case tLong:
		return float64(r.varint())
	}
	r.wrongType(n, "double")
	return 0
}

func (r *reader) bool(n *node) bool {
	if n = r.resolve(n); n == nil {
		return false
	}
	if n.kind != tBoolean {
		r.wrongType(n, "boolean")
		return false
	}
	return r.boolv()
}

// bytesView reads a value that converts to bytes, as a view, and whether
// there is one (raw_contents tells null from empty).
func (r *reader) bytesView(n *node) ([]byte, bool) {
	if n = r.resolve(n); n == nil {
		return nil, false
	}
	switch n.kind {
	case tBytes, tString:
		return r.view(), true
	case tFixed:
		return r.fixed(n.size), true
	}
	r.wrongType(n, "bytes")
	return nil, false
}

// someBytes copies bytes out of the body, which the caller may reuse;
// empty is nil.
func (r *reader) someBytes(n *node) []byte {
	b, _ := r.bytesView(n)
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

// check reads a value that must convert to w, keeping nothing.
func (r *reader) check(n *node, w want) {
	if n = r.resolve(n); n == nil {
		return
	}
	switch {
	case !accepts(w, n.kind):
		r.wrongType(n, wantNames[w])
	case w == wInt && n.kind == tLong:
		if v := r.varint(); v < math.MinInt32 || v > math.MaxInt32 {
			r.fail("%d does not fit an int", v)
		}
	default:
		r.skip(n)
	}
}

// Arrays.

// array resolves an array value and returns the array node, nil when there
// is none.
func (r *reader) array(n *node) *node {
	if n = r.resolve(n); n == nil {
		return nil
	}
	if n.kind != tArray {
		r.wrongType(n, "array")
		return nil
	}
	return n
}

// iter walks the items of an array, block by block, keeping where the
// item goes for errors. (A loop rather than a callback per item: an
// indirect call would make the reader escape to the heap.)
type iter struct {
	arr   *node
	left  int // items left in the block
	count int // items of the block, when a block has just begun; 0 otherwise
	index int
	lvl   int
}

// each starts a walk through the items of the array arr.
func (r *reader) each(arr *node) iter { return iter{arr: arr, lvl: r.level()} }

// next moves to the next item, reading block counts; it reports false at
// the end of the array.
func (r *reader) next(it *iter) bool {
	it.count = 0
	if it.left == 0 {
		if it.left = r.block(it.arr); it.left == 0 {
			r.at.item[it.lvl] = -1
			return false
		}
		it.count = it.left
	}
	it.left--
	r.at.item[it.lvl] = int32(it.index)
	it.index++
	return true
}

// count walks an array whose items must convert to w, keeping nothing, and
// returns its length: the head decoders' way through tensor data.
func (r *reader) count(n *node, w want) int {
	arr := r.array(n)
	if arr == nil {
		return 0
	}
	// Items that convert without a check of their value are skipped a block
	// at once.
	if accepts(w, arr.items.kind) && (w != wInt || arr.items.kind == tInt) {
		total := 0
		for c := r.block(arr); c > 0; c = r.block(arr) {
			r.skipItems(arr, c)
			total += c
		}
		return total
	}
	it := r.each(arr)
	for r.next(&it) {
		r.check(arr.items, w)
	}
	return it.index
}

// The tensor arrays, with a loop without calls for the items every encoder
// writes; other writer types go item by item through the conversions.

func (r *reader) float32s(n *node) []float32 {
	arr := r.array(n)
	if arr == nil {
		return nil
	}
	if arr.items.kind != tFloat {
		var out []float32
		for it := r.each(arr); r.next(&it); {
			out = sized(r, arr, out, it.count)
			out = append(out, r.float32(arr.items))
		}
		return out
	}
	var out []float32
	for c := r.block(arr); c > 0; c = r.block(arr) {
		out = sized(r, arr, out, c)
		b := r.buf[r.off : r.off+4*c]
		for i := range c {
			out = append(out, math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
		}
		r.off += 4 * c
	}
	return out
}

func (r *reader) float64s(n *node) []float64 {
	arr := r.array(n)
	if arr == nil {
		return nil
	}
	if arr.items.kind != tDouble {
		var out []float64
		for it := r.each(arr); r.next(&it); {
			out = sized(r, arr, out, it.count)
			out = append(out, r.float64(arr.items))
		}
		return out
	}
	var out []float64
	for c := r.block(arr); c > 0; c = r.block(arr) {
		out = sized(r, arr, out, c)
		b := r.buf[r.off : r.off+8*c]
		for i := range c {
			out = append(out, math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:])))
		}
		r.off += 8 * c
	}
	return out
}

func (r *reader) int32s(n *node) []int32 {
	arr := r.array(n)
	if arr == nil {
		return nil
	}
	if arr.items.kind != tInt {
		var out []int32
		for it := r.each(arr); r.next(&it); {
			out = sized(r, arr, out, it.count)
			out = append(out, r.int(arr.items))
		}
		return out
	}
	var out []int32
	for c := r.block(arr); c > 0; c = r.block(arr) {
		out = sized(r, arr, out, c)
		for range c {
			out = append(out, int32(r.intv())) // unstrict, scan checked the range
		}
	}
	return out
}

// int64s appends to out, which may have room (a summary's shape).
func (r *reader) int64s(n *node, out []int64) []int64 {
	arr := r.array(n)
	if arr == nil {
		return out
	}
	if arr.items.kind != tLong && arr.items.kind != tInt {
		for it := r.each(arr); r.next(&it); {
			out = sized(r, arr, out, it.count)
			out = append(out, r.long(arr.items))
		}
		return out
	}
	for c := r.block(arr); c > 0; c = r.block(arr) {
		out = sized(r, arr, out, c)
		if arr.items.kind == tInt {
			for range c {
				out = append(out, r.intv())
			}
			continue
		}
		for range c {
			out = append(out, r.varint())
		}
	}
	return out
}

func (r *reader) bools(n *node) []bool {
	arr := r.array(n)
	if arr == nil {
		return nil
	}
	if arr.items.kind != tBoolean {
		var out []bool
		for it := r.each(arr); r.next(&it); {
			out = sized(r, arr, out, it.count)
			out = append(out, r.bool(arr.items))
		}
		return out
	}
	var out []bool
	for c := r.block(arr); c > 0; c = r.block(arr) {
		out = sized(r, arr, out, c)
		for _, b := range r.buf[r.off : r.off+c] {
			if r.strict && b > 1 {
				refuse()
			}
			out = append(out, b == 1)
		}
		r.off += c
	}
	return out
}

// Records.

// record resolves a record value and returns its node, nil when there is
// none.
func (r *reader) record(n *node, name string) *node {
	if n = r.resolve(n); n == nil {
		return nil
	}
	if n.kind != tRecord {
		r.wrongType(n, "record "+name)
		return nil
	}
	return n
}

// tensor reads a tensor into t (the full decoders) or, without t, checks
// it and returns its name and summary as views (the request head decoder
// validates them; the result head decoder does not look). The summary's
// shape is appended to dims, which may have room: the summary is returned,
// not stored through a pointer, so that room can be on the caller's stack.
func (r *reader) tensor(n *node, t *Tensor, dims []int64) (name []byte, s tensorSummary) {
	s.dims = dims
	rec := r.record(n, "Tensor")
	if rec == nil {
		return nil, s
	}
	outer := r.at
	for i := range rec.fields {
		f := &rec.fields[i]
		o := f.order[forTensor]
		if o < 0 {
			r.skip(f.typ)
			continue
		}
		r.at.name[1], r.at.order[1], r.at.item[1] = f.name, o, -1
		switch {
		case o == tnName || o == tnDatatype:
			b := r.text(f.typ)
			switch {
			case o == tnName:
				name = b
				if t != nil {
					t.Name = intern(b)
				}
			case t != nil:
				t.Datatype = datatype(b)
			default:
				s.datatype = b
			}
		case o == tnRaw:
			b, ok := r.bytesView(f.typ)
			switch {
			case t != nil && ok:
				t.Raw = append(make([]byte, 0, len(b)), b...) // empty is not null here
			case t == nil:
				s.raw, s.hasRaw = b, ok
			}
		case t != nil:
			r.tensorData(f.typ, o, t)
		case o == tnShape:
			s.dims = r.int64s(f.typ, s.dims)
		default:
			s.counts[o-tnFP32] = r.count(f.typ, tensorWants[o])
		}
	}
	r.at = outer
	return name, s
}

// datatype returns the datatype named b, one of the constants when it is a
// known one, so that the common case does not allocate.
func datatype(b []byte) string {
	for _, dt := range [...]string{"FP32", "FP64", "INT32", "INT64", "BOOL", "BYTES"} {
		if string(b) == dt {
			return dt
		}
	}
	return string(b)
}

// tensorWants is what the items of each tensor array convert to.
var tensorWants = [...]want{tnShape: wLong, tnFP32: wFloat, tnFP64: wDouble, tnInt32: wInt, tnInt64: wLong, tnBool: wBoolean, tnBytes: wBytes}

func (r *reader) tensorData(n *node, o int8, t *Tensor) {
	switch o {
	case tnShape:
		t.Shape = r.int64s(n, nil)
	case tnFP32:
		t.FP32 = r.float32s(n)
	case tnFP64:
		t.FP64 = r.float64s(n)
	case tnInt32:
		t.Int32 = r.int32s(n)
	case tnInt64:
		t.Int64 = r.int64s(n, nil)
	case tnBool:
		t.Bool = r.bools(n)
	case tnBytes:
		if arr := r.array(n); arr != nil {
			for it := r.each(arr); r.next(&it); {
				t.Bytes = sized(r, arr, t.Bytes, it.count)
				t.Bytes = append(t.Bytes, r.someBytes(arr.items))
			}
		}
	}
}

// tensors reads an array of tensors: into memory with keep, else checking
// them only.
func (r *reader) tensors(n *node, keep bool) []Tensor {
	arr := r.array(n)
	if arr == nil {
		return nil
	}
	var out []Tensor
	for it := r.each(arr); r.next(&it); {
		if !keep {
			var dims [8]int64
			r.tensor(arr.items, nil, dims[:0])
			continue
		}
		out = sized(r, arr, out, it.count)
		out = append(out, Tensor{})
		r.tensor(arr.items, &out[len(out)-1], nil)
	}
	return out
}

func (r *reader) timings(n *node) Timings {
	var t Timings
	rec := r.record(n, "Timings")
	if rec == nil {
		return t
	}
	outer := r.at
	for i := range rec.fields {
		f := &rec.fields[i]
		o := f.order[forTimings]
		if o < 0 {
			r.skip(f.typ)
			continue
		}
		r.at.name[1], r.at.order[1], r.at.item[1] = f.name, o, -1
		v := r.float64(f.typ)
		switch o {
		case tmQueuedMs:
			t.QueuedMs = v
		case tmBatchWaitMs:
			t.BatchWaitMs = v
		case tmInferenceMs:
			t.InferenceMs = v
		case tmEndToEndMs:
			t.EndToEndMs = v
		}
	}
	r.at = outer
	return t
}

// parameters reads the parameters map: into memory without h, else
// handing each entry to h as views, to validate.
func (r *reader) parameters(n *node, h *requestCheck) map[string]any {
	keep := h == nil
	if n = r.resolve(n); n == nil {
		return nil
	}
	if n.kind != tMap {
		r.wrongType(n, "map")
		return nil
	}
	var out map[string]any
	var keys keyViews // strict: the keys so far, to find one repeated
	for c := r.block(n); c > 0; c = r.block(n) {
		if keep && out == nil {
			out = make(map[string]any, c)
		}
		for range c {
			key := r.view()
			if r.strict {
				keys.add(key)
			}
			r.at.key, r.at.keyed = key, true
			p := r.param(n.items, keep)
			p.key = key
			if keep {
				out[string(key)] = p.value
			} else {
				h.params.add(p)
			}
		}
	}
	r.at.key, r.at.keyed = nil, false
	return out
}

// keyViews are a map's keys as a strict reader meets them: a repeated key,
// which scan refuses, or more keys than it compares (parameters are a
// handful), stop it.
type keyViews struct {
	few [8][]byte
	n   int
}

func (k *keyViews) add(key []byte) {
	if k.n == len(k.few) {
		refuse()
	}
	for _, o := range k.few[:k.n] {
		if bytes.Equal(o, key) {
			refuse()
		}
	}
	k.few[k.n] = key
	k.n++
}

// param is a parameter as read: its value when kept, and what validation
// needs of it as views.
type param struct {
	key, text []byte
	isText    bool
	value     any
	read      bool // from the wire (not a Request's map)
}

func (r *reader) param(n *node, keep bool) param {
	p := param{read: true}
	v := r.resolve(n)
	if v == nil {
		r.fail("null parameter")
		return p
	}
	switch v.kind {
	case tString, tEnum:
		p.isText = true
		if keep {
			p.value = r.str(v)
		} else {
			p.text = r.text(v)
		}
	case tInt, tLong:
		if l := r.long(v); keep {
			p.value = l
		}
	case tFloat, tDouble:
		if d := r.float64(v); keep {
			p.value = d
		}
	case tBoolean:
		if b := r.bool(v); keep {
			p.value = b
		}
	default:
		r.wrongType(v, "string, long, double or boolean")
	}
	return p
}

// request reads a request into q; with h, only its head fields, checking
// the rest and handing the inputs and parameters to h to validate.
func (r *reader) request(n *node, q *Request, h *requestCheck) {
	for i := range n.fields {
		f := &n.fields[i]
		switch r.field(f, forRequest) {
		case rqRequestID:
			q.RequestID = r.str(f.typ)
		case rqIdempotencyKey:
			q.IdempotencyKey = r.str(f.typ)
		case rqTenant:
			q.Tenant = r.name(f.typ)
		case rqModel:
			q.Model = r.name(f.typ)
		case rqModelVersion:
			q.ModelVersion = r.name(f.typ)
		case rqInputs:
			if h == nil {
				q.Inputs = r.tensors(f.typ, true)
			} else {
				h.inputs(r, f.typ)
			}
		case rqParameters:
			q.Parameters = r.parameters(f.typ, h)
		case rqPriority:
			q.Priority = r.int(f.typ)
		case rqDeadlineMs:
			q.DeadlineMs = r.long(f.typ)
		case rqReplyTopic:
			q.ReplyTopic = r.name(f.typ)
		case rqCreatedAtMs:
			q.CreatedAtMs = r.long(f.typ)
		default:
			r.skip(f.typ)
		}
	}
}

// result reads a result into q; without full, only its head fields into
// memory, checking the rest.
func (r *reader) result(n *node, q *Result, full bool) {
	for i := range n.fields {
		f := &n.fields[i]
		switch r.field(f, forResult) {
		case rsRequestID:
			q.RequestID = r.str(f.typ)
		case rsIdempotencyKey:
			q.IdempotencyKey = r.strIf(f.typ, full)
		case rsTenant:
			q.Tenant = r.nameIf(f.typ, full)
		case rsStatus:
			q.Status = r.status(f.typ)
		case rsReason:
			q.Reason = r.nameIf(f.typ, full)
		case rsErrorCode:
			q.ErrorCode = r.name(f.typ)
		case rsErrorMessage:
			q.ErrorMessage = r.str(f.typ)
		case rsRetryAfterMs:
			q.RetryAfterMs = r.long(f.typ)
		case rsOriginalRequestID:
			q.OriginalRequestID = r.strIf(f.typ, full)
		case rsOriginalStatus:
			q.OriginalStatus = r.status(f.typ)
		case rsAttempt:
			q.Attempt = r.int(f.typ)
		case rsOutputs:
			q.Outputs = r.tensors(f.typ, full)
		case rsModel:
			q.Model = r.nameIf(f.typ, full)
		case rsModelVersion:
			q.ModelVersion = r.nameIf(f.typ, full)
		case rsBatchSize:
			q.BatchSize = r.int(f.typ)
		case rsTimings:
			q.Timings = r.timings(f.typ)
		case rsReplyTopic:
			q.ReplyTopic = r.name(f.typ)
		case rsCreatedAtMs:
			q.CreatedAtMs = r.long(f.typ)
		case rsCompletedAtMs:
			q.CompletedAtMs = r.long(f.typ)
		default:
			r.skip(f.typ)
		}
	}
}

func (r *reader) deadLetter(n *node) *DeadLetter {
	d := new(DeadLetter)
	for i := range n.fields {
		f := &n.fields[i]
		switch r.field(f, forDeadLetter) {
		case dlReason:
			d.Reason = r.str(f.typ)
		case dlError:
			d.Error = r.str(f.typ)
		case dlStage:
			d.Stage = r.str(f.typ)
		case dlSourceTopic:
			d.SourceTopic = r.str(f.typ)
		case dlSourcePartition:
			d.SourcePartition = r.int(f.typ)
		case dlSourceOffset:
			d.SourceOffset = r.long(f.typ)
		case dlRequestID:
			d.RequestID = r.str(f.typ)
		case dlAnswered:
			d.Answered = r.bool(f.typ)
		case dlPayload:
			d.Payload = r.someBytes(f.typ)
		case dlPayloadSize:
			d.PayloadSize = r.long(f.typ)
		case dlPayloadSHA256:
			d.PayloadSHA256 = r.someBytes(f.typ)
		case dlTruncated:
			d.Truncated = r.bool(f.typ)
		case dlAtMs:
			d.AtMs = r.long(f.typ)
		default:
			r.skip(f.typ)
		}
	}
	return d
}

func (r *reader) stateEntry(n *node) *StateEntry {
	e := new(StateEntry)
	for i := range n.fields {
		f := &n.fields[i]
		switch o := r.field(f, forStateEntry); {
		case r.stateField(o, f, e):
		case o == seMore:
			e.More = r.stateItems(f.typ)
		default:
			r.skip(f.typ)
		}
	}
	return e
}

// stateField reads a field a StateEntry and a StateItem share, by its order
// o, into e; false for any other field, which it leaves unread.
func (r *reader) stateField(o int8, f *field, e *StateEntry) bool {
	switch o {
	case seKey:
		e.Key = r.str(f.typ)
	case seRequestID:
		e.RequestID = r.str(f.typ)
	case seStatus:
		e.Status = r.status(f.typ)
	case seExpiresAtMs:
		e.ExpiresAtMs = r.long(f.typ)
	default:
		return false
	}
	return true
}

// stateItems reads a state entry's further entries (a StateItem has the
// fields of a StateEntry but more, which an item's writer may have and
// which is skipped, as the reference does).
func (r *reader) stateItems(n *node) []StateEntry {
	arr := r.array(n)
	if arr == nil {
		return nil
	}
	var out []StateEntry
	for it := r.each(arr); r.next(&it); {
		out = sized(r, arr, out, it.count)
		out = append(out, StateEntry{})
		r.stateItem(arr.items, &out[len(out)-1])
	}
	return out
}

func (r *reader) stateItem(n *node, e *StateEntry) {
	rec := r.record(n, "StateItem")
	if rec == nil {
		return
	}
	outer := r.at
	for i := range rec.fields {
		f := &rec.fields[i]
		o := f.order[forStateEntry]
		r.at.name[1], r.at.order[1], r.at.item[1] = f.name, o, -1
		if o == seMore || !r.stateField(o, f, e) {
			r.skip(f.typ)
		}
	}
	r.at = outer
}

func (r *reader) pressure(n *node) *Pressure {
	p := new(Pressure)
	for i := range n.fields {
		f := &n.fields[i]
		switch r.field(f, forPressure) {
		case prSource:
			p.Source = r.str(f.typ)
		case prModel:
			p.Model = r.str(f.typ)
		case prLane:
			p.Lane = r.str(f.typ)
		case prMinPriority:
			p.MinPriority = r.int(f.typ)
		case prInstance:
			p.Instance = r.str(f.typ)
		case prStatus:
			p.Status = r.str(f.typ)
		case prAtMs:
			p.AtMs = r.long(f.typ)
		case prIntervalMs:
			p.IntervalMs = r.long(f.typ)
		case prPredictedWaitMs:
			p.PredictedWaitMs = r.long(f.typ)
		case prRetryAfterMs:
			p.RetryAfterMs = r.long(f.typ)
		case prShedFraction:
			p.ShedFraction = r.float64(f.typ)
		case prCapacityPerSecond:
			p.CapacityPerSecond = r.float64(f.typ)
		case prBacklog:
			p.Backlog = r.long(f.typ)
		case prRunning:
			p.Running = r.long(f.typ)
		case prFixedMs:
			p.FixedMs = r.float64(f.typ)
		case prPerItemMs:
			p.PerItemMs = r.float64(f.typ)
		case prBatch:
			p.Batch = r.int(f.typ)
		case prBatchLimit:
			p.BatchLimit = r.int(f.typ)
		case prBatchMeasured:
			p.BatchMeasured = r.int(f.typ)
		default:
			r.skip(f.typ)
		}
	}
	return p
}
