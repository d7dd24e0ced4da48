package pipeline

import "github.com/twmb/franz-go/pkg/kgo"

// partitioner sends records to changelog topics to the partition set on the
// record (the input's), and everything else by key with murmur2 (Kafka's
// default, so that clients in any language agree on where a key lives).
type partitioner struct {
	manual map[string]bool
	byKey  kgo.Partitioner
	fixed  kgo.Partitioner
}

func newPartitioner(manual map[string]bool) kgo.Partitioner {
	return &partitioner{manual: manual, byKey: kgo.StickyKeyPartitioner(nil), fixed: kgo.ManualPartitioner()}
}

func (p *partitioner) ForTopic(t string) kgo.TopicPartitioner {
	if p.manual[t] {
		return p.fixed.ForTopic(t)
	}
	return p.byKey.ForTopic(t)
}

// KeyPartition is the partition Kafka's default partitioner picks for key
// among n partitions: murmur2 of the key, the sign bit cleared, modulo n.
// It builds nothing: it runs for every request.
func KeyPartition(key []byte, n int) int32 {
	return int32(int(murmur2(key)&0x7fffffff) % n)
}

// murmur2 is Kafka's hash of record keys (Utils.murmur2 in the Java client,
// the same in franz-go and librdkafka's murmur2 partitioners).
func murmur2(b []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	h := seed ^ uint32(len(b))
	for len(b) >= 4 {
		k := uint32(b[3])<<24 | uint32(b[2])<<16 | uint32(b[1])<<8 | uint32(b[0])
		b = b[4:]
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch len(b) {
	case 3:
		h ^= uint32(b[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(b[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(b[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}
