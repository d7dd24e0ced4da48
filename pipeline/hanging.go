package pipeline

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Hanging transactions (exactly-once mode).
//
// After an unclean broker stop, Apache Kafka can leave one of a stage's
// transactions open on a partition although its coordinator has ended it,
// or no longer knows it: the marker never reached that partition. Seen
// after a killed broker's restart in about half of the integration
// suite's runs of that fault: on __consumer_offsets, and on the topics a
// stage writes (its first transaction, its coordinator back at Empty).
// Nothing ends it: the broker's timeout aborts only transactions its
// coordinator lists as ongoing. On the partition that holds the group's
// offsets it keeps them unstable, and the consumer, which fetches them
// stable, waits for good: the stage consumes nothing. On an output it
// holds the last stable offset, and the stage that reads it waits for
// good. No error says why anywhere. It is the broker's defect, and ending
// it takes kafka-transactions.sh (WriteTxnMarkers, the cluster's
// ClusterAction permission), which is an operator's to run: the tool
// aborts, and whether that transaction had committed is not known from
// here.
//
// So a stage looks for its own, where it writes (the partition of
// __consumer_offsets that holds its group's offsets, its outputs, its
// changelog and dead letters), every time it looks for departed peers'
// transactions (fence.go), and says so, with the command: once in its log,
// and in its status notices for as long as it lasts.

// hangingAfter is how long a transaction stays open on the partition before
// it counts as hanging: the broker would have aborted a transaction its
// coordinator still lists (its timeout, then its abort scan, every 10 s by
// default).
func (r *Runner) hangingAfter() time.Duration {
	return BrokerTransactionTimeout(r.cfg.txnTimeout) + 10*time.Second
}

// OffsetsPartition is the partition of __consumer_offsets that holds
// group's offsets, out of partitions: Apache Kafka's
// Utils.abs(groupId.hashCode()) % partitions, with Java's String.hashCode
// (over UTF-16 code units).
func OffsetsPartition(group string, partitions int) int32 {
	var h int32
	for _, u := range utf16.Encode([]rune(group)) {
		h = 31*h + int32(u)
	}
	switch {
	case h == math.MinInt32:
		h = 0
	case h < 0:
		h = -h
	}
	return h % int32(partitions)
}

// hangingOn is a transaction left open on a partition whose coordinator
// has ended it: the partition's view and the coordinator's.
type hangingOn struct {
	on  kadm.DescribedProducer
	txn kadm.DescribedTransaction
}

// openLong reports whether p has a transaction open on its partition that
// was last written longer than after before now.
func openLong(p kadm.DescribedProducer, now time.Time, after time.Duration) bool {
	return p.CurrentTxnStartOffset >= 0 && now.Sub(time.UnixMilli(p.LastTimestamp)) >= after
}

// hanging picks, from the open transactions on a partition, those whose
// coordinator has moved past them: a later epoch (with transactions of
// Kafka 4, every end bumps it), or the same epoch ended, and no marker
// being written. Only transactions open longer than after (openLong), and
// of a transactional id with prefix, count.
func hanging(open []kadm.DescribedProducer, txns kadm.DescribedTransactions, prefix string, now time.Time, after time.Duration) []hangingOn {
	byProducer := map[int64]kadm.DescribedTransaction{}
	for _, t := range txns {
		if t.Err == nil && strings.HasPrefix(t.TxnID, prefix) {
			byProducer[t.ProducerID] = t
		}
	}
	var out []hangingOn
	for _, p := range open {
		if !openLong(p, now, after) {
			continue
		}
		t, ok := byProducer[p.ProducerID]
		if !ok {
			continue
		}
		// Still writing its markers (Prepare*) is not ended yet, whatever
		// the epoch (Kafka 4 bumps it as it prepares).
		if strings.HasPrefix(t.State, "Prepare") {
			continue
		}
		if t.ProducerEpoch > p.ProducerEpoch || (t.ProducerEpoch == p.ProducerEpoch && t.State != "Ongoing") {
			out = append(out, hangingOn{p, t})
		}
	}
	return out
}

// say is what an operator reads about h: what hangs, what it does, and the
// command that ends it.
func (h hangingOn) say(brokers, offsets string) string {
	does := "its last stable offset is stuck there, and its readers wait"
	if h.on.Topic == offsets {
		does = "the group's offsets stay unstable and this stage consumes nothing"
	}
	return fmt.Sprintf("Apache Kafka left transaction %s (producer %d, epoch %d) open on %s/%d from offset %d, though its coordinator is past it (%s at epoch %d): "+
		"%s until it ends. Only an operator can end it: "+
		"kafka-transactions.sh --bootstrap-server %s abort --topic %s --partition %d --start-offset %d",
		h.txn.TxnID, h.on.ProducerID, h.on.ProducerEpoch, h.on.Topic, h.on.Partition, h.on.CurrentTxnStartOffset,
		h.txn.State, h.txn.ProducerEpoch, does, brokers, h.on.Topic, h.on.Partition, h.on.CurrentTxnStartOffset)
}

// writes are the topics the stage writes in its transactions.
func (r *Runner) writes() []string {
	var ts []string
	for _, e := range r.spec.Outputs {
		ts = append(ts, e.Topics...)
	}
	if r.changelog != "" {
		ts = append(ts, r.changelog)
	}
	if r.spec.DeadLetters != "" {
		ts = append(ts, r.spec.DeadLetters)
	}
	slices.Sort(ts)
	return slices.Compact(ts)
}

// lookForHanging is findHanging bounded like a fence round.
func (r *Runner) lookForHanging(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, r.fenceEvery())
	defer cancel()
	r.findHanging(ctx, kadm.NewClient(r.client()))
}

// findHanging looks for the stage's transactions hanging where it writes
// and on its group's offsets partition, logs each new one, and keeps them
// as notices. What it cannot read (a principal without Describe on
// __consumer_offsets, or Read on an output) it leaves unsaid.
func (r *Runner) findHanging(ctx context.Context, adm *kadm.Client) {
	set := kadm.TopicsSet{}
	offsets := r.cfg.offsetsTopic
	if r.offsetsPart < 0 {
		// Its partition count is fixed for the cluster's life: listed once.
		if td, err := adm.ListTopics(ctx, offsets); err == nil && td[offsets].Err == nil && len(td[offsets].Partitions) > 0 {
			r.offsetsPart = OffsetsPartition(r.group, len(td[offsets].Partitions))
		} else {
			r.log.Debug("hanging transactions: cannot list the offsets topic", "err", err)
		}
	}
	if r.offsetsPart >= 0 {
		set.Add(offsets, r.offsetsPart)
	}
	// Every partition of what the stage writes in its transactions (kadm
	// lists the partitions of a topic given without any).
	for _, t := range r.writes() {
		if _, ok := set[t]; !ok {
			set[t] = map[int32]struct{}{}
		}
	}
	dp, err := adm.DescribeProducers(ctx, set)
	if err != nil && len(dp) == 0 {
		r.log.Debug("hanging transactions: cannot describe the producers", "err", err)
		return
	}
	now := time.Now()
	var open []kadm.DescribedProducer
	var ids []int64
	for _, p := range dp.SortedProducers() {
		if openLong(p, now, r.hangingAfter()) {
			open = append(open, p)
			ids = append(ids, p.ProducerID)
		}
	}
	var found []hangingOn
	if len(open) > 0 {
		listed, err := adm.ListTransactions(ctx, ids, nil)
		if err != nil && len(listed) == 0 {
			r.log.Debug("hanging transactions: cannot list transactions", "err", err)
			return
		}
		var txnIDs []string
		for id := range listed {
			if strings.HasPrefix(id, r.spec.TransactionalIDPrefix()) {
				txnIDs = append(txnIDs, id)
			}
		}
		if len(txnIDs) > 0 {
			described, err := adm.DescribeTransactions(ctx, txnIDs...)
			if err != nil && len(described) == 0 {
				r.log.Debug("hanging transactions: cannot describe transactions", "err", err)
				return
			}
			found = hanging(open, described, r.spec.TransactionalIDPrefix(), now, r.hangingAfter())
		}
	}
	notices := make([]string, 0, len(found))
	seeds, _ := r.client().OptValue(kgo.SeedBrokers).([]string)
	brokers := strings.Join(seeds, ",")
	for _, h := range found {
		n := h.say(brokers, r.cfg.offsetsTopic)
		notices = append(notices, n)
		key := fmt.Sprintf("%d@%s/%d:%d", h.on.ProducerID, h.on.Topic, h.on.Partition, h.on.CurrentTxnStartOffset)
		if !slices.Contains(r.hangingSaid, key) {
			r.hangingSaid = append(r.hangingSaid, key)
			r.log.Error(n)
		}
	}
	r.m.Hanging.WithLabelValues(r.stage).Set(float64(len(found)))
	r.hangingNotices.Store(&notices)
}
