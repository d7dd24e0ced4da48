package oip

import (
	"math"
	"slices"
	"strconv"

	"github.com/asyncinfer/asyncinfer/schemas"
)

// group is requests that share one inference call: the same version, the
// same parameters, and inputs with the same names in the same order, each
// with the same datatype and trailing shape, and every input of a request
// with the same first dimension (its rows). Their inputs are concatenated
// along the first dimension; the outputs are split back by it.
type group struct {
	items   []int   // indices into the batch
	rowsOf  []int64 // rows of each item
	rows    int64   // their sum
	version string
}

// groups partitions a batch. A request that cannot share a call (no
// inputs, a scalar input, inputs whose first dimensions differ) gets a group
// of its own, sent as it is. The order of groups and of items in them is the
// batch's.
func groups(batch []*schemas.Request, defaultVersion string) []*group {
	if len(batch) == 1 { // the common case of a lone request: no key
		return []*group{single(batch[0], 0, defaultVersion)}
	}
	var (
		out   []*group
		byKey = make(map[string]*group, 1)
		key   []byte
	)
	for i, r := range batch {
		rows, ok := batchRows(r)
		if !ok {
			out = append(out, single(r, i, defaultVersion))
			continue
		}
		key = appendKey(key[:0], r)
		if g := byKey[string(key)]; g != nil {
			g.items = append(g.items, i)
			g.rowsOf = append(g.rowsOf, rows)
			g.rows += rows
			continue
		}
		g := &group{items: make([]int, 1, len(batch)-i), rowsOf: make([]int64, 1, len(batch)-i), rows: rows, version: version(r, defaultVersion)}
		g.items[0], g.rowsOf[0] = i, rows
		byKey[string(key)] = g
		out = append(out, g)
	}
	return out
}

func single(r *schemas.Request, i int, defaultVersion string) *group {
	rows, _ := batchRows(r)
	return &group{items: []int{i}, rowsOf: []int64{rows}, rows: rows, version: version(r, defaultVersion)}
}

func version(r *schemas.Request, def string) string {
	if r.ModelVersion != "" {
		return r.ModelVersion
	}
	return def
}

// batchRows is the first dimension every input of r shares; ok is false when
// r cannot be concatenated with others.
func batchRows(r *schemas.Request) (rows int64, ok bool) {
	if len(r.Inputs) == 0 {
		return 0, false
	}
	for j := range r.Inputs {
		s := r.Inputs[j].Shape
		if len(s) == 0 || j > 0 && s[0] != rows {
			return 0, false
		}
		rows = s[0]
	}
	return rows, true
}

// appendKey writes what requests must share to be in one call. Strings are
// length-prefixed, so no two different requests write the same key.
func appendKey(b []byte, r *schemas.Request) []byte {
	b = appendLen(b, r.ModelVersion)
	for j := range r.Inputs {
		t := &r.Inputs[j]
		b = appendLen(b, t.Name)
		b = appendLen(b, t.Datatype)
		for _, d := range t.Shape[1:] {
			b = strconv.AppendInt(b, d, 10)
			b = append(b, ',')
		}
		b = append(b, ';')
	}
	if len(r.Parameters) == 0 {
		return b
	}
	b = append(b, 1)
	keys := make([]string, 0, len(r.Parameters))
	for k := range r.Parameters {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b = appendLen(b, k)
		switch v := r.Parameters[k].(type) {
		case string:
			b = append(b, 's')
			b = appendLen(b, v)
		case int64:
			b = append(b, 'i')
			b = strconv.AppendInt(b, v, 10)
		case float64:
			b = append(b, 'f')
			b = strconv.AppendUint(b, math.Float64bits(v), 16)
		case bool:
			b = append(b, 'b')
			b = strconv.AppendBool(b, v)
		default:
			b = append(b, '?') // refused when encoded
		}
		b = append(b, ';')
	}
	return b
}

func appendLen(b []byte, s string) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, ':')
	return append(b, s...)
}
