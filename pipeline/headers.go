package pipeline

import (
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
)

// HeaderPrefix begins every header asyncinfer sets. Headers in this
// namespace are the pipeline's: what a client sends under it is dropped at
// the entry, so that no client can speak for a stage (a client's
// "asyncinfer-status: SUCCEEDED" on a request that FAILED).
const HeaderPrefix = "asyncinfer-"

// HeaderSource carries the coordinates of the request a record descends
// from, "topic/partition@offset", set at the entry: dead-letter copies of
// FAILED answers point at the request, not at an intermediate record.
const HeaderSource = "asyncinfer-source"

// ClientHeaders returns hs without the headers in the pipeline's namespace.
// It returns hs itself when there are none (the common case: no copy).
func ClientHeaders(hs []kgo.RecordHeader) []kgo.RecordHeader {
	n := 0
	for _, h := range hs {
		if strings.HasPrefix(h.Key, HeaderPrefix) {
			n++
		}
	}
	if n == 0 {
		return hs
	}
	out := make([]kgo.RecordHeader, 0, len(hs)-n)
	for _, h := range hs {
		if !strings.HasPrefix(h.Key, HeaderPrefix) {
			out = append(out, h)
		}
	}
	return out
}

// Header returns the value of the last header named key, and whether there
// is one.
func Header(hs []kgo.RecordHeader, key string) ([]byte, bool) {
	for i := len(hs) - 1; i >= 0; i-- {
		if hs[i].Key == key {
			return hs[i].Value, true
		}
	}
	return nil, false
}

// SetHeader returns hs with key set to value: an existing header of that
// name is replaced, else one is appended.
func SetHeader(hs []kgo.RecordHeader, key string, value []byte) []kgo.RecordHeader {
	out := make([]kgo.RecordHeader, 0, len(hs)+1)
	for _, h := range hs {
		if h.Key != key {
			out = append(out, h)
		}
	}
	return append(out, kgo.RecordHeader{Key: key, Value: value})
}

// SourceOf formats a record's coordinates for HeaderSource.
func SourceOf(r *kgo.Record) []byte {
	b := make([]byte, 0, len(r.Topic)+24)
	b = append(b, r.Topic...)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(r.Partition), 10)
	b = append(b, '@')
	b = strconv.AppendInt(b, r.Offset, 10)
	return b
}

// ParseSource parses a HeaderSource value.
func ParseSource(v []byte) (topic string, partition int32, offset int64, ok bool) {
	s := string(v)
	at := strings.LastIndexByte(s, '@')
	slash := strings.LastIndexByte(s[:max(at, 0)], '/')
	if at < 0 || slash < 0 {
		return "", 0, 0, false
	}
	p, err1 := strconv.ParseInt(s[slash+1:at], 10, 32)
	o, err2 := strconv.ParseInt(s[at+1:], 10, 64)
	if err1 != nil || err2 != nil {
		return "", 0, 0, false
	}
	return s[:slash], int32(p), o, true
}
