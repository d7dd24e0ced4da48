package schemas

import (
	"context"
	"testing"
)

// benchRequests are an image as raw bytes (the fast form) and as typed
// floats (each element one goavro interface value on decode).
func benchRequests() map[string]*Request {
	raw := fullRequest()
	raw.Inputs = []Tensor{{Name: "image", Datatype: "FP32", Shape: []int64{1, 3, 224, 224}, Raw: make([]byte, 4*3*224*224)}}
	typed := fullRequest()
	typed.Inputs = []Tensor{{Name: "features", Datatype: "FP32", Shape: []int64{1, 1024}, FP32: make([]float32, 1024)}}
	return map[string]*Request{"raw_602KB": raw, "fp32_1024": typed, "no_inputs": minimalRequest()}
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
	c, _ := newTestCodec(b)
	ctx := context.Background()
	for name, r := range benchRequests() {
		msg, err := c.EncodeRequest(topicRequests, r)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				if _, err := c.DecodeRequest(ctx, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
