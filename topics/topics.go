// Package topics names the topics of one asyncinfer deployment and the kind
// of message each carries. It is small on purpose: applications that only
// produce requests and read results (package client) import it without the
// pipeline's runtime.
package topics

import (
	"strings"

	"github.com/asyncinfer/asyncinfer/schemas"
)

// DefaultPrefix is prepended to every topic name.
const DefaultPrefix = "asyncinfer."

// Topics names the topics of one deployment.
type Topics struct {
	Requests   string // clients produce here, keyed by idempotency key
	Accepted   string // dedup ▸ batch/infer
	Outcomes   string // every stage's terminal answers ▸ emit, keyed by request id
	Results    string // emit's default reply topic
	DLQ        string // dead letters
	DedupState string // dedup's changelog, co-partitioned with Requests
	EmittedIDs string // emit's changelog, co-partitioned with Outcomes
	// Pressure is the pressure signal: per model and priority lane, the
	// admission verdict clients read and the serving state of each infer
	// process (compacted; schemas.Pressure).
	Pressure string
}

// New names the topics with a prefix ("" for DefaultPrefix).
func New(prefix string) Topics {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Topics{
		Requests:   prefix + "requests",
		Accepted:   prefix + "requests.accepted",
		Outcomes:   prefix + "outcomes",
		Results:    prefix + "results",
		DLQ:        prefix + "dlq",
		DedupState: prefix + "dedup-state",
		EmittedIDs: prefix + "emitted-ids",
		Pressure:   prefix + "pressure",
	}
}

// Internal reports whether t is one of the pipeline's own topics other than
// Results: no client reply topic may name one. The lanes of the accepted
// requests (Accepted followed by a dot and the lane's name) are internal
// whatever lanes are configured.
func (t Topics) Internal(name string) bool {
	switch name {
	case t.Requests, t.Accepted, t.Outcomes, t.DLQ, t.DedupState, t.EmittedIDs, t.Pressure:
		return true
	}
	return strings.HasPrefix(name, t.Accepted+".")
}

// LaneTopic is the topic of a priority lane's accepted requests: Accepted
// for the lane that takes priority 0 (normal), Accepted.<name> for the
// others.
func (t Topics) LaneTopic(name string, normal bool) string {
	if normal {
		return t.Accepted
	}
	return t.Accepted + "." + name
}

// Kinds binds each topic of the deployment, and each reply topic, to the kind
// of message it carries, as a codec takes it: the graph's kinds
// (Graph.Kinds) for the default windows.
func (t Topics) Kinds(replyTopics ...string) map[string]schemas.Kind {
	m := map[string]schemas.Kind{
		t.Requests:   schemas.KindRequest,
		t.Accepted:   schemas.KindRequest,
		t.Outcomes:   schemas.KindResult,
		t.Results:    schemas.KindResult,
		t.DLQ:        schemas.KindDeadLetter,
		t.DedupState: schemas.KindStateEntry,
		t.EmittedIDs: schemas.KindStateEntry,
		t.Pressure:   schemas.KindPressure,
	}
	for _, r := range replyTopics {
		m[r] = schemas.KindResult
	}
	return m
}
