// Package pipeline is the stage runner every asyncinfer stage runs on. It owns
// what is hard to get right once per stage and easy to get wrong in each: the
// consume loop of a consumer group (cooperative-sticky, static membership),
// commit tracking by low-water mark, pauses keyed by reason, bounded
// in-flight work, partition-local stage state with staged changes restored
// from a changelog, dead letters, a graceful drain, and the runner's status
// (readiness) for the admin server.
//
// A stage implements Handler. The runner hands it every polled record as a
// Work and the stage finishes each Work exactly once, at once or later from
// any goroutine, with the records it produces. The runner produces them,
// then the changelog records, then applies the staged state, and only then
// lets the input offset be committed. That order is what makes a crash at
// any point safe: a record is re-delivered unless all of its effects exist.
package pipeline
