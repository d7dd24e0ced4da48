package stack

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/asyncinfer/asyncinfer/connectors/sim"
	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
	"github.com/asyncinfer/asyncinfer/schemas"
	"github.com/asyncinfer/asyncinfer/stages/infer"
	"github.com/asyncinfer/asyncinfer/topics"
)

func kfakeACLs(acls []topics.ACL) []kfake.ACL {
	out := make([]kfake.ACL, len(acls))
	for i, a := range acls {
		p := kmsg.ACLResourcePatternTypeLiteral
		if a.Prefixed {
			p = kmsg.ACLResourcePatternTypePrefixed
		}
		out[i] = kfake.ACL{Resource: a.Resource, Name: a.Name, Pattern: p, Operation: a.Operation, Allow: true}
	}
	return out
}

func user(name string) kgo.Opt {
	return kgo.SASL(scram.Auth{User: name, Pass: name + "-secret"}.AsSha256Mechanism())
}

// Every stage runs as its own user holding exactly the ACLs that the graph
// (and so `asyncinfer topics acls`) lists for the delivery mode, on a broker
// that enforces ACLs: every request is answered. With one ACL taken away, or
// in exactly-once mode with only the at-least-once ACLs, the stage fails at
// once with an authorization error that says what to grant.
func TestStagesRunWithTheirACLs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		eos     bool // the mode the stages run in
		aclsEOS bool // the mode the ACLs were printed for
		drop    string
		want    string // in the error; "" when every request is answered
	}{
		{name: "at-least-once", want: ""},
		{name: "at-least-once without infer's group ACL", drop: topics.Infer, want: "authoriz"},
		{name: "exactly-once", eos: true, aclsEOS: true, want: ""},
		{name: "exactly-once with the at-least-once ACLs", eos: true, want: "transactional ids asyncinfer."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := topics.NewGraph(topics.GraphOptions{})
			if err != nil {
				t.Fatal(err)
			}
			acls := g.ACLs(tc.aclsEOS)
			opts := []kfake.Opt{kfake.EnableSASL(), kfake.EnableACLs(), kfake.Superuser("SCRAM-SHA-256", "admin", "admin-secret")}
			for _, p := range []string{topics.Dedup, topics.Infer, topics.Emit, topics.Client} {
				list := acls[p]
				if p == tc.drop {
					list = list[:len(list)-1] // the group ACL is last
				}
				opts = append(opts, kfake.User("SCRAM-SHA-256", p, p+"-secret", kfakeACLs(list)...))
			}
			env := kafkatest.NewSecured(t, 2, opts, []kgo.Opt{user("admin")})
			model, err := sim.New(sim.Config{})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(kafkatest.Ctx(t))
			defer cancel()
			errs := make(chan error, len(g.Stages))
			for _, st := range g.StageNames() {
				set, err := Build(Options{Conn: []kgo.Opt{kgo.SeedBrokers(env.Brokers...), user(st)}, Graph: g,
					ExactlyOnce: tc.eos, InstanceID: "i0",
					Models: []infer.ModelConfig{{Name: "m", Backend: model}}}, env.Codec, []string{st})
				if err != nil {
					t.Fatal(err)
				}
				go func() { errs <- set.Run(ctx) }()
			}
			const n = 20
			var reqs []*schemas.Request
			for i := range n {
				reqs = append(reqs, kafkatest.Request(fmt.Sprintf("r%d", i), "", "m"))
			}
			client := env.Client(t, user(topics.Client))
			for _, r := range reqs {
				v, err := env.Codec.EncodeRequest(env.Topics.Requests, r)
				if err != nil {
					t.Fatal(err)
				}
				if err := client.ProduceSync(ctx, &kgo.Record{Topic: env.Topics.Requests, Key: []byte(r.Key()), Value: v}).FirstErr(); err != nil {
					t.Fatalf("client produces with its ACLs: %v", err)
				}
			}
			if tc.want == "" {
				kafkatest.Eventually(t, "every request answered", func() bool { return len(env.Results(t, env.Topics.Results)) == n })
				return
			}
			select {
			case err := <-errs:
				if err == nil || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tc.want)) {
					t.Fatalf("want an error containing %q, got %v", tc.want, err)
				}
			case <-ctx.Done():
				t.Fatal("neither failed nor was stopped")
			}
		})
	}
}
