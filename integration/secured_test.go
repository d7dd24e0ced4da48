package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// A secured listener of Apache Kafka: the whole pipeline runs over SASL
// SCRAM-SHA-256 (a user the test creates with AlterUserScramCredentials), and
// a wrong PLAIN password gets the error that names the settings to fix, from
// the broker's own SaslAuthenticationFailed.
func TestSecuredListener(t *testing.T) {
	need(t)
	if env.sasl == "" {
		t.Skip("the broker comes from KAFKA_BROKERS: no SASL listener of ours to test")
	}
	tr := &testReport{}
	record(t, tr)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	cl, err := kgo.NewClient(kgo.SeedBrokers(env.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	res, err := kadm.NewClient(cl).AlterUserSCRAMs(ctx, nil, []kadm.UpsertSCRAM{{
		User: "pipeline", Mechanism: kadm.ScramSha256, Iterations: 4096, Password: "pipeline-secret",
	}})
	if err == nil {
		err = res.Error()
	}
	if err != nil {
		t.Fatalf("create SCRAM user: %v", err)
	}

	wrong := newDeploymentOn(t, 2, fmt.Sprintf(`kafka:
  brokers: [%s]
  sasl: {mechanism: PLAIN, username: app, password: not-the-password}
`, env.sasl), "")
	_, errOut, err := wrong.cli(ctx, "topics", "check")
	if err == nil {
		t.Fatal("a wrong password was accepted")
	}
	for _, want := range []string{`authentication failed for user "app" with PLAIN`, "kafka.sasl.password"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("the error does not say %q:\n%s", want, errOut)
		}
	}

	d := newDeploymentOn(t, 2, fmt.Sprintf(`kafka:
  brokers: [%s]
  sasl: {mechanism: SCRAM-SHA-256, username: pipeline, password: pipeline-secret}
`, env.sasl), flakyModel)
	d.create(ctx, t)
	d.startAll(ctx, 0)
	const n = 1000
	d.load(ctx, t, n, 1000)
	c := d.settle(ctx, n)
	checkCounts(t, c, tr)
	tr.Notes = "SASL_PLAINTEXT listener: the pipeline over SCRAM-SHA-256; a wrong PLAIN password named kafka.sasl.password"
}
