package pipeline

import (
	"math/rand/v2"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// KeyPartition agrees with franz-go's key partitioner (Kafka's default) on
// keys of every length: dedup's partitioning check and its re-routing rely
// on it.
func TestKeyPartitionMatchesKafka(t *testing.T) {
	ref := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 5000; i++ {
		key := make([]byte, rng.IntN(40))
		for j := range key {
			key[j] = byte(rng.IntN(256))
		}
		n := 1 + rng.IntN(64)
		want := ref.Partition(&kgo.Record{Key: key}, n)
		if got := KeyPartition(key, n); int(got) != want {
			t.Fatalf("key %x among %d: got %d, Kafka's partitioner %d", key, n, got, want)
		}
	}
}

func BenchmarkKeyPartition(b *testing.B) {
	key := []byte("key-3f2a9c1e-123456")
	b.ReportAllocs()
	for b.Loop() {
		KeyPartition(key, 12)
	}
}
