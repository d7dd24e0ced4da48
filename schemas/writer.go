package schemas

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
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
//   - goavro wraps union values as map[string]any{branch: value}, which a map
//     or record value can look like too; the tree says which fields really are
//     unions.
type writerSchema struct {
	root  *node
	codec *goavro.Codec
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

// stringNode is the type of map keys.
var stringNode = &node{kind: tString, min: 1, minState: 2}

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
	symbols  int              // enum symbol count
	items    *node            // array items, map values
	branches []*node          // union
	size     int              // fixed
	min      int              // fewest bytes a value takes on the wire
	minState uint8            // 0 not computed, 1 computing, 2 done
}

type field struct {
	name string
	typ  *node
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
	return &writerSchema{root: root, codec: codec}, nil
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
			n.fields = append(n.fields, field{name, ft})
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
		n.symbols = len(syms)
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
// anything, checking what goavro would trust: lengths and counts against the
// bytes left, varint lengths, union and enum indexes, nesting depth.
type scanner struct {
	buf       []byte
	off       int
	base      int // offset of buf in the message, for errors
	depth     int
	zeroItems int
}

// scan checks that body holds exactly one value of w's schema.
func (w *writerSchema) scan(body []byte) error {
	s := scanner{buf: body, base: HeaderSize}
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

func (s *scanner) value(n *node) error {
	switch n.kind {
	case tNull:
		return nil
	case tBoolean:
		if s.left() < 1 {
			return s.errorf("truncated boolean")
		}
		if b := s.buf[s.off]; b > 1 {
			return s.errorf("boolean byte %#x", b)
		}
		s.off++
		return nil
	case tInt:
		v, err := s.long()
		if err == nil && (v < math.MinInt32 || v > math.MaxInt32) {
			err = s.errorf("int %d out of range", v)
		}
		return err
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
		return s.skip(l, kindNames[n.kind])
	case tFixed:
		return s.skip(int64(n.size), "fixed")
	case tEnum:
		i, err := s.long()
		if err == nil && (i < 0 || i >= int64(n.symbols)) {
			err = s.errorf("enum %s index %d out of range", n.name, i)
		}
		return err
	}

	if s.depth++; s.depth > maxDepth {
		return s.errorf("nested deeper than %d", maxDepth)
	}
	defer func() { s.depth-- }()
	switch n.kind {
	case tRecord:
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
		return s.value(n.branches[i])
	case tArray, tMap:
		return s.blocks(n)
	}
	return s.errorf("unknown schema kind %d", n.kind)
}

func (s *scanner) blocks(n *node) error {
	item := n.items.minSize()
	if n.kind == tMap {
		item++ // the key, a string of at least its length byte
	}
	for {
		count, err := s.long()
		if err != nil {
			return err
		}
		if count == 0 {
			return nil
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
			if count > int64(s.left()/item) {
				return s.errorf("%s block of %d items, only %d bytes left", kindNames[n.kind], count, s.left())
			}
		} else if s.zeroItems += int(min(count, maxZeroSizeItems+1)); s.zeroItems > maxZeroSizeItems {
			return s.errorf("more than %d items that take no bytes", maxZeroSizeItems)
		}
		for ; count > 0; count-- {
			if n.kind == tMap {
				if err := s.value(stringNode); err != nil {
					return err
				}
			}
			if err := s.value(n.items); err != nil {
				return err
			}
		}
	}
}
