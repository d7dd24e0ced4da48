package pipeline

import "github.com/twmb/franz-go/pkg/kgo"

// partitioner sends records to changelog topics to the partition set on the
// record, and everything else by key with murmur2 (Kafka's default, so that
// clients in any language agree on where a key lives).
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
// among n partitions.
func KeyPartition(key []byte, n int) int32 {
	return int32(keyPartitioner.ForTopic("").Partition(&kgo.Record{Key: key}, n))
}

var keyPartitioner = kgo.StickyKeyPartitioner(nil)
