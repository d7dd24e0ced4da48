package schemas

import (
	"context"
	"math/rand/v2"
	"testing"
)

// Benchmarks fill tensors with random data: all-zero data hides the cost of
// boxing each element (Go boxes small integers and zero floats without
// allocating), and a decoder that boxes would look cheaper than it is.

// randomFloats returns n random floats from a fixed seed, so runs compare.
func randomFloats(n int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 1))
	out := make([]float32, n)
	for i := range out {
		out[i] = rng.Float32()*2 - 1
	}
	return out
}

func randomBytes(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 2))
	out := make([]byte, n)
	for i := range out {
		out[i] = byte(rng.Uint32())
	}
	return out
}

// typicalRequest is what the pipeline carries most: one or two small FP32
// inputs and a few parameters.
func typicalRequest() *Request {
	return &Request{
		RequestID:      "0190f1c2-7d3e-7a4b-9c1d-2e3f4a5b6c7d",
		IdempotencyKey: "order-42",
		Tenant:         "team-a",
		Model:          "ranker",
		ModelVersion:   "3",
		Inputs: []Tensor{
			{Name: "query", Datatype: "FP32", Shape: []int64{1, 16}, FP32: randomFloats(16, 1)},
			{Name: "features", Datatype: "FP32", Shape: []int64{1, 256}, FP32: randomFloats(256, 2)},
		},
		Parameters:  map[string]any{"temperature": 0.7, "top_k": int64(40), "explain": false},
		Priority:    1,
		DeadlineMs:  1_700_000_060_000,
		ReplyTopic:  "team-a.results",
		CreatedAtMs: 1_700_000_000_000,
	}
}

func typicalResult() *Result {
	return &Result{
		RequestID:      "0190f1c2-7d3e-7a4b-9c1d-2e3f4a5b6c7d",
		IdempotencyKey: "order-42",
		Tenant:         "team-a",
		Status:         StatusSucceeded,
		Attempt:        1,
		Outputs: []Tensor{
			{Name: "scores", Datatype: "FP32", Shape: []int64{1, 256}, FP32: randomFloats(256, 3)},
		},
		Model:         "ranker",
		ModelVersion:  "3",
		BatchSize:     16,
		Timings:       Timings{QueuedMs: 1.5, BatchWaitMs: 2.25, InferenceMs: 10, EndToEndMs: 14.75},
		ReplyTopic:    "team-a.results",
		CreatedAtMs:   1_700_000_000_000,
		CompletedAtMs: 1_700_000_000_015,
	}
}

// benchRequests are a typical request, an image as raw bytes (the fast
// form) and as typed floats (each element one goavro interface value when
// goavro decodes it).
func benchRequests() map[string]*Request {
	raw := fullRequest()
	raw.Inputs = []Tensor{{Name: "image", Datatype: "FP32", Shape: []int64{1, 3, 224, 224}, Raw: randomBytes(4*3*224*224, 4)}}
	typed := fullRequest()
	typed.Inputs = []Tensor{{Name: "features", Datatype: "FP32", Shape: []int64{1, 1024}, FP32: randomFloats(1024, 5)}}
	return map[string]*Request{"typical": typicalRequest(), "raw_602KB": raw, "fp32_1024": typed, "no_inputs": minimalRequest()}
}

func BenchmarkEncodeRequest(b *testing.B) {
	c, _ := newTestCodec(b)
	for name, r := range benchRequests() {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.EncodeRequest(topicRequests, r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeRequest(b *testing.B) {
	benchDecode(b, benchRequests(), (*Codec).EncodeRequest, topicRequests, (*Codec).DecodeRequest)
}

func BenchmarkDecodeRequestHead(b *testing.B) {
	benchDecode(b, benchRequests(), (*Codec).EncodeRequest, topicRequests, (*Codec).DecodeRequestHead)
}

func BenchmarkDecodeResult(b *testing.B) {
	benchDecode(b, map[string]*Result{"typical": typicalResult()}, (*Codec).EncodeResult, topicResults, (*Codec).DecodeResult)
}

func BenchmarkDecodeResultHead(b *testing.B) {
	benchDecode(b, map[string]*Result{"typical": typicalResult()}, (*Codec).EncodeResult, topicResults, (*Codec).DecodeResultHead)
}

func benchDecode[T, V any](b *testing.B, values map[string]*T, encode func(*Codec, string, *T) ([]byte, error), topic string, decode func(*Codec, context.Context, []byte) (V, error)) {
	c, _ := newTestCodec(b)
	ctx := context.Background()
	for name, v := range values {
		msg, err := encode(c, topic, v)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				if _, err := decode(c, ctx, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
