package topics

import (
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// ACL is one permission a principal needs.
type ACL struct {
	Resource  kmsg.ACLResourceType
	Name      string
	Prefixed  bool
	Operation kmsg.ACLOperation
}

// String renders the ACL as kafka-acls.sh takes it.
func (a ACL) String(principal string) string {
	res := map[kmsg.ACLResourceType]string{
		kmsg.ACLResourceTypeTopic:           "--topic",
		kmsg.ACLResourceTypeGroup:           "--group",
		kmsg.ACLResourceTypeCluster:         "--cluster",
		kmsg.ACLResourceTypeTransactionalId: "--transactional-id",
	}[a.Resource]
	s := fmt.Sprintf("kafka-acls.sh --add --allow-principal User:%s --operation %s %s", principal, opName(a.Operation), res)
	if a.Resource != kmsg.ACLResourceTypeCluster {
		s += " '" + a.Name + "'"
	}
	if a.Prefixed {
		s += " --resource-pattern-type prefixed"
	}
	return s
}

func opName(o kmsg.ACLOperation) string {
	switch o {
	case kmsg.ACLOperationRead:
		return "Read"
	case kmsg.ACLOperationWrite:
		return "Write"
	case kmsg.ACLOperationDescribe:
		return "Describe"
	case kmsg.ACLOperationCreate:
		return "Create"
	case kmsg.ACLOperationDescribeConfigs:
		return "DescribeConfigs"
	}
	s := strings.ToLower(o.String())
	return strings.ToUpper(s[:1]) + s[1:]
}

// Principals that are not stages.
const (
	Client = "client" // applications: produce requests, read results
	Admin  = "admin"  // topics create / check, lag
)

// Principals lists every principal ACLs returns, stages first.
func (g Graph) Principals() []string {
	return append(g.StageNames(), Client, Admin)
}

// ACLs lists what each principal needs, derived from the graph: a stage
// reads its inputs and its changelog (to restore it), writes its outputs, its
// changelog and the dead letters, reads and writes its side topics, describes the configs of those topics (the
// size limits it checks at start), and reads its group. In exactly-once mode
// a stage also writes and describes its transactional ids (the group's
// prefix: one id per instance). Writing with the idempotent producer needs
// only Write on the topic (Kafka 2.8+, KIP-679). Creating topics at start
// (topics.create) needs the admin's Create in addition.
func (g Graph) ACLs(exactlyOnce bool) map[string][]ACL {
	topic := func(op kmsg.ACLOperation, names ...string) []ACL {
		var out []ACL
		for _, n := range names {
			out = append(out, ACL{Resource: kmsg.ACLResourceTypeTopic, Name: n, Operation: op})
		}
		return out
	}
	out := map[string][]ACL{}
	for _, s := range g.Stages {
		reads := slices.Clone(s.Inputs())
		var writes []string
		for _, e := range s.Outputs {
			for _, t := range e.Topics {
				if !slices.Contains(writes, t) {
					writes = append(writes, t)
				}
			}
		}
		writes = append(writes, g.Topics.DLQ)
		if s.Changelog != nil {
			reads = append(reads, s.Changelog.Topic)
			writes = append(writes, s.Changelog.Topic)
		}
		for _, sd := range s.Sides {
			if sd.Read {
				reads = append(reads, sd.Topic)
			}
			if sd.Write {
				writes = append(writes, sd.Topic)
			}
		}
		// DescribeConfigs: a stage checks at start that its topics take
		// records as large as it is configured to write.
		var all []string
		for _, t := range append(slices.Clone(reads), writes...) {
			if !slices.Contains(all, t) {
				all = append(all, t)
			}
		}
		acls := slices.Concat(topic(kmsg.ACLOperationRead, reads...), topic(kmsg.ACLOperationWrite, writes...),
			topic(kmsg.ACLOperationDescribeConfigs, all...))
		for _, name := range s.Watches {
			if w, ok := g.Stage(name); ok {
				acls = append(acls, topic(kmsg.ACLOperationRead, w.Inputs()...)...)
				acls = append(acls, ACL{Resource: kmsg.ACLResourceTypeGroup, Name: w.Group, Operation: kmsg.ACLOperationDescribe})
			}
		}
		if exactlyOnce {
			for _, op := range []kmsg.ACLOperation{kmsg.ACLOperationWrite, kmsg.ACLOperationDescribe} {
				acls = append(acls, ACL{Resource: kmsg.ACLResourceTypeTransactionalId, Name: s.TransactionalIDPrefix(),
					Prefixed: true, Operation: op})
			}
		}
		// The group ACL is last: a test takes it away.
		out[s.Name] = append(acls, ACL{Resource: kmsg.ACLResourceTypeGroup, Name: s.Group, Operation: kmsg.ACLOperationRead})
	}
	results, _ := g.resultsEdge()
	// Clients read the pressure signal to shed load before producing
	// (client.HonourPressure).
	out[Client] = slices.Concat(topic(kmsg.ACLOperationWrite, g.Topics.Requests), topic(kmsg.ACLOperationRead, results...),
		topic(kmsg.ACLOperationRead, g.Topics.Pressure))
	out[Admin] = []ACL{
		{Resource: kmsg.ACLResourceTypeTopic, Name: g.Prefix, Prefixed: true, Operation: kmsg.ACLOperationCreate},
		{Resource: kmsg.ACLResourceTypeTopic, Name: g.Prefix, Prefixed: true, Operation: kmsg.ACLOperationDescribeConfigs},
		{Resource: kmsg.ACLResourceTypeTopic, Name: g.Prefix, Prefixed: true, Operation: kmsg.ACLOperationDescribe},
		{Resource: kmsg.ACLResourceTypeGroup, Name: g.Prefix, Prefixed: true, Operation: kmsg.ACLOperationDescribe},
	}
	return out
}

// resultsEdge is where clients read answers: the topics of the edge that
// leaves the graph (written by a stage, read by none).
func (g Graph) resultsEdge() ([]string, bool) {
	read := map[string]bool{}
	for _, s := range g.Stages {
		for _, in := range s.Inputs() {
			read[in] = true
		}
	}
	var out []string
	for _, s := range g.Stages {
		for _, e := range s.Outputs {
			for _, t := range e.Topics {
				if !read[t] && !slices.Contains(out, t) {
					out = append(out, t)
				}
			}
		}
	}
	return out, len(out) > 0
}
