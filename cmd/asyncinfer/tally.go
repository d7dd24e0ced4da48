package main

import (
	"context"
	"fmt"
	"maps"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/asyncinfer/asyncinfer/connectors/sim"
	"github.com/asyncinfer/asyncinfer/pipeline"
	"github.com/asyncinfer/asyncinfer/schemas"
)

// tally counts, per request id, what a pipeline's topics hold: every
// request, every answer, every dead letter. It is the ground truth behind
// demo's report and verify's: lost, conflicting and repeated are computed
// by matching request ids, not by adding up counters.
type tally struct {
	requests    int
	malformed   int
	poisoned    int
	ids         map[string]bool     // decodable request ids
	keys        map[string]bool     // their idempotency keys
	malformedAt map[string]bool     // "partition/offset" of undecodable requests
	answers     map[string][]string // request id -> signature of each answer
	byStatus    map[schemas.Status]int
	why         map[string]int // "STATUS reason-or-code" -> first answers, for FAILED, EXPIRED and REJECTED
	dlq         int
	dlqFrom     map[string]bool // "topic/partition/offset" of dead-lettered sources
	latencies   []float64       // ms, first answer of each request id
}

func newTally() *tally {
	return &tally{
		ids: map[string]bool{}, keys: map[string]bool{}, malformedAt: map[string]bool{},
		answers: map[string][]string{}, byStatus: map[schemas.Status]int{}, why: map[string]int{}, dlqFrom: map[string]bool{},
	}
}

func coord(topic string, p int32, off int64) string {
	return topic + "/" + strconv.Itoa(int(p)) + "/" + strconv.FormatInt(off, 10)
}

func (t *tally) addRequest(ctx context.Context, codec *schemas.Codec, topic string, p int32, off int64, v []byte) {
	t.requests++
	req, err := codec.DecodeRequest(ctx, v)
	if err != nil {
		t.malformed++
		t.malformedAt[coord(topic, p, off)] = true
		return
	}
	t.ids[req.RequestID] = true
	t.keys[req.Key()] = true
	if b, ok := req.Parameters[sim.PoisonParam].(bool); ok && b {
		t.poisoned++
	}
}

// signature is what must agree between two answers for one request id.
func signature(r *schemas.Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s|%s|%s|%s", r.Status, r.ErrorCode, r.Reason, r.OriginalRequestID)
	for _, o := range r.Outputs {
		fmt.Fprintf(&b, "|%s:%s:%v:%v%v%v%v%x", o.Name, o.Datatype, o.Shape, o.FP32, o.FP64, o.Int32, o.Int64, o.Raw)
	}
	return b.String()
}

func (t *tally) addResult(r *schemas.Result) {
	first := len(t.answers[r.RequestID]) == 0
	t.answers[r.RequestID] = append(t.answers[r.RequestID], signature(r))
	if first {
		t.byStatus[r.Status]++
		switch r.Status {
		case schemas.StatusFailed, schemas.StatusExpired, schemas.StatusRejected:
			why := r.Reason
			if why == "" {
				why = r.ErrorCode
			}
			t.why[string(r.Status)+" "+why]++
		}
		if r.Timings.EndToEndMs > 0 {
			t.latencies = append(t.latencies, r.Timings.EndToEndMs)
		}
	}
}

func (t *tally) addDeadLetter(d *schemas.DeadLetter) {
	t.dlq++
	t.dlqFrom[coord(d.SourceTopic, d.SourcePartition, d.SourceOffset)] = true
}

// report is the JSON object demo and verify print.
type report struct {
	Requests   int          `json:"requests"`
	Unique     int          `json:"unique"`
	Duplicates int          `json:"duplicates"`
	Malformed  int          `json:"malformed"`
	Poisoned   int          `json:"poisoned"`
	Results    resultCounts `json:"results"`
	// Why counts the answers that are not SUCCEEDED or DUPLICATE by status
	// and reason (or error code), e.g. "EXPIRED objective_passed".
	Why                 map[string]int `json:"why,omitempty"`
	DLQ                 int            `json:"dlq"`
	MalformedWithoutDLQ int            `json:"malformed_without_dlq"`
	Lost                int            `json:"lost"`
	Pending             int            `json:"pending"`
	Conflicting         int            `json:"conflicting"`
	Repeated            int            `json:"repeated"`
	Unrequested         int            `json:"unrequested"`
	ModelCalls          int64          `json:"model_calls"`
	MeanBatchSize       float64        `json:"mean_batch_size"`
	ThroughputRPS       float64        `json:"throughput_rps"`
	LatencyMs           latency        `json:"latency_ms"`
	// What only the demo knows: the latencies of the SUCCEEDED answers,
	// the retry_after_ms of the REJECTED ones, the answers per priority
	// lane (with --priority-mix), and the live heap each second.
	SucceededLatencyMs *latency `json:"succeeded_latency_ms,omitempty"`
	RetryAfterMs       *latency `json:"retry_after_ms,omitempty"`
	DownstreamMs       *latency `json:"downstream_ms,omitempty"` // SUCCEEDED: from the model's answer to the client

	Lanes      map[string]laneReport `json:"lanes,omitempty"`
	HeapLiveMB []float64             `json:"heap_live_mb_per_second,omitempty"`
	HeapBytes  uint64                `json:"heap_bytes"`
	// CPUMicrosPerRequest and AllocsPerRequest are the demo process's CPU
	// time and heap allocations from the first request produced to the last
	// answer, per record produced: broker, load generator and stages alike.
	CPUMicrosPerRequest float64 `json:"cpu_us_per_request,omitempty"`
	AllocsPerRequest    float64 `json:"allocs_per_request,omitempty"`
	Settled             bool    `json:"settled"`
}

type resultCounts struct {
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	Expired   int `json:"expired"`
	Rejected  int `json:"rejected"`
	Duplicate int `json:"duplicate"`
}

type laneReport struct {
	Requests           int     `json:"requests"`
	Succeeded          int     `json:"succeeded"`
	Expired            int     `json:"expired"`
	Rejected           int     `json:"rejected"`
	SucceededLatencyMs latency `json:"succeeded_latency_ms"`
}

type latency struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// report counts. settled says the pipeline has nothing left to do (every
// stage group has consumed and committed everything), so an unanswered
// request is lost; otherwise it is pending.
func (t *tally) report(settled bool) report {
	r := report{
		Requests:   t.requests,
		Unique:     len(t.keys),
		Duplicates: len(t.ids) - len(t.keys),
		Malformed:  t.malformed,
		Poisoned:   t.poisoned,
		DLQ:        t.dlq,
		Settled:    settled,
		Why:        maps.Clone(t.why),
		Results: resultCounts{
			Succeeded: t.byStatus[schemas.StatusSucceeded],
			Failed:    t.byStatus[schemas.StatusFailed],
			Expired:   t.byStatus[schemas.StatusExpired],
			Rejected:  t.byStatus[schemas.StatusRejected],
			Duplicate: t.byStatus[schemas.StatusDuplicate],
		},
	}
	for c := range t.malformedAt {
		if !t.dlqFrom[c] {
			r.MalformedWithoutDLQ++
		}
	}
	for id := range t.ids {
		if len(t.answers[id]) == 0 {
			if settled {
				r.Lost++
			} else {
				r.Pending++
			}
		}
	}
	for id, sigs := range t.answers {
		if !t.ids[id] {
			r.Unrequested++
		}
		if len(sigs) < 2 {
			continue
		}
		agree := true
		for _, s := range sigs[1:] {
			if s != sigs[0] {
				agree = false
			}
		}
		if agree {
			r.Repeated++
		} else {
			r.Conflicting++
		}
	}
	r.LatencyMs = percentiles(t.latencies)
	return r
}

func percentiles(v []float64) latency {
	if len(v) == 0 {
		return latency{}
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(s)))) - 1
		return round2(s[max(0, min(i, len(s)-1))])
	}
	return latency{P50: at(0.50), P95: at(0.95), P99: at(0.99), Max: round2(s[len(s)-1])}
}

func round2(x float64) float64 { return math.Round(x*100) / 100 }

// topicsToRead is what verify reads.
func topicsToRead(t pipeline.Topics, reply []string) []string {
	return append([]string{t.Requests, t.Results, t.DLQ}, reply...)
}
