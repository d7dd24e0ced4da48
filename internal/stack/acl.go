package stack

import (
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// ACL is one permission a stage's principal needs.
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
	return strings.Title(strings.ToLower(o.String())) //nolint:staticcheck // ASCII names
}

// Principals that are not stages.
const (
	Client = "client" // applications: produce requests, read results
	Admin  = "admin"  // topics create / check, lag
)

// ACLs lists what each principal needs: the stages (dedup, infer, emit), a
// client, and the admin tools. Writing with the idempotent producer needs
// only Write on the topic (Kafka 2.8+, KIP-679). Creating topics at start
// (topics.create) needs Create on the prefix in addition.
func ACLs(prefix string, replyTopics []string) map[string][]ACL {
	o := Options{Prefix: prefix}
	t := o.Topics()
	topic := func(op kmsg.ACLOperation, names ...string) []ACL {
		var out []ACL
		for _, n := range names {
			out = append(out, ACL{Resource: kmsg.ACLResourceTypeTopic, Name: n, Operation: op})
		}
		return out
	}
	group := func(stage string) ACL {
		return ACL{Resource: kmsg.ACLResourceTypeGroup, Name: Group(prefix, stage), Operation: kmsg.ACLOperationRead}
	}
	cat := func(parts ...[]ACL) []ACL { return slices.Concat(parts...) }
	return map[string][]ACL{
		Dedup: cat(topic(kmsg.ACLOperationRead, t.Requests, t.DedupState),
			topic(kmsg.ACLOperationWrite, t.Accepted, t.Outcomes, t.DLQ, t.DedupState), []ACL{group(Dedup)}),
		Infer: cat(topic(kmsg.ACLOperationRead, t.Accepted),
			topic(kmsg.ACLOperationWrite, t.Outcomes, t.DLQ), []ACL{group(Infer)}),
		Emit: cat(topic(kmsg.ACLOperationRead, t.Outcomes, t.EmittedIDs),
			topic(kmsg.ACLOperationWrite, append([]string{t.Results, t.DLQ, t.EmittedIDs}, replyTopics...)...), []ACL{group(Emit)}),
		Client: cat(topic(kmsg.ACLOperationWrite, t.Requests), topic(kmsg.ACLOperationRead, append([]string{t.Results}, replyTopics...)...)),
		Admin: {
			{Resource: kmsg.ACLResourceTypeTopic, Name: o.prefix(), Prefixed: true, Operation: kmsg.ACLOperationCreate},
			{Resource: kmsg.ACLResourceTypeTopic, Name: o.prefix(), Prefixed: true, Operation: kmsg.ACLOperationDescribeConfigs},
			{Resource: kmsg.ACLResourceTypeTopic, Name: o.prefix(), Prefixed: true, Operation: kmsg.ACLOperationDescribe},
			{Resource: kmsg.ACLResourceTypeGroup, Name: o.prefix(), Prefixed: true, Operation: kmsg.ACLOperationDescribe},
		},
	}
}
