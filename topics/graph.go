package topics

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/asyncinfer/asyncinfer/schemas"
)

// The stages, in pipeline order.
const (
	Dedup = "dedup"
	Infer = "infer"
	Emit  = "emit"
)

// Edge names: what a stage writes, by role. A stage emits to an edge by
// name; the graph says which topic (or topics) that is.
const (
	EdgeAccepted = "accepted" // dedup ▸ infer: requests to serve, byte for byte
	EdgeReroute  = "reroute"  // dedup ▸ dedup: a request on the wrong partition for its key
	EdgeOutcomes = "outcomes" // every stage's terminal answers ▸ emit
	EdgeResults  = "results"  // emit ▸ the results topic or an allowed reply topic
)

// Partitioning is how records of an edge find their partition.
type Partitioning int

const (
	// ByKey is Kafka's default partitioner, murmur2 of the key, so that
	// clients in any language agree on where a key lives.
	ByKey Partitioning = iota
	// AsInput is the partition of the input record the output answers: a
	// changelog is co-partitioned with its stage's input by construction.
	AsInput
)

// Edge is one kind of output of a stage.
type Edge struct {
	Name string
	// Topics the edge may write: the first is where it writes unless the
	// stage names another of them (emit's reply topics).
	Topics       []string
	Kind         schemas.Kind
	Partitioning Partitioning
}

// Topic is the edge's default topic.
func (e Edge) Topic() string { return e.Topics[0] }

// Changelog is a stage's persisted state: keyed entries with a time to live
// and a bound on keys per partition, written to a compacted topic with the
// partition of the input record that changed them, and restored from the
// partition of the same number when an input partition is assigned.
type Changelog struct {
	Topic   string
	TTL     time.Duration
	MaxKeys int
	// MaxBytes bounds the memory of a partition's keys (their key and
	// request id, and a fixed overhead each): the oldest go first past it,
	// as past MaxKeys. A key is a client's string, of any length up to the
	// message size limit.
	MaxBytes int64
}

// Side is a topic a stage's processes write or read with a client of their
// own, outside the group's consume-produce flow (the pressure signal):
// nothing of it is committed with the stage's work, in either delivery mode.
type Side struct {
	Topic       string
	Kind        schemas.Kind
	Write, Read bool
}

// Stage is one processor of the graph: its consumer group, what it reads,
// what it writes, what it keeps.
type Stage struct {
	Name      string
	Group     string
	Input     string
	InputKind schemas.Kind
	// Lanes are the stage's input topics in priority order, highest first,
	// when it reads one topic per priority lane (infer); Input is among
	// them, and all carry InputKind. Empty: Input alone.
	Lanes     []string
	Outputs   []Edge
	Changelog *Changelog // nil: the stage keeps no state
	// DeadLetters is where the stage writes what it cannot answer otherwise
	// (undecodable input), and operators' copies of FAILED answers.
	DeadLetters string
	Sides       []Side
	// Watches are the stages whose lag the stage's processes measure (on
	// the partition numbers they own): dedup's admission watches the stages
	// after it. They need to describe those groups and read their inputs
	// (a record's timestamp is its age).
	Watches []string
}

// Inputs are the topics the stage's group consumes: its lanes, highest
// first, or its Input alone.
func (s Stage) Inputs() []string {
	if len(s.Lanes) > 0 {
		return s.Lanes
	}
	return []string{s.Input}
}

// Edge returns the stage's output edge of that name.
func (s Stage) Edge(name string) (Edge, bool) {
	for _, e := range s.Outputs {
		if e.Name == name {
			return e, true
		}
	}
	return Edge{}, false
}

// TransactionalIDPrefix is what every transactional id of the stage begins
// with (exactly-once mode): the group and a slash, then the instance id.
func (s Stage) TransactionalIDPrefix() string { return s.Group + "/" }

// TransactionalID is the transactional id of one instance of the stage: stable
// across restarts, so a restarted instance fences the one it replaces.
func (s Stage) TransactionalID(instanceID string) string {
	return s.TransactionalIDPrefix() + instanceID
}

// Graph is the pipeline declared once: its topics, and for each stage its
// input, its outputs and its state. Topic specs, codec kinds, the pairs that
// must be co-partitioned, the ACLs of each principal and the wiring of a
// process are all derived from it, so they cannot drift apart.
type Graph struct {
	Prefix      string
	Topics      Topics
	ReplyTopics []string
	// Lanes are the priority lanes, from the highest, each with its topic.
	Lanes  []Lane
	Stages []Stage // in pipeline order
}

// NormalLane is the index of the lane that takes priority 0: its topic is
// requests.accepted.
func (g Graph) NormalLane() int { return LaneOf(g.Lanes, 0) }

// GraphOptions are the deployment's choices the graph depends on.
type GraphOptions struct {
	Prefix      string   // "" for DefaultPrefix
	ReplyTopics []string // besides Results, topics emit may write to
	// How long dedup remembers an idempotency key and emit an emitted
	// request id, and how many keys each keeps per partition (0: defaults,
	// 10 minutes and 1,000,000).
	DedupWindow, EmitWindow time.Duration
	MaxKeys                 int
	// MaxStateBytes bounds the bytes of each partition's keys (0:
	// DefaultMaxStateBytes).
	MaxStateBytes int64
	// Lanes are the priority lanes from the highest (names and minimum
	// priorities); nil: DefaultLanes.
	Lanes []Lane
}

// Default state bounds.
const (
	DefaultWindow  = 10 * time.Minute
	DefaultMaxKeys = 1_000_000
	// DefaultMaxStateBytes is about a million keys of 100 bytes: the bound
	// that holds when clients send long keys.
	DefaultMaxStateBytes = 256 << 20
)

// NewGraph declares the pipeline: dedup ▸ infer ▸ emit.
func NewGraph(o GraphOptions) (Graph, error) {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.DedupWindow <= 0 {
		o.DedupWindow = DefaultWindow
	}
	if o.EmitWindow <= 0 {
		o.EmitWindow = DefaultWindow
	}
	if o.MaxKeys <= 0 {
		o.MaxKeys = DefaultMaxKeys
	}
	if o.MaxStateBytes <= 0 {
		o.MaxStateBytes = DefaultMaxStateBytes
	}
	if o.Lanes == nil {
		o.Lanes = DefaultLanes
	}
	if err := ValidateLanes(o.Lanes); err != nil {
		return Graph{}, fmt.Errorf("topics: graph: %w", err)
	}
	t := New(o.Prefix)
	lanes := slices.Clone(o.Lanes)
	normal := LaneOf(lanes, 0)
	laneTopics := make([]string, len(lanes))
	for i := range lanes {
		lanes[i].Topic = t.LaneTopic(lanes[i].Name, i == normal)
		laneTopics[i] = lanes[i].Topic
	}
	// The accepted edge writes the normal lane unless told another: the
	// edge's first topic.
	accepted := append([]string{t.Accepted}, slices.Delete(slices.Clone(laneTopics), normal, normal+1)...)
	var inferLanes []string
	if len(lanes) > 1 {
		inferLanes = laneTopics
	}
	pressure := func(write, read bool) []Side {
		return []Side{{Topic: t.Pressure, Kind: schemas.KindPressure, Write: write, Read: read}}
	}
	outcomes := Edge{Name: EdgeOutcomes, Topics: []string{t.Outcomes}, Kind: schemas.KindResult}
	g := Graph{
		Prefix:      o.Prefix,
		Topics:      t,
		ReplyTopics: slices.Clone(o.ReplyTopics),
		Lanes:       lanes,
		Stages: []Stage{
			{
				Name: Dedup, Group: o.Prefix + Dedup, Input: t.Requests, InputKind: schemas.KindRequest,
				Outputs: []Edge{
					{Name: EdgeAccepted, Topics: accepted, Kind: schemas.KindRequest},
					{Name: EdgeReroute, Topics: []string{t.Requests}, Kind: schemas.KindRequest},
					outcomes,
				},
				Changelog: &Changelog{Topic: t.DedupState, TTL: o.DedupWindow, MaxKeys: o.MaxKeys, MaxBytes: o.MaxStateBytes},
				// Admission reads the infer processes' serving records and
				// publishes its verdict, and watches the lag after it.
				Sides:   pressure(true, true),
				Watches: []string{Infer, Emit},
			},
			{
				Name: Infer, Group: o.Prefix + Infer, Input: t.Accepted, InputKind: schemas.KindRequest,
				Lanes:   inferLanes,
				Outputs: []Edge{outcomes},
				Sides:   pressure(true, false),
			},
			{
				Name: Emit, Group: o.Prefix + Emit, Input: t.Outcomes, InputKind: schemas.KindResult,
				Outputs: []Edge{
					{Name: EdgeResults, Topics: append([]string{t.Results}, o.ReplyTopics...), Kind: schemas.KindResult},
				},
				Changelog: &Changelog{Topic: t.EmittedIDs, TTL: o.EmitWindow, MaxKeys: o.MaxKeys, MaxBytes: o.MaxStateBytes},
			},
		},
	}
	for i := range g.Stages {
		g.Stages[i].DeadLetters = t.DLQ
	}
	if err := g.Validate(); err != nil {
		return Graph{}, err
	}
	return g, nil
}

// Validate checks that the graph is consistent: stage names and groups are
// unique, every topic carries one kind of message, a changelog belongs to
// one stage and is nobody's input or output, and a reply topic is no internal
// topic.
func (g Graph) Validate() error {
	var errs []error
	kinds := map[string]schemas.Kind{}
	bind := func(topic string, k schemas.Kind, where string) {
		if topic == "" {
			errs = append(errs, fmt.Errorf("%s: empty topic name", where))
			return
		}
		if was, ok := kinds[topic]; ok && was != k {
			errs = append(errs, fmt.Errorf("%s: topic %s carries %s messages and %s messages", where, topic, was, k))
		}
		kinds[topic] = k
	}
	names, groups := map[string]bool{}, map[string]bool{}
	changelogs := map[string]string{}
	for _, s := range g.Stages {
		if names[s.Name] || groups[s.Group] {
			errs = append(errs, fmt.Errorf("stage %s: name or group %s declared twice", s.Name, s.Group))
		}
		names[s.Name], groups[s.Group] = true, true
		bind(s.Input, s.InputKind, "stage "+s.Name+" input")
		if len(s.Lanes) > 0 && !slices.Contains(s.Lanes, s.Input) {
			errs = append(errs, fmt.Errorf("stage %s: input %s is none of its lanes %v", s.Name, s.Input, s.Lanes))
		}
		for _, l := range s.Lanes {
			bind(l, s.InputKind, "stage "+s.Name+" lane")
		}
		for _, sd := range s.Sides {
			bind(sd.Topic, sd.Kind, "stage "+s.Name+" side topic")
		}
		edges := map[string]bool{}
		for _, e := range s.Outputs {
			if edges[e.Name] || len(e.Topics) == 0 {
				errs = append(errs, fmt.Errorf("stage %s: edge %q declared twice or without a topic", s.Name, e.Name))
				continue
			}
			edges[e.Name] = true
			for _, t := range e.Topics {
				bind(t, e.Kind, "stage "+s.Name+" edge "+e.Name)
			}
		}
		if c := s.Changelog; c != nil {
			if other, ok := changelogs[c.Topic]; ok {
				errs = append(errs, fmt.Errorf("stage %s: changelog %s is stage %s's too", s.Name, c.Topic, other))
			}
			changelogs[c.Topic] = s.Name
			bind(c.Topic, schemas.KindStateEntry, "stage "+s.Name+" changelog")
			if c.TTL <= 0 || c.MaxKeys <= 0 {
				errs = append(errs, fmt.Errorf("stage %s: changelog %s needs a positive TTL and key bound", s.Name, c.Topic))
			}
		}
	}
	for topic, stage := range changelogs {
		for _, s := range g.Stages {
			if slices.Contains(s.Inputs(), topic) {
				errs = append(errs, fmt.Errorf("changelog %s of stage %s is stage %s's input", topic, stage, s.Name))
			}
			for _, e := range s.Outputs {
				if slices.Contains(e.Topics, topic) {
					errs = append(errs, fmt.Errorf("changelog %s of stage %s is an output of stage %s", topic, stage, s.Name))
				}
			}
		}
	}
	for _, r := range g.ReplyTopics {
		if g.Topics.Internal(r) {
			errs = append(errs, fmt.Errorf("reply topic %s is an internal topic of the pipeline", r))
		}
	}
	bind(g.Topics.DLQ, schemas.KindDeadLetter, "dead letters")
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("topics: graph: %w", err)
	}
	return nil
}

// Stage returns the stage of that name.
func (g Graph) Stage(name string) (Stage, bool) {
	for _, s := range g.Stages {
		if s.Name == name {
			return s, true
		}
	}
	return Stage{}, false
}

// StageNames lists the stages in pipeline order.
func (g Graph) StageNames() []string {
	out := make([]string, len(g.Stages))
	for i, s := range g.Stages {
		out[i] = s.Name
	}
	return out
}

// Groups lists the stages' consumer groups in pipeline order.
func (g Graph) Groups() []string {
	out := make([]string, len(g.Stages))
	for i, s := range g.Stages {
		out[i] = s.Group
	}
	return out
}

// Kinds binds every topic of the graph (and the dead letters) to the kind of
// message it carries, as a codec takes it.
func (g Graph) Kinds() map[string]schemas.Kind {
	m := map[string]schemas.Kind{g.Topics.DLQ: schemas.KindDeadLetter}
	for _, s := range g.Stages {
		for _, in := range s.Inputs() {
			m[in] = s.InputKind
		}
		for _, sd := range s.Sides {
			m[sd.Topic] = sd.Kind
		}
		for _, e := range s.Outputs {
			for _, t := range e.Topics {
				m[t] = e.Kind
			}
		}
		if s.Changelog != nil {
			m[s.Changelog.Topic] = schemas.KindStateEntry
		}
	}
	return m
}

// Role is what a topic is for, which decides how it is created.
type Role int

const (
	RoleData       Role = iota // requests, results: retention, the data size limit
	RoleChangelog              // a stage's state: compact,delete
	RoleDeadLetter             // dlq: a larger size limit
	RoleSignal                 // pressure: compact,delete, one partition, a short retention
)

// TopicRole is one topic of the graph with its role.
type TopicRole struct {
	Name string
	Role Role
}

// TopicRoles lists every topic the graph reads or writes, once, in a stable
// order: data topics in pipeline order, then the changelogs, then the
// dead letters, then the side topics. Nothing is listed that no stage uses.
func (g Graph) TopicRoles() []TopicRole {
	var out []TopicRole
	seen := map[string]bool{}
	add := func(name string, r Role) {
		if !seen[name] {
			seen[name] = true
			out = append(out, TopicRole{name, r})
		}
	}
	for _, s := range g.Stages {
		for _, in := range s.Inputs() {
			add(in, RoleData)
		}
		for _, e := range s.Outputs {
			for _, t := range e.Topics {
				add(t, RoleData)
			}
		}
	}
	for _, s := range g.Stages {
		if s.Changelog != nil {
			add(s.Changelog.Topic, RoleChangelog)
		}
	}
	add(g.Topics.DLQ, RoleDeadLetter)
	for _, s := range g.Stages {
		for _, sd := range s.Sides {
			add(sd.Topic, RoleSignal)
		}
	}
	return out
}

// CoPartition is a pair of topics that must have the same partition count.
type CoPartition struct {
	Input, Changelog string
	Why              string
}

// CoPartitioned lists each stateful stage's input with its changelog: the
// stage restores partition p's state from changelog partition p.
func (g Graph) CoPartitioned() []CoPartition {
	var out []CoPartition
	for _, s := range g.Stages {
		if s.Changelog != nil {
			out = append(out, CoPartition{s.Input, s.Changelog.Topic,
				s.Name + " restores partition p's state from changelog partition p"})
		}
	}
	return out
}
