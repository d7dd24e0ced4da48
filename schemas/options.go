package schemas

import "fmt"

// Size limits of decoding, in bytes.
const (
	// DefaultMaxMessageBytes is the default of MaxMessageBytes: the
	// max.message.bytes of the data topics by default (1 MiB).
	DefaultMaxMessageBytes = 1 << 20
	// DefaultMaxDeadLetterBytes is the default of MaxDeadLetterBytes: the
	// max.message.bytes of the dlq topic by default (8 MiB).
	DefaultMaxDeadLetterBytes = 8 << 20
	// DecodeBudgetFactor is how many times the largest message of a kind
	// decoding may take in memory, unless DecodeBudget says otherwise: every
	// legitimate message up to that size fits (budget.go says why 32).
	DecodeBudgetFactor = 32
)

// An Option configures a Codec (the option style of every library package
// here, franz-go's: an interface over one unexported config).
type Option interface{ apply(*cfg) }

type optFn func(*cfg)

func (f optFn) apply(c *cfg) { f(c) }

type cfg struct {
	maxMessageBytes    int
	maxDeadLetterBytes int
	budget             int64 // 0: DecodeBudgetFactor times the kind's largest message
}

func defaultCfg() cfg {
	return cfg{maxMessageBytes: DefaultMaxMessageBytes, maxDeadLetterBytes: DefaultMaxDeadLetterBytes}
}

func (c *cfg) validate() error {
	if c.maxMessageBytes <= HeaderSize {
		return fmt.Errorf("schemas: MaxMessageBytes %d: want more than the %d-byte header", c.maxMessageBytes, HeaderSize)
	}
	if c.maxDeadLetterBytes <= HeaderSize {
		return fmt.Errorf("schemas: MaxDeadLetterBytes %d: want more than the %d-byte header", c.maxDeadLetterBytes, HeaderSize)
	}
	if c.budget < 0 {
		return fmt.Errorf("schemas: DecodeBudget %d: want a positive number of bytes", c.budget)
	}
	return nil
}

// limit is what decoding a message of one kind may take.
type limit struct {
	bytes  int   // the message, header included
	budget int64 // memory, by the scan's estimate
}

func (c *cfg) limit(k Kind) limit {
	l := limit{bytes: c.maxMessageBytes}
	if k == KindDeadLetter {
		l.bytes = c.maxDeadLetterBytes
	}
	l.budget = c.budget
	if l.budget == 0 {
		l.budget = DecodeBudgetFactor * int64(l.bytes)
	}
	return l
}

// MaxMessageBytes sets the largest request, result or state entry the codec
// decodes, in bytes, header included: set it to the max.message.bytes of the
// topics they are read from. A broker refuses a larger value, so one can
// only come out of a compressed batch (a few KB can expand to megabytes); it
// is refused as malformed before anything else is done with it. Default:
// DefaultMaxMessageBytes (1 MiB).
func MaxMessageBytes(n int) Option { return optFn(func(c *cfg) { c.maxMessageBytes = n }) }

// MaxDeadLetterBytes is MaxMessageBytes for dead letters, which carry their
// source record: set it to the dlq topic's max.message.bytes. Default:
// DefaultMaxDeadLetterBytes (8 MiB).
func MaxDeadLetterBytes(n int) Option { return optFn(func(c *cfg) { c.maxDeadLetterBytes = n }) }

// DecodeBudget sets how much memory decoding one message may take, in
// bytes, as estimated by the walk over the message that precedes decoding.
// A message over it is refused as malformed before anything is allocated for
// it: it is what keeps a small message written with a hostile schema (an
// array of records of empty maps is 400 bytes of heap per byte on the wire
// in goavro's form) from taking the process down. It applies to every kind
// of message (a dead letter's payload counts once). Default:
// DecodeBudgetFactor times the kind's largest message (32 MiB for 1 MiB
// requests), which every legitimate message up to that size fits.
func DecodeBudget(bytes int64) Option { return optFn(func(c *cfg) { c.budget = bytes }) }
