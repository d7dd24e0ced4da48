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
)

func kfakeACLs(acls []ACL) []kfake.ACL {
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

// Every stage runs as its own user holding exactly the ACLs that ACLs (and so
// `asyncinfer topics acls`) lists, on a broker that enforces ACLs: every
// request is answered. With one ACL taken away, the stage fails with an
// authorization error instead of answering.
func TestStagesRunWithTheirACLs(t *testing.T) {
	for _, drop := range []string{"", Infer} {
		name := "all ACLs"
		if drop != "" {
			name = "without " + drop + "'s group ACL"
		}
		t.Run(name, func(t *testing.T) {
			acls := ACLs("", nil)
			opts := []kfake.Opt{kfake.EnableSASL(), kfake.EnableACLs(), kfake.Superuser("SCRAM-SHA-256", "admin", "admin-secret")}
			for _, p := range []string{Dedup, Infer, Emit, Client} {
				list := acls[p]
				if p == drop {
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
			errs := make(chan error, len(All))
			for _, st := range All {
				set, err := Build(Options{Conn: []kgo.Opt{kgo.SeedBrokers(env.Brokers...), user(st)},
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
			client := env.Client(t, user(Client))
			for _, r := range reqs {
				v, err := env.Codec.EncodeRequest(env.Topics.Requests, r)
				if err != nil {
					t.Fatal(err)
				}
				if err := client.ProduceSync(ctx, &kgo.Record{Topic: env.Topics.Requests, Key: []byte(r.Key()), Value: v}).FirstErr(); err != nil {
					t.Fatalf("client produces with its ACLs: %v", err)
				}
			}
			if drop == "" {
				kafkatest.Eventually(t, "every request answered", func() bool { return len(env.Results(t, env.Topics.Results)) == n })
				return
			}
			select {
			case err := <-errs:
				if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authoriz") {
					t.Fatalf("want an authorization error from %s, got %v", drop, err)
				}
			case <-ctx.Done():
				t.Fatalf("%s without its group ACL neither failed nor was stopped", drop)
			}
		})
	}
}
