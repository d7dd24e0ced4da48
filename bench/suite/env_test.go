package suite

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The report says how many topics, and partitions, the broker held before
// the run. (kfake lists no internal topic, so leaving those out is
// Apache Kafka's side of kadm.ListTopics, not tested here.)
func TestOtherTopics(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "a", "b"), kfake.SeedTopics(2, "c"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	n, parts, err := otherTopics(t.Context(), kadm.NewClient(cl))
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 || parts != 10 {
		t.Errorf("other topics: %d (%d partitions), want 3 (10)", n, parts)
	}
}
