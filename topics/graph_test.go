package topics

import (
	"maps"
	"math"
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
	want := tp.Kinds("app.replies")
	// The lanes other than normal are the graph's: their names are
	// configured.
	want["p.requests.accepted.high"], want["p.requests.accepted.low"] = schemas.KindRequest, schemas.KindRequest
	if got := g.Kinds(); !maps.Equal(got, want) {
		t.Errorf("graph kinds %v, names' kinds %v", got, want)
	}
	var specNames []string
	for _, s := range g.Specs(Layout{Partitions: 3, MaxMessageBytes: 1 << 20}) {
		specNames = append(specNames, s.Name)
		if s.Partitions != 3 && s.Name != tp.Pressure {
			t.Errorf("%s: %d partitions", s.Name, s.Partitions)
		}
		switch s.Name {
		case tp.Pressure:
			if s.Partitions != 1 || *s.Configs["cleanup.policy"] != "compact,delete" || s.Configs["segment.ms"] == nil {
				t.Errorf("pressure: %d partitions, configs %v: want one compacted partition whose segments roll", s.Partitions, s.Configs)
			}
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
			g.Stages[1].Input, g.Stages[1].Lanes = g.Topics.DedupState, nil
			g.Stages[1].InputKind = schemas.KindStateEntry
		}, "is stage infer's input"},
		{"changelog as a lane", func(g *Graph) {
			g.Stages[1].Lanes = append(slices.Clone(g.Stages[1].Lanes), g.Topics.EmittedIDs)
		}, "is stage infer's input"},
		{"input not a lane", func(g *Graph) { g.Stages[1].Lanes = g.Stages[1].Lanes[:1] }, "is none of its lanes"},
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

// Lanes: the normal lane (the one priority 0 falls in) keeps
// requests.accepted, the others get a topic each; dedup may write every
// lane (the normal one by default), infer reads them highest first, and
// priorities fall in the first lane they reach, the last taking the rest.
func TestGraphLanes(t *testing.T) {
	g := mustGraph(t, GraphOptions{Prefix: "p."})
	var topics []string
	for _, l := range g.Lanes {
		topics = append(topics, l.Topic)
	}
	if want := []string{"p.requests.accepted.high", "p.requests.accepted", "p.requests.accepted.low"}; !slices.Equal(topics, want) {
		t.Errorf("lane topics %v, want %v", topics, want)
	}
	if g.Lanes[g.NormalLane()].Name != "normal" {
		t.Errorf("normal lane %d", g.NormalLane())
	}
	d, _ := g.Stage(Dedup)
	if e, _ := d.Edge(EdgeAccepted); e.Topic() != "p.requests.accepted" || len(e.Topics) != 3 {
		t.Errorf("accepted edge %v: want the normal lane first, then the others", e.Topics)
	}
	in, _ := g.Stage(Infer)
	if !slices.Equal(in.Inputs(), topics) || in.Input != "p.requests.accepted" {
		t.Errorf("infer reads %v (input %s), want %v", in.Inputs(), in.Input, topics)
	}
	for _, tc := range []struct {
		priority int32
		lane     string
	}{{5, "high"}, {1, "high"}, {0, "normal"}, {-1, "low"}, {math.MinInt32, "low"}, {math.MaxInt32, "high"}} {
		if got := g.Lanes[LaneOf(g.Lanes, tc.priority)].Name; got != tc.lane {
			t.Errorf("priority %d in lane %s, want %s", tc.priority, got, tc.lane)
		}
	}
	for _, name := range []string{"p.requests.accepted.high", "p.requests.accepted.anything", "p.pressure"} {
		if !g.Topics.Internal(name) {
			t.Errorf("%s is not internal", name)
		}
	}

	// One lane: infer reads requests.accepted alone, whatever the lane's
	// name and minimum.
	one := mustGraph(t, GraphOptions{Lanes: []Lane{{Name: "all", MinPriority: 7}}})
	if in, _ := one.Stage(Infer); len(in.Lanes) != 0 || !slices.Equal(in.Inputs(), []string{one.Topics.Accepted}) {
		t.Errorf("one lane: infer reads %v", in.Inputs())
	}
	if one.Lanes[0].Topic != one.Topics.Accepted || LaneOf(one.Lanes, -100) != 0 {
		t.Errorf("one lane: %+v", one.Lanes)
	}

	for _, tc := range []struct {
		lanes []Lane
		want  string
	}{
		{[]Lane{}, "0 lanes"},
		{[]Lane{{Name: "a", MinPriority: 1}, {Name: "a", MinPriority: 0}}, "named twice"},
		{[]Lane{{Name: "a", MinPriority: 0}, {Name: "b", MinPriority: 0}}, "is not below"},
		{[]Lane{{Name: "Hi"}}, "lowercase"},
		{[]Lane{{Name: "a.b"}}, "lowercase"},
	} {
		if _, err := NewGraph(GraphOptions{Lanes: tc.lanes}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("lanes %+v: %v, want an error containing %q", tc.lanes, err, tc.want)
		}
	}
}

// The pressure topic: dedup reads and writes it, infer writes it, clients
// read it; every lane is read by infer and written by dedup.
func TestACLsPressureAndLanes(t *testing.T) {
	g := mustGraph(t, GraphOptions{})
	has := func(who string, op kmsg.ACLOperation, topic string) bool {
		for _, a := range g.ACLs(false)[who] {
			if a.Resource == kmsg.ACLResourceTypeTopic && a.Operation == op && a.Name == topic {
				return true
			}
		}
		return false
	}
	p := g.Topics.Pressure
	for _, tc := range []struct {
		who   string
		op    kmsg.ACLOperation
		topic string
		want  bool
	}{
		{Dedup, kmsg.ACLOperationRead, p, true}, {Dedup, kmsg.ACLOperationWrite, p, true},
		{Infer, kmsg.ACLOperationWrite, p, true}, {Infer, kmsg.ACLOperationRead, p, false},
		{Client, kmsg.ACLOperationRead, p, true}, {Client, kmsg.ACLOperationWrite, p, false},
		{Emit, kmsg.ACLOperationRead, p, false},
		// Admission watches the lag after dedup.
		{Dedup, kmsg.ACLOperationRead, g.Topics.Outcomes, true},
	} {
		if got := has(tc.who, tc.op, tc.topic); got != tc.want {
			t.Errorf("%s %v %s: %v, want %v", tc.who, tc.op, tc.topic, got, tc.want)
		}
	}
	for _, l := range g.Lanes {
		if !has(Infer, kmsg.ACLOperationRead, l.Topic) || !has(Dedup, kmsg.ACLOperationWrite, l.Topic) || !has(Dedup, kmsg.ACLOperationRead, l.Topic) {
			t.Errorf("lane %s: infer must read it, dedup write it and read it (its lag)", l.Topic)
		}
	}
	for _, group := range []string{"asyncinfer.infer", "asyncinfer.emit"} {
		if !slices.ContainsFunc(g.ACLs(false)[Dedup], func(a ACL) bool {
			return a.Resource == kmsg.ACLResourceTypeGroup && a.Name == group && a.Operation == kmsg.ACLOperationDescribe
		}) {
			t.Errorf("dedup cannot describe %s: admission watches its lag", group)
		}
	}
}
