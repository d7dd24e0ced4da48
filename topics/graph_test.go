package topics

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/asyncinfer/asyncinfer/schemas"
)

func mustGraph(t *testing.T, o GraphOptions) Graph {
	t.Helper()
	g, err := NewGraph(o)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// The derived views agree with each other and with the names: every topic
// a stage touches has a kind, a spec and, for changelogs, a co-partition
// pair; nothing else is created.
func TestGraphDerivedViews(t *testing.T) {
	g := mustGraph(t, GraphOptions{Prefix: "p.", ReplyTopics: []string{"app.replies"}, DedupWindow: time.Minute})
	tp := New("p.")
	if got, want := g.Kinds(), tp.Kinds("app.replies"); !maps.Equal(got, want) {
		t.Errorf("graph kinds %v, names' kinds %v", got, want)
	}
	var specNames []string
	for _, s := range g.Specs(Layout{Partitions: 3, MaxMessageBytes: 1 << 20}) {
		specNames = append(specNames, s.Name)
		if s.Partitions != 3 {
			t.Errorf("%s: %d partitions", s.Name, s.Partitions)
		}
		switch s.Name {
		case tp.DedupState, tp.EmittedIDs:
			if *s.Configs["cleanup.policy"] != "compact,delete" {
				t.Errorf("%s: cleanup.policy %s", s.Name, *s.Configs["cleanup.policy"])
			}
		case tp.DLQ:
			if *s.Configs["max.message.bytes"] != "2097152" {
				t.Errorf("dlq max.message.bytes %s", *s.Configs["max.message.bytes"])
			}
		}
	}
	slices.Sort(specNames)
	kinds := slices.Sorted(maps.Keys(g.Kinds()))
	if !slices.Equal(specNames, kinds) {
		t.Errorf("specs %v, kinds %v: every topic with a kind is created, and only those", specNames, kinds)
	}
	pairs := g.CoPartitioned()
	if len(pairs) != 2 || pairs[0].Input != tp.Requests || pairs[0].Changelog != tp.DedupState ||
		pairs[1].Input != tp.Outcomes || pairs[1].Changelog != tp.EmittedIDs {
		t.Errorf("co-partitioned pairs %+v", pairs)
	}
	if d, _ := g.Stage(Dedup); d.Changelog.TTL != time.Minute || d.Group != "p.dedup" {
		t.Errorf("dedup %+v", d)
	}
	if e, _ := g.Stage(Emit); !slices.Contains(e.Outputs[0].Topics, "app.replies") {
		t.Errorf("emit's results edge %v lacks the reply topic", e.Outputs[0].Topics)
	}
}

func TestGraphValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Graph)
		want string
	}{
		{"reply topic internal", func(g *Graph) { g.ReplyTopics = []string{g.Topics.Outcomes} }, "internal topic"},
		{"one topic two kinds", func(g *Graph) {
			g.Stages[1].Outputs = append(g.Stages[1].Outputs, Edge{Name: "x", Topics: []string{g.Topics.Requests}, Kind: schemas.KindResult})
		}, "carries request messages and result messages"},
		{"changelog as an input", func(g *Graph) {
			g.Stages[1].Input = g.Topics.DedupState
			g.Stages[1].InputKind = schemas.KindStateEntry
		}, "is stage infer's input"},
		{"stage twice", func(g *Graph) { g.Stages = append(g.Stages, g.Stages[0]) }, "declared twice"},
		{"changelog without ttl", func(g *Graph) { c := *g.Stages[0].Changelog; c.TTL = 0; g.Stages[0].Changelog = &c }, "positive TTL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := mustGraph(t, GraphOptions{})
			g.Stages = slices.Clone(g.Stages)
			tc.mod(&g)
			err := g.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// Exactly-once mode needs the transactional ids of each stage (Write and
// Describe, prefixed by the group): without them every stage stops with
// TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
func TestACLsPerMode(t *testing.T) {
	g := mustGraph(t, GraphOptions{})
	for _, eos := range []bool{false, true} {
		acls := g.ACLs(eos)
		for _, st := range g.Stages {
			var txn []ACL
			for _, a := range acls[st.Name] {
				if a.Resource == kmsg.ACLResourceTypeTransactionalId {
					txn = append(txn, a)
				}
			}
			if !eos && len(txn) > 0 {
				t.Errorf("%s: transactional id ACLs in at-least-once mode: %v", st.Name, txn)
			}
			if eos && (len(txn) != 2 || txn[0].Name != st.Group+"/" || !txn[0].Prefixed) {
				t.Errorf("%s: exactly-once needs Write and Describe on the prefix %s/, got %+v", st.Name, st.Group, txn)
			}
			if last := acls[st.Name][len(acls[st.Name])-1]; last.Resource != kmsg.ACLResourceTypeGroup {
				t.Errorf("%s: the group ACL must be last (a test removes it), got %+v", st.Name, last)
			}
		}
	}
	if s := g.ACLs(true)[Dedup][len(g.ACLs(true)[Dedup])-2].String("dedup"); !strings.Contains(s, "--transactional-id 'asyncinfer.dedup/' --resource-pattern-type prefixed") {
		t.Errorf("rendered %q", s)
	}
}
