package pipeline

import (
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// The partition of __consumer_offsets is Kafka's: Java's String.hashCode,
// Utils.abs (Integer.MIN_VALUE is 0), modulo the partitions. The hashes are
// Java's own ("polygenelubricants" is the string whose hash is
// Integer.MIN_VALUE); the last two groups are ones whose transactions Apache
// Kafka 4.4 left hanging in the integration suite, on the partitions its
// DescribeProducers named (4 partitions there).
func TestOffsetsPartition(t *testing.T) {
	for _, c := range []struct {
		group string
		n     int
		want  int32
	}{
		{"hello", 50, 99162322 % 50},
		{"polygenelubricants", 50, 0},
		{"", 50, 0},
		{"it73251-16.infer", 4, 1}, // hash -867799381
		{"it72968-4.dedup", 4, 0},  // hash 1698761612
		{"é😀", 7, (31*(31*0xe9+0xd83d) + 0xde00) % 7},
	} {
		if got := OffsetsPartition(c.group, c.n); got != c.want {
			t.Errorf("OffsetsPartition(%q, %d) = %d, want %d", c.group, c.n, got, c.want)
		}
	}
}

// A transaction open on the partition counts as hanging once its
// coordinator has moved past it (a later epoch, or the same one ended) and
// it has been open longer than the broker would keep one; one of another
// stage, one still ongoing at its epoch, or a young one does not.
func TestHangingTransactions(t *testing.T) {
	now := time.UnixMilli(1_000_000_000)
	after := 21 * time.Second
	old, young := now.Add(-time.Minute).UnixMilli(), now.Add(-time.Second).UnixMilli()
	open := func(pid int64, epoch int16, at int64, start int64) kadm.DescribedProducer {
		return kadm.DescribedProducer{Topic: "__consumer_offsets", Partition: 1, ProducerID: pid, ProducerEpoch: epoch,
			LastTimestamp: at, CurrentTxnStartOffset: start}
	}
	txns := kadm.DescribedTransactions{
		"p.infer/infer-0": {TxnID: "p.infer/infer-0", ProducerID: 1, ProducerEpoch: 2, State: "CompleteCommit"},
		"p.infer/infer-1": {TxnID: "p.infer/infer-1", ProducerID: 2, ProducerEpoch: 3, State: "Ongoing"},
		"p.infer/infer-2": {TxnID: "p.infer/infer-2", ProducerID: 3, ProducerEpoch: 5, State: "CompleteAbort"},
		"p.dedup/dedup-0": {TxnID: "p.dedup/dedup-0", ProducerID: 4, ProducerEpoch: 9, State: "CompleteAbort"},
		"p.infer/infer-3": {TxnID: "p.infer/infer-3", ProducerID: 6, ProducerEpoch: 8, State: "PrepareCommit"},
	}
	got := hanging([]kadm.DescribedProducer{
		open(1, 1, old, 379),  // committed at epoch 1 (now 2): hanging
		open(2, 3, old, 10),   // still ongoing at its epoch: the broker's to time out
		open(3, 5, old, 20),   // ended at its epoch: hanging
		open(3, 4, young, 30), // young
		open(4, 2, old, 40),   // another stage's
		open(5, 1, old, 50),   // unknown producer
		open(1, 1, old, -1),   // no open transaction
	}, txns, "p.infer/", now, after)
	var offsets []int64
	for _, h := range got {
		offsets = append(offsets, h.on.CurrentTxnStartOffset)
	}
	if len(offsets) != 2 || offsets[0] != 379 || offsets[1] != 20 {
		t.Fatalf("hanging at offsets %v, want [379 20]", offsets)
	}
	say := got[0].say("b1:9092,b2:9092", "__consumer_offsets")
	for _, want := range []string{"p.infer/infer-0", "CompleteCommit at epoch 2", "this stage consumes nothing",
		"kafka-transactions.sh --bootstrap-server b1:9092,b2:9092 abort --topic __consumer_offsets --partition 1 --start-offset 379"} {
		if !strings.Contains(say, want) {
			t.Errorf("%q does not say %q", say, want)
		}
	}
}
