// Package client is the Go library applications use to submit inference
// requests to an asyncinfer deployment and to get their results. It owns the
// application side of the contract: how a request is keyed and produced, and
// how its terminal result is found again on the reply topic.
//
// A Client produces each request to the requests topic (Avro, Confluent wire
// format, keyed by its idempotency key with Kafka's default murmur2
// partitioner, acknowledged by the broker before Submit returns) and reads
// its reply topic, read_committed, from the end offsets it found at New. It
// is safe for concurrent use.
//
// Nothing here is needed to talk to asyncinfer: a client in any language
// needs only Kafka, Avro and the schema registry (see the README, "Producing
// requests"). This package adds the bookkeeping that makes "submit, then
// wait for the answer" safe: a result is never missed because it came before
// Await was called.
//
// # Never missing a result
//
// New notes the reply topic's end offsets (last stable offsets) and reads
// from exactly there, before anything is submitted; partitions added to the
// topic later are found within a minute and read from their start. Submit
// registers the request id before it produces the request, and a result
// for a registered id is kept until an Await takes it, however early it
// comes. The bound: Config.MaxUnclaimed ids (100,000 by default) that no
// Await is waiting for; past it the oldest is forgotten, and an Await for it
// waits until its context ends. Await for an id submitted elsewhere (with
// this client's reply topic) works if it is waiting when the result comes.
// Results neither takes nor keeps results: it yields what arrives while the
// iteration runs.
//
// # Which results a client reads
//
// With Config.ReplyTopic empty, results go to the deployment's shared
// results topic, and every client reads every result on it, whoever asked:
// the cost grows with the whole deployment's traffic, not this client's.
// Give each kind of client its own reply topic (on the pipeline's
// --reply-topics allow-list) so that it reads only its own results. A reply
// topic that is not on the allow-list is refused silently by the pipeline:
// the results go to the shared results topic, and a client reading its own
// reply topic never sees them (Await waits until its context ends).
//
// # What to do with each terminal status
//
// Every request id gets a terminal result (schemas.Result) with one of these
// statuses; see Result's fields in package schemas.
//
//   - SUCCEEDED: Outputs hold the model's answer; Model, ModelVersion,
//     BatchSize and Timings say how it was served.
//   - FAILED: the request will never succeed as sent. ErrorCode says why:
//     INVALID_REQUEST (it failed validation in the pipeline; ErrorMessage
//     names the field — Submit validates first, so a client of this package
//     meets it only with a newer pipeline's rules), UNKNOWN_MODEL (no such
//     model is served: fix the model name or the deployment),
//     INFERENCE_FAILED (the model fails on this input alone: its batch-mates
//     succeeded), MODEL_UNAVAILABLE (the model kept failing transiently past
//     its attempts). Resubmitting is worth it only after MODEL_UNAVAILABLE;
//     dedup remembers an idempotency key for its window, so such a retry
//     needs a new request id and a new idempotency key.
//   - REJECTED: admission control at dedup turned the request away before
//     inference (Reason overloaded): the model's backlog would have kept it
//     past its deadline (min(DeadlineMs, CreatedAtMs + the model's latency
//     objective)); ErrorMessage gives the numbers. Retry after RetryAfterMs
//     milliseconds with a new request id (clear RequestID and Submit the
//     request again) and the same IdempotencyKey: dedup frees the key of a
//     rejected request, so the retry is decided afresh (not answered
//     DUPLICATE), while the rejected request id itself stays answered (sent
//     again, it is dropped as a repeat).
//
// # Shedding before producing
//
// With Config.HonourPressure, Submit reads the verdict dedup publishes per
// model and priority lane on the pressure topic and returns an
// *OverloadError (errors.Is(err, ErrOverloaded)), producing nothing, for a
// request that would be rejected anyway: the pipeline's shed fraction of a
// SHEDDING lane's requests, and any whose DeadlineMs is nearer than the
// lane's predicted wait. Wait RetryAfter and Submit it again. Clients in
// other languages can read the same topic (README, "From any language").
//   - DUPLICATE: another request with the same idempotency key was accepted
//     first, inside the deduplication window. OriginalRequestID names it;
//     its result is the answer to both, delivered once, keyed by the
//     original request id, to the original's reply topic. OriginalStatus is
//     that result's status when dedup knew it (often empty: not known yet).
//     If this client submitted the original and no Await has taken its
//     result yet, Await(OriginalRequestID) returns it; otherwise use the copy
//     you kept when it arrived. This client does not keep results once an
//     Await has taken them.
//   - EXPIRED: the request's deadline (DeadlineMs) passed before inference
//     (Reason deadline_passed), or its model's latency objective counted
//     from CreatedAtMs did (Reason objective_passed). The model did not run. Resubmit with a new request id
//     and a later deadline only if the answer is still useful.
//
// # Repeats
//
// The pipeline delivers at least once: after a crash or a rebalance a
// request id may be answered again. A repeat is identical to the first
// answer. Await returns the first and ignores the rest; Results yields every
// record it reads, repeats included: drop them by request id (keep the ids
// seen recently; a repeat follows a crash or rebalance, so it comes soon
// after the first), or make what you do with a result idempotent.
package client
