package schemas

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/linkedin/goavro/v2"
	"github.com/twmb/franz-go/pkg/sr"
)

func TestRoundTrip(t *testing.T) {
	c, _ := newTestCodec(t)
	for _, m := range fixtures() {
		t.Run(m.name, func(t *testing.T) {
			b, err := m.encode(c)
			if err != nil {
				t.Fatal(err)
			}
			if id, err := SchemaID(b); err != nil || id != testIDs[m.kind] {
				t.Fatalf("SchemaID = %d, %v; want %d", id, err, testIDs[m.kind])
			}
			got, err := m.decode(c, b)
			if err != nil {
				t.Fatal(err)
			}
			if !same(got, m.value) {
				t.Errorf("decoded\n%+v\nwant\n%+v", got, m.value)
			}
		})
	}
}

// TestGoavroAgrees holds the hand-written encoders to the embedded schemas:
// goavro decodes what they write with the schema, and writes the same bytes
// back (but for map order, which goavro does not keep: there the bytes must
// still decode to the same value).
func TestGoavroAgrees(t *testing.T) {
	c, _ := newTestCodec(t)
	for _, m := range fixtures() {
		t.Run(m.name, func(t *testing.T) {
			b, err := m.encode(c)
			if err != nil {
				t.Fatal(err)
			}
			codec, err := goavro.NewCodec(Schema(m.kind))
			if err != nil {
				t.Fatal(err)
			}
			native, rest, err := codec.NativeFromBinary(b[HeaderSize:])
			if err != nil || len(rest) != 0 {
				t.Fatalf("goavro: %v, %d bytes left", err, len(rest))
			}
			again, err := codec.BinaryFromNative(b[:HeaderSize:HeaderSize], native)
			if err != nil {
				t.Fatal(err)
			}
			if r, ok := m.value.(*Request); ok && len(r.Parameters) > 1 {
				got, err := m.decode(c, again)
				if err != nil {
					t.Fatal(err)
				}
				if !same(got, m.value) {
					t.Errorf("goavro's encoding decodes to\n%+v\nwant\n%+v", got, m.value)
				}
				return
			}
			if !bytes.Equal(again, b) {
				t.Errorf("goavro encodes\n%x\nwe encode\n%x", again, b)
			}
		})
	}
}

func TestParametersEncodeSorted(t *testing.T) {
	c, _ := newTestCodec(t)
	first, err := c.EncodeRequest(topicRequests, fullRequest())
	if err != nil {
		t.Fatal(err)
	}
	for range 20 { // map order is random per iteration: 20 tries find a difference
		b, err := c.EncodeRequest(topicRequests, fullRequest())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, first) {
			t.Fatal("the same request encoded to different bytes")
		}
	}
}

func TestEncodeErrors(t *testing.T) {
	c, _ := newTestCodec(t)
	for _, tc := range []struct {
		name string
		enc  func() ([]byte, error)
		want string
	}{
		{"unbound topic", func() ([]byte, error) { return c.EncodeRequest("nope", minimalRequest()) },
			`schemas: encode request: topic "nope" is not bound`},
		{"topic of another kind", func() ([]byte, error) { return c.EncodeRequest(topicResults, minimalRequest()) },
			`schemas: encode request: topic "asyncinfer.results" is bound to result messages`},
		{"nil request", func() ([]byte, error) { return c.EncodeRequest(topicRequests, nil) },
			"nil request"},
		{"no request id", func() ([]byte, error) { return c.EncodeRequest(topicRequests, &Request{Model: "m"}) },
			"request_id is empty"},
		{"no model", func() ([]byte, error) { return c.EncodeRequest(topicRequests, &Request{RequestID: "r"}) },
			"model is empty"},
		{"parameter of another type", func() ([]byte, error) {
			return c.EncodeRequest(topicRequests, &Request{RequestID: "r", Model: "m", Parameters: map[string]any{"n": 3}})
		}, `parameters["n"]: type int, want string, int64, float64 or bool`},
		{"no status", func() ([]byte, error) { return c.EncodeResult(topicResults, &Result{RequestID: "r"}) },
			`status: unknown status ""`},
		{"unknown status", func() ([]byte, error) {
			return c.EncodeResult(topicResults, &Result{RequestID: "r", Status: "DONE"})
		}, `status: unknown status "DONE"`},
		{"unknown original status", func() ([]byte, error) {
			return c.EncodeResult(topicResults, &Result{RequestID: "r", Status: StatusDuplicate, OriginalStatus: "x"})
		}, `original_status: unknown status "x"`},
		{"no reason", func() ([]byte, error) { return c.EncodeDeadLetter(topicDLQ, &DeadLetter{}) },
			"reason is empty"},
		{"no key", func() ([]byte, error) { return c.EncodeStateEntry(topicState, &StateEntry{RequestID: "r"}) },
			"key is empty"},
		{"state entry status", func() ([]byte, error) {
			return c.EncodeStateEntry(topicState, &StateEntry{Key: "k", RequestID: "r", Status: "x"})
		}, `status: unknown status "x"`},
		{"a further entry without a request id", func() ([]byte, error) {
			return c.EncodeStateEntry(topicState, &StateEntry{Key: "k", RequestID: "r", More: []StateEntry{{Key: "k2"}}})
		}, "more[0].request_id is empty"},
		{"a further entry's status", func() ([]byte, error) {
			return c.EncodeStateEntry(topicState, &StateEntry{Key: "k", RequestID: "r",
				More: []StateEntry{{Key: "k2", RequestID: "r2"}, {Key: "k3", RequestID: "r3", Status: "x"}}})
		}, `more[1].status: unknown status "x"`},
		{"pressure without source", func() ([]byte, error) { return c.EncodePressure(topicPressure, &Pressure{Model: "m"}) },
			"source is empty"},
		{"pressure without model", func() ([]byte, error) {
			return c.EncodePressure(topicPressure, &Pressure{Source: PressureServing})
		}, "model is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.enc()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %x, %v; want an error containing %q", b, err, tc.want)
			}
		})
	}
}

func TestNewCodecErrors(t *testing.T) {
	_, cl := newTestRegistry(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		reg    Registry
		topics map[string]Kind
		want   string
	}{
		{"nil registry", nil, nil, "schemas: nil registry"},
		{"invalid kind", cl, map[string]Kind{"t": 0}, `schemas: topic "t": invalid Kind(0)`},
		{"empty topic", cl, map[string]Kind{"": KindRequest}, "schemas: empty topic name"},
		{"registry down", failingRegistry{}, map[string]Kind{"t": KindRequest}, `schemas: register request schema under "t-value": registry down`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewCodec(ctx, tc.reg, tc.topics)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	// Decode-only: no topics at all.
	c, err := NewCodec(ctx, cl, nil)
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := newTestCodec(t)
	b, err := enc.EncodeRequest(topicRequests, fullRequest())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DecodeRequest(ctx, b); err != nil {
		t.Fatal(err)
	}
}

// The same schema under two subjects gets one id, in srfake as in a real
// registry; the codec shares the id between the topics.
func TestSameSchemaTwoTopics(t *testing.T) {
	_, cl := newTestRegistry(t)
	c, err := NewCodec(context.Background(), cl, map[string]Kind{topicRequests: KindRequest, "asyncinfer.requests.high": KindRequest})
	if err != nil {
		t.Fatal(err)
	}
	if a, b := c.topics[topicRequests].id, c.topics["asyncinfer.requests.high"].id; a != b {
		t.Errorf("ids %d and %d, want one", a, b)
	}
}

type failingRegistry struct{}

func (failingRegistry) CreateSchema(context.Context, string, sr.Schema) (sr.SubjectSchema, error) {
	return sr.SubjectSchema{}, errors.New("registry down")
}

func (failingRegistry) SchemaByID(context.Context, int) (sr.Schema, error) {
	return sr.Schema{}, errors.New("registry down")
}

// header returns the wire format header for id.
func header(id int) []byte {
	return binary.BigEndian.AppendUint32([]byte{0}, uint32(id))
}

// goavroMessage encodes native with schema through goavro, for messages our
// encoders refuse to write.
func goavroMessage(t testing.TB, id int, schema string, native map[string]any) []byte {
	t.Helper()
	codec, err := goavro.NewCodec(schema)
	if err != nil {
		t.Fatal(err)
	}
	b, err := codec.BinaryFromNative(header(id), native)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeErrors(t *testing.T) {
	c, reg := newTestCodec(t)
	ctx := context.Background()
	valid, err := c.EncodeRequest(topicRequests, fullRequest())
	if err != nil {
		t.Fatal(err)
	}
	result, err := c.EncodeResult(topicResults, fullResult())
	if err != nil {
		t.Fatal(err)
	}
	reg.SeedSchema("proto-value", 1, 50, sr.Schema{Schema: "syntax = \"proto3\";", Type: sr.TypeProtobuf})
	reg.SeedSchema("string-value", 1, 51, sr.Schema{Schema: `"string"`})
	reg.SeedSchema("bad-value", 1, 52, sr.Schema{Schema: `{"type": "record", "name": "Request", "fields": [{"name": "x", "type": "nope"}]}`})
	reg.SeedSchema("int-id-value", 1, 53, sr.Schema{Schema: `{"type": "record", "name": "Request", "fields": [
		{"name": "request_id", "type": "int"}, {"name": "model", "type": "string"}]}`})

	requestNative := func(requestID, model string) map[string]any {
		return map[string]any{
			"request_id": requestID, "idempotency_key": nil, "tenant": "", "model": model,
			"model_version": nil, "inputs": []any{}, "parameters": map[string]any{}, "priority": int32(0),
			"deadline_ms": nil, "reply_topic": nil, "created_at_ms": int64(0),
		}
	}

	for _, tc := range []struct {
		name      string
		b         []byte
		want      string
		malformed bool
	}{
		{"empty", nil, "message of 0 bytes is shorter than the 5-byte header", true},
		{"short header", []byte{0, 0, 0, 1}, "message of 4 bytes is shorter than the 5-byte header", true},
		{"bad magic", append([]byte{1}, valid[1:]...), "magic byte 0x01, want 0x00", true},
		{"json", []byte(`{"request_id":"r"}`), "magic byte 0x7b", true},
		{"id zero", append(header(0), valid[HeaderSize:]...), "schema id 0 out of range", true},
		{"negative id", append(header(-7), valid[HeaderSize:]...), "schema id -7 out of range", true},
		{"unknown id", append(header(999), valid[HeaderSize:]...), "unknown schema id 999", true},
		{"not avro", append(header(50), valid[HeaderSize:]...), "schema id 50 is a PROTOBUF schema, not Avro", true},
		{"not a record", append(header(51), valid[HeaderSize:]...), "schema id 51 is string, want a record named Request", true},
		{"invalid schema", append(header(52), valid[HeaderSize:]...), `schema id 52: record Request: field x: unknown type "nope"`, true},
		{"result as request", result, "schema id 2 is record asyncinfer.Result, want a record named Request", true},
		{"garbage body", append(header(1), 0xff, 0xff, 0xff), "body does not decode with schema id 1", true},
		{"negative length", append(header(1), 1), "body does not decode with schema id 1: at byte 6: negative string length -1", true},
		{"empty body", header(1), "body does not decode with schema id 1: at byte 5: truncated varint", true},
		{"truncated body", valid[:len(valid)-3], "body does not decode with schema id 1", true},
		{"trailing bytes", append(append([]byte{}, valid...), 0, 0), "2 trailing bytes after the value", true},
		{"empty request id", goavroMessage(t, 1, Schema(KindRequest), requestNative("", "m")), "required field request_id is empty", true},
		{"empty model", goavroMessage(t, 1, Schema(KindRequest), requestNative("r", "")), "required field model is empty", true},
		{"wrong type", goavroMessage(t, 53, `{"type": "record", "name": "Request", "fields": [
			{"name": "request_id", "type": "int"}, {"name": "model", "type": "string"}]}`,
			map[string]any{"request_id": int32(7), "model": "m"}), "field request_id: wrong type: writer has int, want string", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := c.DecodeRequest(ctx, tc.b)
			if err == nil {
				t.Fatalf("decoded %+v, want an error", r)
			}
			if !strings.HasPrefix(err.Error(), "schemas: decode request: ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want one containing %q", err, tc.want)
			}
			if errors.Is(err, ErrMalformed) != tc.malformed {
				t.Errorf("errors.Is(%q, ErrMalformed) = %v", err, !tc.malformed)
			}
		})
	}
}

// A registry that cannot be reached is not the message's fault: the error
// must not send the message to the dead letter queue.
func TestDecodeRegistryDown(t *testing.T) {
	enc, _ := newTestCodec(t)
	b, err := enc.EncodeRequest(topicRequests, fullRequest())
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCodec(context.Background(), &flakyRegistry{fail: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.DecodeRequest(context.Background(), b)
	if err == nil || errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "look up schema id 1: registry down") {
		t.Fatalf("got %v, want a retryable lookup error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cl, err := sr.NewClient(sr.URLs("http://127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	c2, err := NewCodec(ctx, cl, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.DecodeRequest(ctx, b); err == nil || errors.Is(err, ErrMalformed) {
		t.Fatalf("got %v, want a retryable error", err)
	}
}

// flakyRegistry fails while fail is set, then serves the schemas.
type flakyRegistry struct {
	fail  bool
	calls int
}

func (f *flakyRegistry) CreateSchema(context.Context, string, sr.Schema) (sr.SubjectSchema, error) {
	return sr.SubjectSchema{}, errors.New("read only")
}

func (f *flakyRegistry) SchemaByID(ctx context.Context, id int) (sr.Schema, error) {
	f.calls++
	if f.fail {
		return sr.Schema{}, errors.New("registry down")
	}
	return newMemRegistry().SchemaByID(ctx, id)
}

// Schemas looked up are cached, failures to reach the registry are not.
func TestWriterCache(t *testing.T) {
	enc, _ := newTestCodec(t)
	b, err := enc.EncodeRequest(topicRequests, fullRequest())
	if err != nil {
		t.Fatal(err)
	}
	reg := &flakyRegistry{fail: true}
	c, err := NewCodec(context.Background(), reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DecodeRequest(context.Background(), b); err == nil {
		t.Fatal("decoded with the registry down")
	}
	reg.fail = false
	for range 3 {
		if _, err := c.DecodeRequest(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	if reg.calls != 2 {
		t.Errorf("%d registry calls, want 2 (one failed, one cached)", reg.calls)
	}
}

func TestSchemaID(t *testing.T) {
	for _, tc := range []struct {
		b    []byte
		id   int
		want string
	}{
		{header(1), 1, ""},
		{append(header(1<<31-1), 1, 2, 3), 1<<31 - 1, ""},
		{[]byte{0, 0}, 0, "schemas: message of 2 bytes is shorter than the 5-byte header"},
		{[]byte{0xff, 0, 0, 0, 1}, 0, "schemas: magic byte 0xff, want 0x00 (not the Confluent wire format)"},
		{header(0), 0, "schemas: schema id 0 out of range"},
	} {
		id, err := SchemaID(tc.b)
		if tc.want == "" && (err != nil || id != tc.id) {
			t.Errorf("SchemaID(%x) = %d, %v; want %d", tc.b, id, err, tc.id)
		}
		if tc.want != "" && (err == nil || err.Error() != tc.want || !errors.Is(err, ErrMalformed)) {
			t.Errorf("SchemaID(%x) = %d, %v; want error %q", tc.b, id, err, tc.want)
		}
	}
}

func TestEveryKindDecodesOnlyItsOwn(t *testing.T) {
	c, _ := newTestCodec(t)
	ctx := context.Background()
	decoders := map[Kind]func([]byte) error{
		KindRequest:    func(b []byte) error { _, err := c.DecodeRequest(ctx, b); return err },
		KindResult:     func(b []byte) error { _, err := c.DecodeResult(ctx, b); return err },
		KindDeadLetter: func(b []byte) error { _, err := c.DecodeDeadLetter(ctx, b); return err },
		KindStateEntry: func(b []byte) error { _, err := c.DecodeStateEntry(ctx, b); return err },
		KindPressure:   func(b []byte) error { _, err := c.DecodePressure(ctx, b); return err },
	}
	for _, m := range fixtures() {
		b, err := m.encode(c)
		if err != nil {
			t.Fatal(err)
		}
		for k, dec := range decoders {
			err := dec(b)
			if (err == nil) != (k == m.kind) {
				t.Errorf("%s decoded as %s: %v", m.name, k, err)
			}
		}
	}
}

// Decoders are used from many goroutines; schemas looked up are shared.
func TestConcurrentDecode(t *testing.T) {
	enc, _ := newTestCodec(t)
	msgs := [][]byte{clientRequestMessage(t)}
	for _, m := range fixtures() {
		if m.kind != KindRequest {
			continue
		}
		b, err := m.encode(enc)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, b)
	}
	c, err := NewCodec(context.Background(), newMemRegistry(), nil) // every id looked up
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			for i := range 50 {
				if _, err := c.DecodeRequest(context.Background(), msgs[i%len(msgs)]); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
