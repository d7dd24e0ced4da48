package integration

// What a client of another kind writes: its own versions of the request
// schema (registered under its own subject, so their ids are ones the stages
// have not seen and must look up in the registry), Avro written by hand
// (a hostile client does not need a library), and producers with other
// partitioners and size limits.

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"math"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/asyncinfer/asyncinfer/schemas"
)

// clientRequestSchema is a client's own, compatible version of the request
// schema: its own namespace and field order, a field we do not know, the
// optional fields left out, the idempotency key not a union.
const clientRequestSchema = `{"type": "record", "name": "Request", "namespace": "com.example.faults", "fields": [
  {"name": "trace_id", "type": "string"},
  {"name": "model", "type": "string"},
  {"name": "request_id", "type": "string"},
  {"name": "idempotency_key", "type": "string"},
  {"name": "inputs", "type": {"type": "array", "items": {"type": "record", "name": "Tensor", "fields": [
    {"name": "name", "type": "string"},
    {"name": "datatype", "type": "string"},
    {"name": "shape", "type": {"type": "array", "items": "long"}},
    {"name": "fp32_contents", "type": {"type": "array", "items": "float"}}]}}},
  {"name": "created_at_ms", "type": "long"}]}`

// bombSchema is the request of a hostile client: the two required fields,
// and an array of records of empty maps, one byte each on the wire and
// hundreds of bytes each in a naive decoder's memory.
const bombSchema = `{"type": "record", "name": "Request", "namespace": "com.example.bomb", "fields": [
  {"name": "request_id", "type": "string"},
  {"name": "model", "type": "string"},
  {"name": "pad", "type": {"type": "array", "items": {"type": "record", "name": "E", "fields": [
    {"name": "m", "type": {"type": "map", "values": "null"}}]}}}]}`

// registerSchema registers schema under the deployment's subject for it
// and returns its id.
func (d *deployment) registerSchema(ctx context.Context, t *testing.T, name, schema string) int {
	t.Helper()
	cl, err := sr.NewClient(sr.URLs(env.registry))
	if err != nil {
		t.Fatal(err)
	}
	ss, err := cl.CreateSchema(ctx, d.prefix+name+"-value", sr.Schema{Schema: schema, Type: sr.TypeAvro})
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	return ss.ID
}

// The Avro binary encoding, as much as these clients need.
func avroLong(b []byte, v int64) []byte { return binary.AppendUvarint(b, uint64((v<<1)^(v>>63))) }

func avroString(b []byte, s string) []byte { return append(avroLong(b, int64(len(s))), s...) }

// wire prefixes an Avro body with the Confluent wire format's header.
func wire(id int, body []byte) []byte {
	b := make([]byte, schemas.HeaderSize, schemas.HeaderSize+len(body))
	binary.BigEndian.PutUint32(b[1:], uint32(id))
	return append(b, body...)
}

// clientRequest is a request for model written with clientRequestSchema
// (registered as id).
func clientRequest(id int, requestID, key, model string, createdMs int64) []byte {
	b := avroString(nil, "trace-"+requestID)
	b = avroString(b, model)
	b = avroString(b, requestID)
	b = avroString(b, key)
	b = avroLong(b, 1) // one tensor
	b = avroString(b, "x")
	b = avroString(b, "FP32")
	b = avroLong(avroLong(avroLong(b, 2), 1), 4) // shape [1, 4]
	b = append(b, 0)
	b = avroLong(b, 4)
	for _, f := range []float32{1, 2, 3, 4} {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
	}
	b = append(b, 0) // end of the floats
	b = append(b, 0) // end of the tensors
	b = avroLong(b, createdMs)
	return wire(id, b)
}

// bombRequest is a request written with bombSchema (registered as id)
// whose value takes size bytes: its pad holds about size empty maps.
func bombRequest(id int, requestID string, size int) []byte {
	b := avroString(nil, requestID)
	b = avroString(b, "sim")
	n := size - schemas.HeaderSize - len(b) - 11
	b = avroLong(b, int64(n))
	b = append(b, make([]byte, n)...) // n empty maps
	b = append(b, 0)
	return wire(id, b)
}

// producer is a client of the deployment's cluster with the given options
// (a partitioner, a compression, a size limit), closed at the end of t.
func producer(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(env.brokers...), kgo.ProducerLinger(0)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// consistentRandom is librdkafka's default partitioner (consistent_random):
// CRC-32 of the key, modulo the partitions; another partition than
// murmur2's for most keys.
func consistentRandom() kgo.Partitioner {
	return kgo.BasicConsistentPartitioner(func(string) func(*kgo.Record, int) int {
		return func(r *kgo.Record, n int) int { return int(crc32.ChecksumIEEE(r.Key) % uint32(n)) }
	})
}
