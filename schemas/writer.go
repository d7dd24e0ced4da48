package schemas

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/linkedin/goavro/v2"
)

// A writerSchema is a schema some producer wrote with, ready to decode its
// messages: goavro's codec for the bytes, and our own tree of the same schema.
// The tree is there because goavro alone is not safe on hostile input and not
// enough to map its output:
//
//   - goavro preallocates an array or map from the block count on the wire
//     (make([]any, 0, count), up to MaxBlockCount = 2^31-1), so a few bytes
//     can ask for 32 GiB, and the runtime's out-of-memory is fatal, not a
//     panic that recover could catch. scan walks the body first and bounds
//     every count by the bytes left to hold it, so goavro never sees such a
//     count. (goavro's MaxBlockCount and MaxBlockSize are left alone: they
//     are global to the process, and any limit low enough to be safe would
//     refuse large tensors that the bytes-left bound accepts.)
//   - goavro's native form costs far more heap than the bytes it comes from
//     (a record is a map[string]any: an array of records of empty maps costs
//     400 bytes per byte on the wire), and so may anything decoded from it;
//     scan estimates what decoding will take and refuses a body over the
//     decode budget (see budget.go).
//   - goavro refuses a map with a repeated key; scan does too, so that a body
//     scan accepts is one every decoder accepts.
//
// The tree is also what the direct decoder (decode.go) reads the bytes by;
// goavro's codec parses and validates the schema, and is the reference the
// tests hold the direct decoder to.
type writerSchema struct {
	root  *node
	codec *goavro.Codec
	// onePass: a body of this schema may be read without scan when its
	// bound (perByte·len + fixed, onePassBound) is within the budget.
	onePass        bool
	perByte, fixed int64
}

// fits says whether a body of n bytes may be read in one pass within budget.
func (w *writerSchema) fits(n int, budget int64) bool {
	return w.onePass && int64(n) <= maxBudgetBytes/max(1, w.perByte) && w.perByte*int64(n)+w.fixed <= budget
}

// Limits of scan. Real messages are nowhere near them.
const (
	// maxDepth bounds nesting of records, arrays, maps and unions, so a
	// recursive writer schema cannot make decoding recurse without end (a
	// goroutine stack overflow is fatal, like out-of-memory).
	maxDepth = 64
	// maxZeroSizeItems bounds the items of arrays whose items take no bytes
	// (array<null>, arrays of empty records), which no byte count bounds.
	maxZeroSizeItems = 1 << 16
)

type kindOf uint8

const (
	tNull kindOf = iota
	tBoolean
	tInt
	tLong
	tFloat
	tDouble
	tBytes
	tString
	tRecord
	tEnum
	tArray
	tMap
	tUnion
	tFixed
)

var primitives = map[string]kindOf{
	"null":    tNull,
	"boolean": tBoolean,
	"int":     tInt,
	"long":    tLong,
	"float":   tFloat,
	"double":  tDouble,
	"bytes":   tBytes,
	"string":  tString,
}

// reserved are the names a named type may not have.
var reserved = map[string]bool{
	"null": true, "boolean": true, "int": true, "long": true, "float": true,
	"double": true, "bytes": true, "string": true, "record": true, "error": true,
	"enum": true, "array": true, "map": true, "fixed": true,
}

var kindNames = [...]string{
	tNull: "null", tBoolean: "boolean", tInt: "int", tLong: "long",
	tFloat: "float", tDouble: "double", tBytes: "bytes", tString: "string",
	tRecord: "record", tEnum: "enum", tArray: "array", tMap: "map",
	tUnion: "union", tFixed: "fixed",
}

// node is one type of a writer schema. Named types are shared, so the graph
// may have cycles (recursive records).
type node struct {
	kind     kindOf
	name     string // full name of a record, enum or fixed
	fields   []field
	byName   map[string]*node // record fields by name
	symbols  []string         // enum
	symbytes [][]byte         // enum symbols as bytes, for the decoder's views
	items    *node            // array items, map values
	branches []*node          // union
	size     int              // fixed
	min      int              // fewest bytes a value takes on the wire
	minState uint8            // 0 not computed, 1 computing, 2 done
}

type field struct {
	name string
	typ  *node
	// order is the field's place in each Go type the decoder fills, -1
	// where that type has no field of the name (see fieldOrder).
	order [numTargets]int8
}

// typeName is the name goavro gives the node as a union branch.
func (n *node) typeName() string {
	switch n.kind {
	case tRecord, tEnum, tFixed:
		return n.name
	}
	return kindNames[n.kind]
}

// branch returns the union branch goavro named name.
func (n *node) branch(name string) *node {
	for _, b := range n.branches {
		if b.typeName() == name {
			return b
		}
	}
	return nil
}

// String describes n for errors: "record asyncinfer.Result", "string".
func (n *node) String() string {
	if n.name != "" {
		return kindNames[n.kind] + " " + n.name
	}
	return kindNames[n.kind]
}

// shortName is a named type's name without its namespace.
func (n *node) shortName() string {
	return n.name[strings.LastIndexByte(n.name, '.')+1:]
}

// parseWriter prepares a writer schema for decoding. Logical types are
// dropped first: the bytes are those of the underlying type, and goavro would
// otherwise hand back time.Time or *big.Rat where a client annotated, say,
// created_at_ms as timestamp-millis.
func parseWriter(text string) (w *writerSchema, err error) {
	var doc any
	if err := json.Unmarshal([]byte(text), &doc); err != nil {
		return nil, fmt.Errorf("schema is not JSON: %w", err)
	}
	doc = stripLogicalTypes(doc)
	p := parser{named: make(map[string]*node)}
	root, err := p.parse(doc, "")
	if err != nil {
		return nil, err
	}
	root.minSize()
	plain, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	// goavro panics on some malformed schemas (it type-asserts attributes);
	// a schema from the registry is input like any other.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("goavro panicked parsing the schema: %v", r)
		}
	}()
	codec, err := goavro.NewCodec(string(plain))
	if err != nil {
		return nil, err
	}
	w = &writerSchema{root: root, codec: codec}
	w.perByte, w.fixed, w.onePass = onePassBound(root)
	return w, nil
}

func stripLogicalTypes(v any) any {
	switch v := v.(type) {
	case map[string]any:
		delete(v, "logicalType")
		for k, e := range v {
			if k != "default" { // a default is a value, not a schema
				v[k] = stripLogicalTypes(e)
			}
		}
	case []any:
		for i, e := range v {
			v[i] = stripLogicalTypes(e)
		}
	}
	return v
}

// parser builds a node tree with goavro's reading of names (see its
// name.go and codec.go), so both agree on what each byte is.
type parser struct {
	named map[string]*node
}

func (p *parser) parse(v any, ns string) (*node, error) {
	switch v := v.(type) {
	case string:
		return p.lookup(v, ns)
	case []any:
		u := &node{kind: tUnion}
		for i, b := range v {
			bn, err := p.parse(b, ns)
			if err != nil {
				return nil, fmt.Errorf("union branch %d: %w", i, err)
			}
			if bn.kind == tUnion {
				return nil, errors.New("union directly inside a union")
			}
			if u.branch(bn.typeName()) != nil {
				return nil, fmt.Errorf("union has two branches of type %s", bn.typeName())
			}
			u.branches = append(u.branches, bn)
		}
		if len(u.branches) == 0 {
			return nil, errors.New("empty union")
		}
		return u, nil
	case map[string]any:
		return p.parseObject(v, ns)
	}
	return nil, fmt.Errorf("schema of JSON type %T", v)
}

func (p *parser) lookup(name, ns string) (*node, error) {
	if k, ok := primitives[name]; ok {
		return &node{kind: k}, nil
	}
	if n, ok := p.named[name]; ok {
		return n, nil
	}
	if ns != "" {
		if n, ok := p.named[ns+"."+name]; ok {
			return n, nil
		}
	}
	return nil, fmt.Errorf("unknown type %q", name)
}

func (p *parser) parseObject(m map[string]any, ns string) (*node, error) {
	var t string
	switch tv := m["type"].(type) {
	case string:
		t = tv
	case map[string]any, []any:
		return p.parse(tv, ns)
	default:
		return nil, errors.New("object without a type")
	}
	switch t {
	case "record", "error":
		n, ns, err := p.define(m, ns, tRecord)
		if err != nil {
			return nil, err
		}
		fs, ok := m["fields"].([]any)
		if !ok {
			return nil, fmt.Errorf("record %s: fields is not an array", n.name)
		}
		n.byName = make(map[string]*node, len(fs))
		for i, f := range fs {
			fm, ok := f.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("record %s: field %d is not an object", n.name, i)
			}
			name, _ := fm["name"].(string)
			if name == "" {
				return nil, fmt.Errorf("record %s: field %d has no name", n.name, i)
			}
			if _, dup := n.byName[name]; dup {
				return nil, fmt.Errorf("record %s: two fields named %s", n.name, name)
			}
			// The field object itself is the field's schema: goavro reads
			// its "type" and attributes such as "items" from it.
			ft, err := p.parseObject(fm, ns)
			if err != nil {
				return nil, fmt.Errorf("record %s: field %s: %w", n.name, name, err)
			}
			n.fields = append(n.fields, field{name: name, typ: ft, order: fieldOrder(name)})
			n.byName[name] = ft
		}
		return n, nil
	case "enum":
		n, _, err := p.define(m, ns, tEnum)
		if err != nil {
			return nil, err
		}
		syms, _ := m["symbols"].([]any)
		if len(syms) == 0 {
			return nil, fmt.Errorf("enum %s: no symbols", n.name)
		}
		for i, sym := range syms {
			str, ok := sym.(string)
			if !ok {
				return nil, fmt.Errorf("enum %s: symbol %d is not a string", n.name, i)
			}
			n.symbols = append(n.symbols, str)
			n.symbytes = append(n.symbytes, []byte(str))
		}
		return n, nil
	case "fixed":
		n, _, err := p.define(m, ns, tFixed)
		if err != nil {
			return nil, err
		}
		size, ok := m["size"].(float64)
		if !ok || size < 0 || size > math.MaxInt32 || size != math.Trunc(size) {
			return nil, fmt.Errorf("fixed %s: bad size", n.name)
		}
		n.size = int(size)
		return n, nil
	case "array":
		items, ok := m["items"]
		if !ok {
			return nil, errors.New("array without items")
		}
		in, err := p.parse(items, ns)
		if err != nil {
			return nil, fmt.Errorf("array items: %w", err)
		}
		return &node{kind: tArray, items: in}, nil
	case "map":
		values, ok := m["values"]
		if !ok {
			return nil, errors.New("map without values")
		}
		vn, err := p.parse(values, ns)
		if err != nil {
			return nil, fmt.Errorf("map values: %w", err)
		}
		return &node{kind: tMap, items: vn}, nil
	}
	return p.lookup(t, ns)
}

// define registers a named type before its body is parsed, so the body may
// refer to it, and returns the namespace its body is parsed in.
func (p *parser) define(m map[string]any, ens string, k kindOf) (*node, string, error) {
	name, _ := m["name"].(string)
	if name == "" {
		return nil, "", fmt.Errorf("%s without a name", kindNames[k])
	}
	ns, _ := m["namespace"].(string)
	full := name
	switch {
	case strings.Contains(name, "."):
		ns = name[:strings.LastIndexByte(name, '.')]
	case ns != "":
		full = ns + "." + name
	case ens != "":
		full, ns = ens+"."+name, ens
	}
	// goavro looks a name up before it reads a keyword, so a type named
	// "array" or "int" would mean one thing to goavro and another to us.
	if reserved[full[strings.LastIndexByte(full, '.')+1:]] {
		return nil, "", fmt.Errorf("type name %s is reserved", full)
	}
	if _, ok := p.named[full]; ok {
		return nil, "", fmt.Errorf("type %s defined twice", full)
	}
	n := &node{kind: k, name: full}
	p.named[full] = n
	return n, ns, nil
}

// minSize returns the fewest bytes a value of n takes. A record met again
// while its own size is being computed counts as 0: a lower bound is all
// scan needs.
func (n *node) minSize() int {
	switch n.minState {
	case 1:
		return 0
	case 2:
		return n.min
	}
	n.minState = 1
	switch n.kind {
	case tNull:
		n.min = 0
	case tFloat:
		n.min = 4
	case tDouble:
		n.min = 8
	case tFixed:
		n.min = n.size
	case tRecord:
		total := 0
		for _, f := range n.fields {
			total += f.typ.minSize()
			if total > math.MaxInt32 {
				total = math.MaxInt32
			}
		}
		n.min = total
	case tArray, tMap:
		n.items.minSize()
		n.min = 1
	case tUnion:
		for _, b := range n.branches {
			b.minSize()
		}
		n.min = 1
	default: // boolean, int, long, bytes, string, enum
		n.min = 1
	}
	n.minState = 2
	return n.min
}

// scanner walks an Avro binary body against a writer schema without building
// anything. It checks what goavro would trust or refuse (lengths and counts
// against the bytes left, varint lengths, union and enum indexes, booleans,
// repeated map keys, nesting depth), and it adds up what decoding the body
// will cost (budget.go) as it goes, so that a body over the decode budget is
// refused before anything is allocated for it.
type scanner struct {
	buf       []byte
	off       int
	base      int // offset of buf in the message, for errors
	depth     int
	zeroItems int
	cost      int64 // estimated heap bytes of decoding what was walked
	budget    int64
}

// scan checks that body holds exactly one value of w's schema, and that
// decoding it takes at most budget bytes by the estimate of budget.go.
func (w *writerSchema) scan(body []byte, budget int64) error {
	s := scanner{buf: body, base: HeaderSize, budget: budget}
	if len(body) > math.MaxInt32 {
		return fmt.Errorf("body of %d bytes is larger than 2 GiB", len(body))
	}
	if err := s.value(w.root); err != nil {
		return err
	}
	if s.off != len(s.buf) {
		return fmt.Errorf("%d trailing bytes after the value at byte %d", len(s.buf)-s.off, s.base+s.off)
	}
	return nil
}

func (s *scanner) errorf(format string, args ...any) error {
	return fmt.Errorf("at byte %d: %s", s.base+s.off, fmt.Sprintf(format, args...))
}

func (s *scanner) left() int { return len(s.buf) - s.off }

// charge adds the cost of what is about to be walked, and refuses it when
// the total goes over the budget.
func (s *scanner) charge(bytes int64) error {
	if s.cost += bytes; s.cost > s.budget {
		return s.errorf("over the decode budget: decoding the message would take more than %d bytes of memory", s.budget)
	}
	return nil
}

func (s *scanner) long() (int64, error) {
	v, n := binary.Uvarint(s.buf[s.off:])
	switch {
	case n == 0:
		return 0, s.errorf("truncated varint")
	case n < 0:
		return 0, s.errorf("varint overflows 64 bits")
	}
	s.off += n
	return int64(v>>1) ^ -int64(v&1), nil
}

func (s *scanner) skip(n int64, what string) error {
	if n < 0 {
		return s.errorf("negative %s length %d", what, n)
	}
	if n > int64(s.left()) {
		return s.errorf("%s of %d bytes, %d left", what, n, s.left())
	}
	s.off += int(n)
	return nil
}

func (s *scanner) boolean() error {
	if s.left() < 1 {
		return s.errorf("truncated boolean")
	}
	if b := s.buf[s.off]; b > 1 {
		return s.errorf("boolean byte %#x", b)
	}
	s.off++
	return nil
}

func (s *scanner) int() error {
	v, err := s.long()
	if err == nil && (v < math.MinInt32 || v > math.MaxInt32) {
		err = s.errorf("int %d out of range", v)
	}
	return err
}

func (s *scanner) enum(n *node) error {
	i, err := s.long()
	if err == nil && (i < 0 || i >= int64(len(n.symbols))) {
		err = s.errorf("enum %s index %d out of range", n.name, i)
	}
	return err
}

func (s *scanner) value(n *node) error {
	if cost, ok := flatCost(n); ok {
		if err := s.charge(cost); err != nil {
			return err
		}
	}
	switch n.kind {
	case tNull:
		return nil
	case tBoolean:
		return s.boolean()
	case tInt:
		return s.int()
	case tLong:
		_, err := s.long()
		return err
	case tFloat:
		return s.skip(4, "float")
	case tDouble:
		return s.skip(8, "double")
	case tBytes, tString:
		l, err := s.long()
		if err != nil {
			return err
		}
		if err := s.skip(l, kindNames[n.kind]); err != nil {
			return err
		}
		return s.charge(textCost(n.kind, l))
	case tFixed:
		return s.skip(int64(n.size), "fixed")
	case tEnum:
		return s.enum(n)
	}

	if s.depth++; s.depth > maxDepth {
		return s.errorf("nested deeper than %d", maxDepth)
	}
	err := s.nested(n)
	s.depth--
	return err
}

// nested walks a value that holds others.
func (s *scanner) nested(n *node) error {
	switch n.kind {
	case tRecord:
		if err := s.charge(mapCost(int64(len(n.fields)))); err != nil {
			return err
		}
		for _, f := range n.fields {
			if err := s.value(f.typ); err != nil {
				return err
			}
		}
		return nil
	case tUnion:
		i, err := s.long()
		if err != nil {
			return err
		}
		if i < 0 || i >= int64(len(n.branches)) {
			return s.errorf("union index %d out of range", i)
		}
		b := n.branches[i]
		if b.kind != tNull {
			if err := s.charge(costUnion); err != nil {
				return err
			}
		}
		return s.value(b)
	case tArray, tMap:
		return s.blocks(n)
	}
	return s.errorf("unknown schema kind %d", n.kind)
}

func (s *scanner) blocks(n *node) error {
	isMap := n.kind == tMap
	item := int64(n.items.minSize())
	if isMap {
		item++ // the key, a string of at least its length byte
	} else if err := s.charge(costArray); err != nil {
		return err
	}
	var keys keySet
	for first := true; ; first = false {
		count, err := s.long()
		if err != nil {
			return err
		}
		if count == 0 {
			if isMap && first {
				return s.charge(costEmptyMap)
			}
			return keys.end(s)
		}
		if count < 0 {
			if count == math.MinInt64 {
				return s.errorf("%s block count out of range", kindNames[n.kind])
			}
			count = -count
			if _, err := s.long(); err != nil { // block size in bytes, unused
				return err
			}
		}
		if item > 0 {
			if count > int64(s.left())/item {
				return s.errorf("%s block of %d items, only %d bytes left", kindNames[n.kind], count, s.left())
			}
		} else if s.zeroItems += int(min(count, maxZeroSizeItems+1)); s.zeroItems > maxZeroSizeItems {
			return s.errorf("more than %d items that take no bytes", maxZeroSizeItems)
		}
		// The whole block is charged before it is walked, so that a block
		// over the budget costs no more time than memory.
		cost := costSlot * count
		switch {
		case isMap && first:
			cost = mapCost(count)
		case isMap:
			cost = costMapEntry * count
		}
		if err := s.charge(cost); err != nil {
			return err
		}
		if !isMap {
			if done, err := s.flat(n.items, count); done || err != nil {
				if err != nil {
					return err
				}
				continue
			}
		}
		for ; count > 0; count-- {
			if isMap {
				if err := s.key(&keys); err != nil {
					return err
				}
			}
			if err := s.value(n.items); err != nil {
				return err
			}
		}
	}
}

// flat walks count array items of a kind that holds no other values in one
// go, instead of one call per item: the tensors are such arrays. It reports
// whether n is such a kind.
func (s *scanner) flat(n *node, count int64) (bool, error) {
	cost, ok := flatCost(n)
	if !ok {
		return false, nil
	}
	if err := s.charge(cost * count); err != nil {
		return true, err
	}
	switch n.kind {
	case tFloat, tDouble, tFixed:
		// blocks checked that count items of this size fit in what is left.
		s.off += int(count) * n.minSize()
	case tBoolean:
		for i, b := range s.buf[s.off : s.off+int(count)] {
			if b > 1 {
				s.off += i
				return true, s.errorf("boolean byte %#x", b)
			}
		}
		s.off += int(count)
	case tInt:
		for ; count > 0; count-- {
			if err := s.int(); err != nil {
				return true, err
			}
		}
	case tLong:
		for ; count > 0; count-- {
			if _, err := s.long(); err != nil {
				return true, err
			}
		}
	case tEnum:
		for ; count > 0; count-- {
			if err := s.enum(n); err != nil {
				return true, err
			}
		}
	}
	return true, nil
}

// key walks a map key, charges it, and adds it to the map's keys.
func (s *scanner) key(keys *keySet) error {
	l, err := s.long()
	if err != nil {
		return err
	}
	at := s.off
	if err := s.skip(l, "string"); err != nil {
		return err
	}
	if err := keys.add(s, keyRef{int32(at), int32(l)}); err != nil {
		return err
	}
	return s.charge(textCost(tString, l))
}

// keySet finds a key repeated in one map, as goavro refuses it: by comparing
// each key with those before while there are few (parameters are a handful),
// by sorting them once at the end when there are many.
type keySet struct {
	few  [8]keyRef
	n    int
	many []keyRef
}

// keyRef is where a key is in the body: 8 bytes per key however long it is.
type keyRef struct{ off, len int32 }

func (k *keySet) add(s *scanner, r keyRef) error {
	if k.n < len(k.few) {
		for _, o := range k.few[:k.n] {
			if bytes.Equal(s.text(o), s.text(r)) {
				return repeatedKey(s, r)
			}
		}
		k.few[k.n] = r
		k.n++
		return nil
	}
	if k.many == nil {
		k.many = append(make([]keyRef, 0, 2*len(k.few)), k.few[:]...)
	}
	k.many = append(k.many, r)
	return nil
}

func (k *keySet) end(s *scanner) error {
	if k.many == nil {
		return nil
	}
	slices.SortFunc(k.many, func(a, b keyRef) int {
		if c := bytes.Compare(s.text(a), s.text(b)); c != 0 {
			return c
		}
		return int(a.off - b.off)
	})
	for i := 1; i < len(k.many); i++ {
		if bytes.Equal(s.text(k.many[i-1]), s.text(k.many[i])) {
			return repeatedKey(s, k.many[i])
		}
	}
	return nil
}

func (s *scanner) text(r keyRef) []byte { return s.buf[r.off : r.off+r.len] }

func repeatedKey(s *scanner, r keyRef) error {
	return fmt.Errorf("at byte %d: map key %s repeated", s.base+int(r.off), clip(s.text(r)))
}

// clip quotes b for an error, cut short: errors end up in logs and dead
// letters, and must not echo a megabyte of hostile input.
func clip(b []byte) string {
	const most = 64
	if len(b) <= most {
		return strconv.Quote(string(b))
	}
	return strconv.Quote(string(b[:most])) + "..."
}
