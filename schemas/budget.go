package schemas

// The decode budget: what decoding one message may take in memory.
//
// A message is small on the wire (Kafka bounds it) but can be large in
// memory: a compressed batch of a few KB can expand to a 12 MB value, and a
// writer schema of the client's choosing decides what each byte becomes. An
// array of records of empty maps is 1 byte per item on the wire and, in
// goavro's native form, a map[string]any per record and another per map:
// 400 bytes of heap per byte. A 12 MB value of that ran a stage out of memory
// (2.25 GiB, fatal, not a panic), and a 950 KB one raised it to ~415 MiB.
//
// So the scan that walks a body before it is decoded (writer.go) adds up
// an estimate of what decoding will allocate, by the kind of each value it
// walks, and refuses the message once the estimate passes the budget: before
// anything is allocated for it, at a cost in time linear in the message.
// (A small body of a plain schema is read in one pass instead, the reader
// checking as it goes: see onePassBound below.)
//
// The estimate is of goavro's native form, the generic in-memory form of
// Avro data, whatever decodes it: it does not depend on which fields the Go
// types know. The direct decoder (decode.go), which skips what it does not
// need and boxes nothing, allocates less than the estimate
// (TestDirectDecoderWithinEstimate); goavro, the reference the tests hold it
// to, allocates the estimate, but for one thing: it grows its []any block by
// block, so an array sent in many blocks costs it up to ~5.6 times its 16
// bytes per slot (measured), which the estimate leaves out, or hamba/avro's
// arrays (blocks of 100) of a legitimate 1M-element tensor would be over the
// budget.
//
// Calibration (Go 1.26, amd64; TestDecodeBudgetCalibration measures these
// against goavro on every run, and fails if they drift): bytes of heap per
// value of goavro's native form, decoding an array of 100,000 such values in
// one block, beyond each item's 16-byte slot in the []any:
//
//	null, boolean        0    (Go boxes them without allocating)
//	int, float           4    (boxed; 0 for an int below 256, not counted)
//	long, double         8
//	enum                16    (its symbol string, boxed)
//	bytes, fixed        24    (the slice, boxed; it aliases the message)
//	string          40 + len  (the bytes boxed, copied to a string, boxed)
//	array               24    (the []any, boxed; its slots on top)
//	record, 0 fields    48    (an empty map[string]any)
//	record, 1-8 fields 336    (a map: header and one group of 8 slots)
//	record, 10 fields  664    (~80 per entry beyond 8)
//	map, n entries      as a record of n fields, plus each key as a string
//	union, not null    336    (goavro wraps it in a one-entry map)
//
// The costs below are these, rounded up where the direct decoder needs more:
// bytes are charged their length too (the decoder copies them), and 8 more,
// for its [][]byte of 24 bytes per element, allocated twice when an array
// comes in two blocks.
//
// Against the budget, DecodeBudgetFactor times the largest message accepted
// (32 MiB at 1 MiB): the largest legitimate requests take at most 25 bytes
// per byte (1M INT64 elements of one byte each: 24 MiB; 1M BOOLs: 16 MiB;
// 1 MiB of FP32: 5 MiB; 1 MiB of raw_contents: 1.2 MiB; a BYTES tensor of
// elements of 2 bytes or more: under 20), while the bombs take more than 40
// (records of empty maps: 400; maps of empty records: 47 with the shortest
// distinct keys; arrays of empty arrays: 40). What lies between is refused
// or not by size: 1M empty BYTES elements (48 bytes each) are refused.
const (
	costSlot       = 16  // an array item: its interface in goavro's []any
	costArray      = 24  // an array: the []any, boxed
	costEmptyMap   = 48  // a map[string]any without entries
	costSmallMap   = 336 // a map of 1 to 8 entries
	costMapEntry   = 96  // an entry of a map of more than 8 (~80 measured)
	costUnion      = 336 // a union value other than null
	costBoxed4     = 4   // an int or a float
	costBoxed8     = 8   // a long or a double
	costEnum       = 16  // an enum
	costBytes      = 32  // bytes, without their length
	costFixed      = 24  // a fixed, without its size
	costString     = 40  // a string, without its length
	maxBudgetBytes = 1 << 40
)

// mapCost is what a map[string]any of n entries costs goavro: a record of n
// fields, or a map of n entries without its keys.
func mapCost(n int64) int64 {
	switch {
	case n == 0:
		return costEmptyMap
	case n <= 8:
		return costSmallMap
	}
	return costEmptyMap + costMapEntry*n
}

// heapBytes is what n bytes of string or bytes data take on the heap:
// allocations are rounded up to a size class (at most 1/8 more, for sizes
// that matter).
func heapBytes(n int64) int64 {
	if n == 0 {
		return 0
	}
	return n + n/8 + 8
}

// textCost is what a string or bytes value of length n costs.
func textCost(k kindOf, n int64) int64 {
	if k == tString {
		return costString + heapBytes(n)
	}
	return costBytes + heapBytes(n)
}

// flatCost is the cost of a value of n when it does not depend on the
// bytes, and whether it does not (true for kinds that hold no other value
// and have no length of their own).
func flatCost(n *node) (int64, bool) {
	switch n.kind {
	case tNull, tBoolean:
		return 0, true
	case tInt, tFloat:
		return costBoxed4, true
	case tLong, tDouble:
		return costBoxed8, true
	case tEnum:
		return costEnum, true
	case tFixed:
		return costFixed + heapBytes(int64(n.size)), true
	}
	return 0, false
}

// One pass. A body whose writer schema is plain enough, and which is small
// enough that even its most expensive reading is within the budget, is not
// scanned first: the strict reader (decode.go) checks what scan would as it
// goes, and hands the body to scan at the first doubt (onePass in
// codec.go). So the walk before the decode, a tenth of a stage's CPU per
// request in S1, is saved for the messages stages read all day.
//
// onePassBound says whether the schema of root is plain enough, and bounds
// what scan would charge a body of it: at most perByte·len(body) + fixed.
// Plain: no record within itself (recursion), nesting within maxDepth, and
// every array and map item at least one byte on the wire (so that a block
// count is bounded by the bytes left, and an item takes bytes to read).
//
// The bound, value by value, as cost ≤ R·bytes + C:
//   - a value without others: its flatCost as C (a boolean, int, long,
//     float, double, enum or fixed); a string or bytes: textCost(n) ≤ 48 +
//     9n/8 ≤ 2·bytes + 48;
//   - a record: the largest R of its fields, and mapCost(fields) + the sum
//     of their C;
//   - a union: the largest R of its branches, and costUnion + the largest C;
//   - an array: costArray as C; each item costs costSlot + its C more than
//     its R·bytes, spread over the fewest bytes an item takes;
//   - a map: mapCost of up to 8 entries as C; each entry costs costMapEntry,
//     a key (≤ 48 + 2·bytes) and its value's C, spread over the fewest
//     bytes an entry takes (its key's length byte and the value).
func onePassBound(root *node) (perByte, fixed int64, ok bool) {
	b := bounder{open: make(map[*node]bool)}
	perByte, fixed = b.bound(root, 0)
	if b.bad || perByte > maxBudgetBytes || fixed > maxBudgetBytes {
		return 0, 0, false
	}
	return perByte, fixed, true
}

type bounder struct {
	open map[*node]bool // records being bounded: met again, recursion
	bad  bool
}

// saturating keeps sums of costs from overflowing: anything past
// maxBudgetBytes is over every budget.
func saturating(a, b int64) int64 { return min(a+b, 2*maxBudgetBytes) }

func (b *bounder) bound(n *node, depth int) (r, c int64) {
	if b.bad {
		return 0, 0
	}
	if cost, ok := flatCost(n); ok {
		return 0, cost
	}
	switch n.kind {
	case tString, tBytes:
		return 2, costString + 8
	}
	if depth++; depth > maxDepth {
		b.bad = true
		return 0, 0
	}
	switch n.kind {
	case tRecord:
		if b.open[n] {
			b.bad = true
			return 0, 0
		}
		b.open[n] = true
		c = mapCost(int64(len(n.fields)))
		for _, f := range n.fields {
			fr, fc := b.bound(f.typ, depth)
			r, c = max(r, fr), saturating(c, fc)
		}
		delete(b.open, n)
		return r, c
	case tUnion:
		for _, br := range n.branches {
			brr, brc := b.bound(br, depth)
			r, c = max(r, brr), max(c, brc)
		}
		return r, saturating(c, costUnion)
	case tArray, tMap:
		ir, ic := b.bound(n.items, depth)
		least := int64(n.items.minSize())
		each := saturating(costSlot, ic)
		if n.kind == tMap {
			least++ // the key's length
			ir = max(ir, 2)
			each = saturating(saturating(costMapEntry, costString+8), ic)
		}
		if least == 0 {
			b.bad = true
			return 0, 0
		}
		c = costArray
		if n.kind == tMap {
			c = costSmallMap
		}
		return saturating(ir, (each+least-1)/least), c
	}
	b.bad = true
	return 0, 0
}
