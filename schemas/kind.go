package schemas

import (
	_ "embed" // the .avsc files are the contract; the binary carries them verbatim
	"fmt"
)

// The Avro schemas, frozen: clients in any language build from these files,
// so they change only by adding fields with defaults (BACKWARD compatible).
var (
	//go:embed request.avsc
	requestAvsc string
	//go:embed result.avsc
	resultAvsc string
	//go:embed deadletter.avsc
	deadLetterAvsc string
	//go:embed stateentry.avsc
	stateEntryAvsc string
	//go:embed pressure.avsc
	pressureAvsc string
)

// Kind names one of the message types, and so one of the schemas.
type Kind int

// The message kinds. The zero Kind is invalid, so that a missing entry in a
// topic map is caught rather than taken for a request.
const (
	KindRequest Kind = iota + 1
	KindResult
	KindDeadLetter
	KindStateEntry
	KindPressure
)

// String returns the kind's name as used in errors: "request", "result",
// "dead letter", "state entry", "pressure".
func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindResult:
		return "result"
	case KindDeadLetter:
		return "dead letter"
	case KindStateEntry:
		return "state entry"
	case KindPressure:
		return "pressure"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// recordName is the unqualified name of the kind's top-level record. A writer
// schema must use the same name, as Avro schema resolution requires; it is
// what keeps a result on the wrong topic from decoding as a request (their
// shared field names would otherwise let it through).
func (k Kind) recordName() string {
	switch k {
	case KindRequest:
		return "Request"
	case KindResult:
		return "Result"
	case KindDeadLetter:
		return "DeadLetter"
	case KindStateEntry:
		return "StateEntry"
	case KindPressure:
		return "Pressure"
	}
	return ""
}

func (k Kind) valid() bool { return k >= KindRequest && k <= lastKind }

// lastKind is the last valid Kind.
const lastKind = KindPressure

// Schema returns the kind's Avro schema, the text of its embedded .avsc file,
// or "" for an unknown kind.
func Schema(k Kind) string {
	switch k {
	case KindRequest:
		return requestAvsc
	case KindResult:
		return resultAvsc
	case KindDeadLetter:
		return deadLetterAvsc
	case KindStateEntry:
		return stateEntryAvsc
	case KindPressure:
		return pressureAvsc
	}
	return ""
}
