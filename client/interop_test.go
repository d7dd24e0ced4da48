package client

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/asyncinfer/asyncinfer/internal/kafkatest"
)

// A client in any language needs only Kafka, Avro and the schema registry.
// This test is such a client: it uses none of this module's types or
// encoders, only the .avsc files as published, goavro's generic maps, the
// registry API, the Confluent wire format written by hand, and a plain Kafka
// producer with Kafka's default partitioner. The pipeline answers every
// request, and the answers decode the same way.
func TestInteropWithoutOurTypes(t *testing.T) {
	const partitions = 4
	e := newEnv(t, partitions)
	m := e.run(t)
	ctx := kafkatest.Ctx(t)

	avsc, err := os.ReadFile("../schemas/request.avsc")
	if err != nil {
		t.Fatal(err)
	}
	codec, err := goavro.NewCodec(string(avsc))
	if err != nil {
		t.Fatal(err)
	}
	subject := e.Topics.Requests + "-value" // TopicNameStrategy
	ss, err := e.Registry.CreateSchema(ctx, subject, sr.Schema{Schema: string(avsc), Type: sr.TypeAvro})
	if err != nil {
		t.Fatal(err)
	}

	// librdkafka: partitioner=murmur2_random; Java: the default partitioner.
	pr := e.Client(t, kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	const n = 24
	want := map[string]bool{}
	var recs []*kgo.Record
	for i := range n {
		id := fmt.Sprintf("interop-%d", i)
		key := id // the key rule: the idempotency key if set, else the request id
		idemKey := any(nil)
		if i%2 == 0 {
			key = fmt.Sprintf("order-%d", i)
			idemKey = goavro.Union("string", key)
		}
		input := tensor("x", "FP32", []any{int64(2)})
		if i%3 == 0 { // the raw little-endian form
			raw := binary.LittleEndian.AppendUint32(nil, math.Float32bits(1.5))
			raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(-2))
			input["raw_contents"] = goavro.Union("bytes", raw)
		} else {
			input["fp32_contents"] = []any{float32(1.5), float32(-2)}
		}
		native := map[string]any{
			"request_id":      id,
			"idempotency_key": idemKey,
			"tenant":          "interop",
			"model":           "sim",
			"model_version":   nil,
			"inputs":          []any{input},
			"parameters": map[string]any{
				"temperature": goavro.Union("double", 0.5),
				"style":       goavro.Union("string", "terse"),
			},
			"priority":      int32(0),
			"deadline_ms":   goavro.Union("long", time.Now().Add(time.Hour).UnixMilli()),
			"reply_topic":   nil,
			"created_at_ms": time.Now().UnixMilli(),
		}
		value := []byte{0} // magic byte
		value = binary.BigEndian.AppendUint32(value, uint32(ss.ID))
		value, err = codec.BinaryFromNative(value, native)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: e.Topics.Requests, Key: []byte(key), Value: value})
		want[id] = true
	}
	if err := pr.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	// Read the answers back the same way: a plain consumer, the writer's
	// schema from the registry by the id in each record, goavro.
	cons := e.Client(t,
		kgo.ConsumeTopics(e.Topics.Results),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	codecs := map[int]*goavro.Codec{}
	for len(want) > 0 {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%d requests unanswered: %v", len(want), want)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if len(r.Value) < 5 || r.Value[0] != 0 {
				t.Fatalf("result at offset %d is not in the Confluent wire format", r.Offset)
			}
			id := int(binary.BigEndian.Uint32(r.Value[1:5]))
			rc, ok := codecs[id]
			if !ok {
				s, err := e.Registry.SchemaByID(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if rc, err = goavro.NewCodec(s.Schema); err != nil {
					t.Fatal(err)
				}
				codecs[id] = rc
			}
			v, rest, err := rc.NativeFromBinary(r.Value[5:])
			if err != nil || len(rest) != 0 {
				t.Fatalf("result at offset %d: %v (%d bytes left)", r.Offset, err, len(rest))
			}
			res := v.(map[string]any)
			reqID, _ := res["request_id"].(string)
			if !want[reqID] {
				t.Errorf("unexpected result for %q", reqID)
				return
			}
			delete(want, reqID)
			outputs, _ := res["outputs"].([]any)
			if res["status"] != "SUCCEEDED" || len(outputs) == 0 {
				t.Errorf("%s: status %v (%v %v), %d outputs; want SUCCEEDED with outputs",
					reqID, res["status"], res["error_code"], res["error_message"], len(outputs))
			}
			if string(r.Key) != reqID {
				t.Errorf("%s: result keyed %q, want the request id", reqID, r.Key)
			}
			var status string
			for _, h := range r.Headers {
				if h.Key == "asyncinfer-status" {
					status = string(h.Value)
				}
			}
			if status != res["status"] {
				t.Errorf("%s: status header %q, body %v", reqID, status, res["status"])
			}
		})
	}
	if v := testutil.ToFloat64(m.Dedup.PartitionViolations); v != 0 {
		t.Errorf("dedup counted %v partitioning violations: the hand-made records broke the key rule", v)
	}
}

// tensor is an Avro Tensor with every data field empty.
func tensor(name, datatype string, shape []any) map[string]any {
	return map[string]any{
		"name":           name,
		"datatype":       datatype,
		"shape":          shape,
		"fp32_contents":  []any{},
		"fp64_contents":  []any{},
		"int_contents":   []any{},
		"int64_contents": []any{},
		"bool_contents":  []any{},
		"bytes_contents": []any{},
		"raw_contents":   nil,
	}
}
