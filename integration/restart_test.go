package integration

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// halt takes the broker down mid-stream: stopped cleanly (SIGTERM, the
// broker's controlled shutdown, up to 10 s) or killed (SIGKILL: no shutdown
// at all, its logs recovered at the next start).
func (b *broker) halt(ctx context.Context, kill bool) error {
	if !kill {
		stop := 10 * time.Second
		return b.container.Stop(ctx, &stop)
	}
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	if _, err := cli.ContainerKill(ctx, b.container.GetContainerID(), client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		return fmt.Errorf("kill the broker's container: %w", err)
	}
	// Until the engine saw it die: a start before that is refused.
	for {
		st, err := b.container.State(ctx)
		if err == nil && !st.Running {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the broker's container still runs after SIGKILL: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// resume starts the broker again and waits until it answers. Host
// networking keeps its advertised listener valid across the restart.
func (b *broker) resume(ctx context.Context) error {
	if err := b.container.Start(ctx); err != nil {
		return fmt.Errorf("start the broker again: %w", err)
	}
	return b.describe(ctx)
}

// resumeBound bounds how long after the broker answers again every stage
// commits again: a member whose session the outage ended rejoins as the
// static member it is (its partitions back without a rebalance); an
// exactly-once unit caught by the outage is ended or given up within the
// session timeout (pipeline/eos.go, endTxn); then the rejoin, the restore
// of the state, and the upstream stage's first commit (11-14 s measured;
// 20 s and more before the end of a transaction was bounded).
const resumeBound = 2 * sessionTimeout

// The broker goes away mid-stream, stopped cleanly or killed, in both
// delivery modes, and comes back once every stage process has found it
// gone: the stages ride it out (none exits), and every request is still
// answered, none two ways (nor twice in exactly-once mode). An outage is
// waited out, never dead-lettered.
func TestBrokerRestartMidStream(t *testing.T) {
	need(t)
	if env.broker.container == nil {
		t.Skip("the broker comes from KAFKA_BROKERS: not ours to restart")
	}
	for _, mode := range deliveryModes {
		for _, kill := range []bool{false, true} {
			how := "stopped"
			if kill {
				how = "killed"
			}
			t.Run(how+"/"+mode.name, func(t *testing.T) {
				brokerOutage(t, mode.name, mode.yaml, kill)
			})
		}
	}
}

func brokerOutage(t *testing.T, mode, modeYAML string, kill bool) {
	tr := &testReport{}
	record(t, tr)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	d := newDeployment(t, 4, modeYAML+flakyModel)
	d.create(ctx, t)
	procs := d.startAll(ctx, 0)
	const n = 3000
	loadDone := d.loadAsync(ctx, t, n, 1000)
	d.waitMidStream(ctx, t, n, procs)
	// In exactly-once mode, down while transactions are open.
	d.waitWhileLoading(ctx, t, n, "a stage held work", func() bool {
		for _, p := range procs {
			if s, err := p.status(); err == nil && s.Inflight > 0 {
				return true
			}
		}
		return false
	})
	down := time.Now()
	if err := env.broker.halt(ctx, kill); err != nil {
		t.Fatalf("take the broker down: %v", err)
	}
	// Back once every stage has seen it gone (a connection refused): a
	// broker back before anyone noticed is no outage.
	for _, p := range procs {
		for {
			ms, _, err := p.metrics()
			if err == nil && sum(ms, "asyncinfer_kafka_connect_errors_total") > 0 {
				break
			}
			select {
			case <-p.exited:
				t.Fatalf("%s exited while the broker was down: %v\n%s", p.name, p.err, tail(p.stderr.String(), 4000))
			case <-ctx.Done():
				t.Fatalf("%s never saw the broker gone", p.name)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	noticed := time.Since(down)
	commits := map[string]float64{}
	for st, p := range procs {
		if ms, _, err := p.metrics(); err == nil {
			commits[st] = sum(ms, "asyncinfer_offset_commits_total")
		}
	}
	if err := env.broker.resume(ctx); err != nil {
		t.Fatal(err)
	}
	outage := time.Since(down)
	started := time.Now()
	// The stages are measured from when the broker serves them again: its
	// group and transaction coordinators loaded (they load
	// __consumer_offsets and __transaction_state after a restart: 2 to 18 s
	// here, more on a loaded machine).
	d.waitCoordinators(ctx, t)
	back := time.Now()
	tr.figure("coordinators_loaded_after_start_s", back.Sub(started).Seconds())
	// Every stage commits again (in exactly-once mode: a transaction) soon
	// after the broker answers: the backlog of the outage is there for it.
	resumed := map[string]time.Duration{}
	var checked time.Time
	for len(resumed) < len(procs) {
		for st, p := range procs {
			if _, ok := resumed[st]; ok {
				continue
			}
			if ms, _, err := p.metrics(); err == nil && sum(ms, "asyncinfer_offset_commits_total") > commits[st] {
				resumed[st] = time.Since(back)
			}
		}
		waited := time.Since(back)
		if waited > resumeBound && time.Since(checked) > 5*time.Second {
			// A transaction the broker left hanging is not a stall that
			// passes: look for one.
			checked = time.Now()
			if hs := d.hangingTransactions(ctx, t); len(hs) > 0 {
				d.diagnose(ctx, t, procs)
				// Not ours to fix: the broker's. Said in the report, not
				// hidden in a pass.
				stagesNameHanging(ctx, t, procs, hs)
				tr.Notes = fmt.Sprintf("%s; broker %s: the broker left transactions hanging (in __consumer_offsets, the groups' offsets unstable for good, or on the pipeline's partitions, their last stable offset stuck): %s",
					mode, map[bool]string{false: "stopped", true: "killed"}[kill], strings.Join(hs, "; "))
				t.Skipf("Apache Kafka left transactions hanging after its restart (its defect; the stages cannot consume, and nothing a client does repairs it): %s; stages committing again: %v",
					strings.Join(hs, "; "), resumed)
			}
		}
		if waited > 6*sessionTimeout {
			d.diagnose(ctx, t, procs)
			t.Fatalf("stages committing again after the broker came back: %v of %d after %v", resumed, len(procs), 6*sessionTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for st, d := range resumed {
		tr.figure("commits_again_after_back_s."+st, d.Seconds())
		if d > resumeBound {
			t.Errorf("%s committed again %v after the broker came back, want within %v", st, d, resumeBound)
		}
	}
	t.Logf("committing again after the broker came back: %v", resumed)
	<-loadDone
	loaded := time.Since(back)
	c := d.settle(ctx, n)
	settled := time.Since(back)
	tr.figure("load_done_after_back_s", loaded.Seconds())
	tr.figure("settled_after_back_s", settled.Seconds())
	t.Logf("back: load done after %v, settled after %v", loaded, settled)
	d.checkFault(ctx, t, c, tr, modeYAML != "", 0)
	reasons := d.deadLetterReasons(ctx, t)
	t.Logf("broker down %v (every stage noticed after %v); dead letters by reason: %v", outage, noticed, reasons)
	for r, k := range reasons {
		if !strings.HasPrefix(r, "undecodable@") {
			t.Errorf("%d dead letters %s: an outage must be waited out, not dead-lettered", k, r)
		}
	}
	d.checkProcs(t, tr, rssBound)
	tr.figure("broker_down_s", outage.Seconds())
	how := "stopped (SIGTERM, controlled shutdown)"
	if kill {
		how = "killed (SIGKILL)"
	}
	tr.Notes = fmt.Sprintf("%s; the broker container %s mid-stream (answers flowing, load not done, a stage holding work), started again once every stage process had a connection refused: down %.1f s; dead letters %v for %d malformed records",
		mode, how, outage.Seconds(), reasons, c.Malformed)
	if modeYAML == "" {
		tr.Notes += " (at-least-once may dead-letter a re-delivered malformed record again)"
	}
}

// hangShape finds, in what hangingTransactions says, a transaction left
// open on a partition and what its coordinator says of it.
var hangShape = regexp.MustCompile(`epoch (\d+) open in (\S+/\d+) from offset (\d+).*?says (\w+) at epoch (\d+)`)

// stagesNameHanging checks that the stage whose transaction Apache Kafka
// left hanging, its coordinator past it, says so in its status notices
// (pipeline/hanging.go), with the partition and offset the command that
// ends it needs: on its group's offsets the stage consumes nothing, on an
// output its readers wait, and an operator has only that to go by. A stage
// says it once the transaction is older than the broker would keep one
// (21 s here), at its next look (every 5 s here).
func stagesNameHanging(ctx context.Context, t *testing.T, procs map[string]*proc, hs []string) {
	t.Helper()
	for _, h := range hs {
		m := hangShape.FindStringSubmatch(h)
		if m == nil {
			continue // no coordinator lists it, or a group's offsets pending
		}
		open, _ := strconv.Atoi(m[1])
		past, _ := strconv.Atoi(m[5])
		if strings.HasPrefix(m[4], "Prepare") || past < open || (past == open && m[4] == "Ongoing") {
			continue
		}
		want := fmt.Sprintf("open on %s from offset %s", m[2], m[3])
		start := time.Now()
		for !stageSays(procs, want) {
			if time.Since(start) > 40*time.Second || ctx.Err() != nil {
				t.Errorf("no stage names the hanging transaction in its status notices (%q): %s", want, h)
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if !t.Failed() {
			t.Logf("a stage names it in its status notices (%q), %v after the check began", want, time.Since(start).Round(time.Millisecond))
		}
	}
}

// stageSays reports whether a notice of one of procs contains want.
func stageSays(procs map[string]*proc, want string) bool {
	for _, p := range procs {
		if s, err := p.status(); err == nil {
			for _, n := range s.Notices {
				if strings.Contains(n, want) {
					return true
				}
			}
		}
	}
	return false
}

// waitCoordinators waits until the broker's group coordinator answers for
// every stage group of d, and its transaction coordinator lists
// transactions: what a restarted broker must have loaded before any stage
// can commit.
func (d *deployment) waitCoordinators(ctx context.Context, t *testing.T) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	groups := make([]string, len(stages))
	for i, st := range stages {
		groups[i] = d.prefix + st
	}
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		gs, err := adm.DescribeGroups(rctx, groups...)
		if err == nil {
			err = gs.Error()
		}
		if err == nil {
			_, err = adm.ListTransactions(rctx, nil, nil)
		}
		cancel()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the broker's coordinators never answered: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
