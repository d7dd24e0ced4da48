package suite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// HopConfig is one hop of the raw chain: a franz-go consume-produce loop
// that forwards each record (key and value, unread) from one topic to the
// next, with what the pipeline's runner does for Kafka and nothing else.
type HopConfig struct {
	Brokers    []string
	From, To   string
	Group      string
	InstanceID string // static membership, as the stages have in the benchmark
	AdminAddr  string // serves /metrics (Go and process collectors) and /readyz; "" none
}

// The pipeline's settings (pipeline.defaultCfg, config.Defaults) the raw
// hops copy, so that the difference measured is the pipeline's own work.
const (
	hopLinger         = 0                      // runner.producer_linger
	hopCommitInterval = 200 * time.Millisecond // the runner commits finished offsets this often
	hopFetchMaxWait   = 250 * time.Millisecond
	hopMaxRecordBytes = 1 << 20 // topics.max_message_bytes: the producer's batch limit
)

// RunHop runs one raw hop until ctx ends: read_committed, a consumer group
// with autocommit off, murmur2 by key (the pipeline's partitioner for keyed
// outputs), linger 0, acks=all with idempotence (franz-go's defaults, the
// pipeline's), the offsets of acknowledged records committed synchronously
// every 200 ms. No decoding, no model, no state. It prints its admin
// address as a stage does ("admin http://host:port/").
func RunHop(ctx context.Context, c HopConfig, log io.Writer) error {
	if len(c.Brokers) == 0 || c.From == "" || c.To == "" || c.Group == "" {
		return errors.New("hop: brokers, from, to and group are required")
	}
	var ready atomic.Bool
	// The runner's counter of records handed to a stage, under the same
	// name: the benchmark divides a process's CPU and allocations by it.
	consumed := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "asyncinfer", Name: "records_consumed_total",
		Help: "Records the hop consumed.", ConstLabels: prometheus.Labels{"stage": "hop"}})
	var mu sync.Mutex
	acked := map[int32]int64{} // partition of From -> next offset to commit
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ConsumerGroup(c.Group),
		kgo.ConsumeTopics(c.From),
		kgo.DisableAutoCommit(),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(hopFetchMaxWait),
		kgo.ProducerLinger(hopLinger),
		kgo.ProducerBatchMaxBytes(hopMaxRecordBytes),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) { ready.Store(true) }),
	}
	if c.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(c.InstanceID))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("hop: %w", err)
	}
	defer cl.Close()

	if c.AdminAddr != "" {
		reg := prometheus.NewRegistry()
		if err := reg.Register(collectors.NewGoCollector()); err != nil {
			return err
		}
		if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
			return err
		}
		if err := reg.Register(consumed); err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
			if !ready.Load() {
				http.Error(w, "not assigned yet", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ready")
		})
		ln, err := net.Listen("tcp", c.AdminAddr)
		if err != nil {
			return fmt.Errorf("hop: admin: %w", err)
		}
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)  //nolint:errcheck // ends with Close below
		defer srv.Close() //nolint:errcheck // shutting down
		fmt.Fprintf(log, "admin http://%s/ (metrics, readyz)\n", ln.Addr())
	}

	// commit commits the acknowledged offsets not committed yet. A
	// partition's offset counts as committed only once the broker said so:
	// clearing them before (a commit cut short at shutdown, or refused
	// during a rebalance) lost them, and the group was left with nothing
	// committed.
	committed := map[int32]int64{}
	pending := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for p, o := range acked {
			if o > committed[p] {
				return true
			}
		}
		return false
	}
	commit := func(ctx context.Context) {
		mu.Lock()
		offs := map[int32]kgo.EpochOffset{}
		for p, o := range acked {
			if o > committed[p] {
				offs[p] = kgo.EpochOffset{Epoch: -1, Offset: o}
			}
		}
		mu.Unlock()
		if len(offs) == 0 {
			return
		}
		cl.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{c.From: offs},
			func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
				if err != nil {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for _, t := range resp.Topics {
					for _, rp := range t.Partitions {
						if o, ok := offs[rp.Partition]; ok && rp.ErrorCode == 0 {
							committed[rp.Partition] = max(committed[rp.Partition], o.Offset)
						}
					}
				}
			})
	}
	commitCtx, stopCommits := context.WithCancel(context.WithoutCancel(ctx))
	commitsDone := make(chan struct{})
	go func() {
		defer close(commitsDone)
		t := time.NewTicker(hopCommitInterval)
		defer t.Stop()
		for {
			select {
			case <-commitCtx.Done():
				return
			case <-t.C:
				commit(commitCtx)
			}
		}
	}()

	var failed atomic.Value
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		fs.EachRecord(func(r *kgo.Record) {
			consumed.Inc()
			p, next := r.Partition, r.Offset+1
			cl.Produce(ctx, &kgo.Record{Topic: c.To, Key: r.Key, Value: r.Value}, func(_ *kgo.Record, err error) {
				if err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
				mu.Lock()
				if next > acked[p] {
					acked[p] = next
				}
				mu.Unlock()
			})
		})
	}
	// Drain: what was consumed is produced and committed before leaving.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_ = cl.Flush(fctx)
	stopCommits()
	<-commitsDone
	// The last commit is tried again while the broker refuses it (a
	// rebalance under way), for up to the drain's 10 s.
	for commit(fctx); pending() && fctx.Err() == nil; commit(fctx) {
		time.Sleep(100 * time.Millisecond)
	}
	if err, _ := failed.Load().(error); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("hop: produce: %w", err)
	}
	return nil
}
