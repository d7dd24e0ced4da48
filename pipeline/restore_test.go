package pipeline_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
	"github.com/asyncinfer/asyncinfer/pipeline"
)

// A changelog written by transactions ends in a marker, and an aborted
// transaction leaves data no read_committed reader receives: the restore
// still reaches the end (no idle timeout involved) and hands over only the
// committed records.
func TestReadPartitionEndsAfterMarkersAndAborts(t *testing.T) {
	e := kafkatest.New(t, 1)
	topic := e.Topics.DedupState
	n := 0
	write := func(commit kgo.TransactionEndTry, vals ...string) {
		t.Helper()
		// One producer a transaction (see the test below).
		n++
		txn := e.Client(t, kgo.TransactionalID(fmt.Sprintf("restore-test-%d", n)))
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, v := range vals {
			if err := txn.ProduceSync(kafkatest.Ctx(t), &kgo.Record{Topic: topic, Key: []byte(v), Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := txn.EndTransaction(kafkatest.Ctx(t), commit); err != nil {
			t.Fatal(err)
		}
	}
	write(kgo.TryCommit, "a", "b")
	write(kgo.TryAbort, "x", "y", "z")
	write(kgo.TryCommit, "c")
	write(kgo.TryAbort, "w") // the log ends in an abort marker

	var got []string
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := pipeline.ReadPartition(ctx, []kgo.Opt{kgo.SeedBrokers(e.Brokers...)}, topic, 0, func(r *kgo.Record) {
		got = append(got, string(r.Value))
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0] != "a" || got[1] != "b" || got[2] != "c" {
		t.Errorf("restored %q, want [a b c]", got)
	}
}

// A transaction still open on the changelog when the restore starts (after
// a broker restart: committed, its markers not written yet) holds the
// restore back until it ends, so that what it commits is restored: ending at
// the last stable offset of that moment would leave it out, while the
// group's offsets, committed with it, count its inputs done.
func TestReadPartitionWaitsForAnOpenTransaction(t *testing.T) {
	e := kafkatest.New(t, 1)
	topic := e.Topics.DedupState
	// One producer a transaction: kfake answered one producer's second
	// transaction OUT_OF_ORDER_SEQUENCE_NUMBER now and then, right after
	// its first committed.
	var txn *kgo.Client
	for _, v := range []string{"a", "b"} {
		txn = e.Client(t, kgo.TransactionalID("restore-open-"+v))
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := txn.ProduceSync(kafkatest.Ctx(t), &kgo.Record{Topic: topic, Key: []byte(v), Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if v == "a" {
			if err := txn.EndTransaction(kafkatest.Ctx(t), kgo.TryCommit); err != nil {
				t.Fatal(err)
			}
		}
	}
	// "b" is in a transaction not ended yet.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var got []string
	done := make(chan error, 1)
	go func() {
		done <- pipeline.ReadPartition(ctx, []kgo.Opt{kgo.SeedBrokers(e.Brokers...)}, topic, 0, func(r *kgo.Record) {
			got = append(got, string(r.Value))
		})
	}()
	select {
	case err := <-done:
		t.Fatalf("the restore ended (err %v, restored %q) with a transaction open on the partition", err, got)
	case <-time.After(300 * time.Millisecond):
	}
	if err := txn.EndTransaction(kafkatest.Ctx(t), kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Errorf("restored %q, want [a b]", got)
		logPartition(t, e, topic) // seen once under heavy load, cause unknown
	}
}

// logPartition logs every record of topic's partition 0, aborted ones and
// markers included, with its producer, and the partition's offsets.
func logPartition(t *testing.T, e *kafkatest.Env, topic string) {
	t.Helper()
	cl := e.Client(t, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()), kgo.KeepControlRecords())
	ctx, cancel := context.WithTimeout(kafkatest.Ctx(t), 2*time.Second)
	defer cancel()
	cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
		t.Logf("offset %d: producer %d epoch %d control %v value %q", r.Offset, r.ProducerID, r.ProducerEpoch, r.Attrs.IsControl(), r.Value)
	})
	ends, _ := e.Admin.ListEndOffsets(kafkatest.Ctx(t), topic)
	starts, _ := e.Admin.ListStartOffsets(kafkatest.Ctx(t), topic)
	t.Logf("start %+v, end %+v", starts, ends)
}
