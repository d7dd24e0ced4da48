package suite

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

// env is what every run of an invocation shares: the broker and registry,
// admin and registry clients, the binary the processes run, and a work
// directory for their configuration files.
type env struct {
	opt        Options
	brokers    []string
	registry   string
	broker     *proc // dev-broker, when the benchmark started one
	brokerPID  int   // for the broker's CPU; 0: unknown
	brokerName string
	kopts      []kgo.Opt
	kcl        *kgo.Client
	adm        *kadm.Client
	reg        *sr.Client
	rf         int16
	tag        string // this invocation, in every topic prefix
	seq        int    // deployments so far
	work       string
}

var devBrokerKafkaRE = regexp.MustCompile(`(?m)^kafka\s+(\S+)`)
var devBrokerRegistryRE = regexp.MustCompile(`(?m)^registry\s+(\S+)`)

// startEnv reaches the configured broker, or starts the embedded one (kfake
// and srfake, asyncinfer dev-broker) in a process of its own, so that its
// CPU is measured apart from the stages' and the benchmark's.
func startEnv(ctx context.Context, opt Options) (*env, error) {
	var id [3]byte
	_, _ = rand.Read(id[:])
	e := &env{opt: opt, tag: hex.EncodeToString(id[:]), rf: -1}
	work, err := os.MkdirTemp("", "asyncinfer-bench-")
	if err != nil {
		return nil, err
	}
	e.work = work
	ok := false
	defer func() {
		if !ok {
			e.close()
		}
	}()
	if len(opt.Brokers) == 0 || opt.Registry == "" {
		// dev-broker: the embedded broker, or only its registry beside a
		// real cluster (its broker then idles).
		p, err := startProc("dev-broker", opt.Bin, "dev-broker", "--kafka-addr", "127.0.0.1:0", "--registry-addr", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		e.broker = p
		deadline := time.Now().Add(30 * time.Second)
		for {
			out := p.out.String()
			k, r := devBrokerKafkaRE.FindStringSubmatch(out), devBrokerRegistryRE.FindStringSubmatch(out)
			if k != nil && r != nil {
				if len(opt.Brokers) == 0 {
					e.brokers, e.brokerPID, e.rf = []string{k[1]}, p.pid(), 1
					e.brokerName = "embedded (kfake in asyncinfer dev-broker, a process of its own)"
				}
				e.registry = r[1]
				break
			}
			if err := p.pause(ctx, deadline, 20*time.Millisecond); err != nil {
				return nil, fmt.Errorf("dev-broker: %w", err)
			}
		}
	}
	if len(opt.Brokers) > 0 {
		e.brokers = opt.Brokers
		e.brokerName = "external " + strings.Join(opt.Brokers, ",")
		e.brokerPID = opt.BrokerPID
		if e.brokerPID == 0 {
			e.brokerPID = makeKafkaPID()
		}
		if e.brokerPID > 0 {
			e.brokerName += fmt.Sprintf(" (pid %d)", e.brokerPID)
		}
	}
	if opt.Registry != "" {
		e.registry = opt.Registry
	}
	e.kopts = []kgo.Opt{kgo.SeedBrokers(e.brokers...)}
	e.kcl, err = kgo.NewClient(e.kopts...)
	if err != nil {
		return nil, err
	}
	e.adm = kadm.NewClient(e.kcl)
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := e.adm.ListBrokers(pctx); err != nil {
		return nil, fmt.Errorf("broker %v: %w", e.brokers, err)
	}
	if n, parts, err := otherTopics(pctx, e.adm); err == nil && n > 0 {
		e.brokerName += fmt.Sprintf(", holding %d other topics (%d partitions) at the start", n, parts)
	}
	e.reg, err = sr.NewClient(sr.URLs(e.registry))
	if err != nil {
		return nil, err
	}
	if _, err := e.reg.Subjects(pctx); err != nil {
		return nil, fmt.Errorf("schema registry %s: %w", e.registry, err)
	}
	ok = true
	return e, nil
}

// otherTopics counts the topics (and their partitions) a broker holds
// before the benchmark creates its own, internal ones aside, for the
// report: what else the broker carried is part of where the figures were
// taken. (Measured once: beside 300 idle topics the raw chain drained
// about 7% slower than on an empty broker, within the runs' spread;
// docs/benchmarks.md.)
func otherTopics(ctx context.Context, adm *kadm.Client) (topics, partitions int, err error) {
	tds, err := adm.ListTopics(ctx)
	if err != nil {
		return 0, 0, err
	}
	for _, td := range tds { // ListTopics leaves the internal ones out
		topics++
		partitions += len(td.Partitions)
	}
	return topics, partitions, nil
}

// makeKafkaPID finds the broker `make kafka` started (its pid file, when it
// names a live Kafka), for the broker's CPU.
func makeKafkaPID() int {
	data := os.Getenv("ASYNCINFER_KAFKA_DATA")
	if data == "" {
		cache := os.Getenv("ASYNCINFER_CACHE")
		if cache == "" {
			base, err := os.UserCacheDir()
			if err != nil {
				return 0
			}
			cache = filepath.Join(base, "asyncinfer")
		}
		data = filepath.Join(cache, "kafka-local")
	}
	b, err := os.ReadFile(filepath.Join(data, "kafka.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), "kafka.Kafka") {
		return 0
	}
	return pid
}

func (e *env) close() {
	if e.kcl != nil {
		e.kcl.Close()
	}
	if e.broker != nil {
		_ = e.broker.stop(10 * time.Second)
	}
	if e.work != "" {
		_ = os.RemoveAll(e.work)
	}
}

// deleteTopics removes a run's topics and groups, so that the broker's
// memory (kfake keeps every record) does not grow over an invocation.
func (e *env) deleteTopics(ctx context.Context, names, groups []string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var errs []error
	if len(groups) > 0 {
		if _, err := e.adm.DeleteGroups(ctx, groups...); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := e.adm.DeleteTopics(ctx, names...); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// waitStable waits (up to within) until every group is Stable or Empty:
// not in the middle of a rebalance.
func (e *env) waitStable(ctx context.Context, groups []string, within time.Duration) {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		described, err := e.adm.DescribeGroups(dctx, groups...)
		cancel()
		settled := err == nil
		for _, g := range described {
			if g.Err != nil || (g.State != "Stable" && g.State != "Empty" && g.State != "Dead") {
				settled = false
			}
		}
		if settled {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
