package main

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// A pipeline whose groups committed everything is not settled while a
// transaction writing answers is open: exactly-once, the offsets' marker can
// land before the answers' (after a broker restart, seconds before), and the
// answers of that transaction would be counted lost.
func TestOpenTransactionIsNotSettled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "results"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	kopts := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
	lsos := func() kadm.ListedOffsets {
		t.Helper()
		ends, err := endOffsets(ctx, kopts, "results")
		if err != nil {
			t.Fatal(err)
		}
		return ends
	}
	settled := func() bool {
		t.Helper()
		ok, err := noOpenTransactions(ctx, kopts, lsos())
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !settled() {
		t.Fatal("an empty topic has an open transaction")
	}
	p, err := kgo.NewClient(append(kopts, kgo.TransactionalID("emit-0"), kgo.DefaultProduceTopic("results"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := p.ProduceSync(ctx, &kgo.Record{Partition: 1, Value: []byte("answer")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if settled() {
		t.Fatal("settled with a transaction writing an answer still open")
	}
	if err := p.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !settled() {
		if time.Now().After(deadline) {
			t.Fatal("not settled after the transaction committed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
