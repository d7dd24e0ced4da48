package schemas

import (
	"encoding/json"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/linkedin/goavro/v2"
)

// The schemas are a frozen contract with clients in every language. This
// test pins what a client sees (record and field names, their order, which
// fields are required) and the rules that keep evolution BACKWARD
// compatible: everything but the identifying fields has a default, optional
// values are ["null", T] unions defaulting to null, and everything has a doc.
func TestSchemaContract(t *testing.T) {
	want := map[string][]string{
		"asyncinfer.Request": {"request_id", "idempotency_key", "tenant", "model", "model_version", "inputs",
			"parameters", "priority", "deadline_ms", "reply_topic", "created_at_ms"},
		"asyncinfer.Tensor": {"name", "datatype", "shape", "fp32_contents", "fp64_contents", "int_contents",
			"int64_contents", "bool_contents", "bytes_contents", "raw_contents"},
		"asyncinfer.Result": {"request_id", "idempotency_key", "tenant", "status", "reason", "error_code",
			"error_message", "retry_after_ms", "original_request_id", "original_status", "attempt", "outputs",
			"model", "model_version", "batch_size", "timings", "reply_topic", "created_at_ms", "completed_at_ms"},
		"asyncinfer.Timings": {"queued_ms", "batch_wait_ms", "inference_ms", "end_to_end_ms"},
		"asyncinfer.DeadLetter": {"reason", "error", "stage", "source_topic", "source_partition", "source_offset",
			"request_id", "answered", "payload", "payload_size", "payload_sha256", "truncated", "at_ms"},
		"asyncinfer.StateEntry": {"key", "request_id", "status", "expires_at_ms", "more"},
		"asyncinfer.StateItem":  {"key", "request_id", "status", "expires_at_ms"},
		"asyncinfer.Pressure": {"source", "model", "lane", "min_priority", "instance", "status", "at_ms",
			"interval_ms", "predicted_wait_ms", "retry_after_ms", "shed_fraction", "capacity_per_second",
			"backlog", "running", "fixed_ms", "per_item_ms", "batch", "batch_limit", "batch_measured"},
	}
	required := map[string]bool{
		"asyncinfer.Request.request_id": true, "asyncinfer.Request.model": true,
		"asyncinfer.Tensor.name": true, "asyncinfer.Tensor.datatype": true, "asyncinfer.Tensor.shape": true,
		"asyncinfer.Result.request_id": true, "asyncinfer.Result.status": true,
		"asyncinfer.DeadLetter.reason": true,
		"asyncinfer.StateEntry.key":    true, "asyncinfer.StateEntry.request_id": true,
		"asyncinfer.StateItem.key": true, "asyncinfer.StateItem.request_id": true,
		"asyncinfer.Pressure.source": true, "asyncinfer.Pressure.model": true,
	}
	snake := regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

	seen := map[string][]string{}
	defs := map[string][]string{} // named type -> its JSON in each file
	for _, k := range []Kind{KindRequest, KindResult, KindDeadLetter, KindStateEntry, KindPressure} {
		text := Schema(k)
		if _, err := goavro.NewCodec(text); err != nil {
			t.Fatalf("%s: goavro: %v", k, err)
		}
		var doc map[string]any
		if err := json.Unmarshal([]byte(text), &doc); err != nil {
			t.Fatal(err)
		}
		if name := doc["namespace"].(string) + "." + doc["name"].(string); name != "asyncinfer."+k.recordName() {
			t.Errorf("%s: top-level record %s", k, name)
		}
		var walk func(v any)
		walk = func(v any) {
			switch v := v.(type) {
			case []any:
				for _, e := range v {
					walk(e)
				}
			case map[string]any:
				typ, _ := v["type"].(string)
				if typ != "record" && typ != "enum" {
					walk(v["type"])
					walk(v["items"])
					walk(v["values"])
					return
				}
				name := v["namespace"].(string) + "." + v["name"].(string)
				js, _ := json.Marshal(v)
				defs[name] = append(defs[name], string(js))
				if doc, _ := v["doc"].(string); doc == "" {
					t.Errorf("%s has no doc", name)
				}
				if typ == "enum" {
					return
				}
				var names []string
				for _, f := range v["fields"].([]any) {
					f := f.(map[string]any)
					fname := f["name"].(string)
					full := name + "." + fname
					names = append(names, fname)
					if !snake.MatchString(fname) {
						t.Errorf("%s is not snake_case", full)
					}
					if doc, _ := f["doc"].(string); doc == "" {
						t.Errorf("%s has no doc", full)
					}
					def, hasDefault := f["default"]
					if hasDefault == required[full] {
						t.Errorf("%s: has default %v, want %v", full, hasDefault, !required[full])
					}
					if u, ok := f["type"].([]any); ok && (u[0] != "null" || def != nil || !hasDefault) {
						t.Errorf("%s: a union must be [\"null\", T] with default null", full)
					}
					walk(f["type"])
				}
				seen[name] = names
			}
		}
		walk(doc)
	}
	if !reflect.DeepEqual(seen, want) {
		t.Errorf("records and fields\n%v\nwant\n%v", seen, want)
	}
	// Types defined in more than one file must be defined alike, or clients
	// would see two versions of one name.
	for name, js := range defs {
		for _, j := range js[1:] {
			if j != js[0] {
				t.Errorf("%s is defined differently in two schemas", name)
			}
		}
	}
	if n := len(defs["asyncinfer.Tensor"]); n != 2 {
		t.Errorf("Tensor defined %d times, want 2 (request, result)", n)
	}
	if n := len(defs["asyncinfer.Status"]); n != 2 {
		t.Errorf("Status defined %d times, want 2 (result, state entry)", n)
	}
	if !strings.Contains(Schema(KindResult), `"symbols": ["SUCCEEDED", "FAILED", "EXPIRED", "REJECTED", "DUPLICATE"]`) {
		t.Error("Status symbols changed")
	}
	if Schema(0) != "" || Schema(KindPressure+1) != "" {
		t.Error("Schema of an unknown kind is not empty")
	}
}
