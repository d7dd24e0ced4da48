package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The broker restarts mid-stream (the container stopped and started again:
// host networking keeps its advertised listener valid): the stages ride it
// out, and every request is still answered, none two ways.
func TestBrokerRestartMidStream(t *testing.T) {
	need(t)
	if env.broker.container == nil {
		t.Skip("the broker comes from KAFKA_BROKERS: not ours to restart")
	}
	tr := &testReport{}
	record(t, tr)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	d := newDeployment(t, 4, flakyModel)
	d.create(ctx, t)
	procs := d.startAll(ctx, 0)
	const n = 3000
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		d.load(ctx, t, n, 1000)
	}()
	d.waitMidStream(ctx, t, n, procs)
	stop := 10 * time.Second
	if err := env.broker.container.Stop(ctx, &stop); err != nil {
		t.Fatalf("stop the broker: %v", err)
	}
	time.Sleep(2 * time.Second)
	if err := env.broker.container.Start(ctx); err != nil {
		t.Fatalf("start the broker again: %v", err)
	}
	if err := env.broker.describe(ctx); err != nil {
		t.Fatal(err)
	}
	<-loadDone
	c := d.settle(ctx, n)
	checkCounts(t, c, tr)
	reasons := d.deadLetterReasons(ctx, t)
	t.Logf("dead letters by reason: %v", reasons)
	for r, k := range reasons {
		if !strings.HasPrefix(r, "undecodable@") {
			t.Errorf("%d dead letters %s: an outage must be waited out, not dead-lettered", k, r)
		}
	}
	tr.Notes = fmt.Sprintf("the broker container stopped mid-stream (answers flowing, load not done), started again 2 s later; dead letters %v (malformed %d: at-least-once may dead-letter a re-delivered malformed record again)", reasons, c.Malformed)
}
