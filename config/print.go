package config

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Masked is what a secret prints as.
const Masked = "<masked>"

// Print renders the configuration as YAML, with secrets masked, as the file
// that would reproduce it (secrets aside).
func Print(c *Config) ([]byte, error) {
	cp := *c
	cp.Models = slices.Clone(c.Models) // masked below: not the caller's
	cp.Lanes = slices.Clone(c.Lanes)
	vs := []reflect.Value{reflect.ValueOf(&cp).Elem()}
	for i := range cp.Models {
		vs = append(vs, reflect.ValueOf(&cp.Models[i]).Elem())
	}
	for _, v := range vs {
		for _, s := range settings(v, "") {
			if s.Secret && s.v.String() != "" {
				s.v.SetString(Masked)
			}
		}
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&cp); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Reference renders the configuration reference as Markdown: every setting
// with its environment variable, flag, default and meaning, generated from
// the struct.
func Reference() string {
	var b strings.Builder
	def := Defaults()
	b.WriteString("| setting | environment / flag | default | meaning |\n|---|---|---|---|\n")
	for _, s := range Settings(&def) {
		val := s.Value
		if val == "" {
			val = "—"
		} else {
			val = "`" + val + "`"
		}
		doc := s.Doc
		if s.Secret {
			doc += " (secret: masked by config print)"
		}
		fmt.Fprintf(&b, "| `%s` | `%s` `--%s` | %s | %s |\n", s.Path, s.Env, s.Flag, val, doc)
	}
	b.WriteString("\nModels are a list, set in the file only (`models:`); when none is configured, one simulated model named `sim` is served, costing 5 ms a call and 0.25 ms an item, with a latency objective of 100 ms (so it is batched adaptively) and batches of up to 256. A configured sim model costs what it says (a `fixed` and `per_item` of 0 cost nothing). Each entry:\n\n")
	b.WriteString("| setting | default | meaning |\n|---|---|---|\n")
	m := ModelDefaults(Model{})
	m.OIP = ModelDefaults(Model{Backend: "oip"}).OIP // the oip block's defaults, which apply with backend oip
	m.OIP.ModelName = ""                             // its default is the model's name, as its doc says
	m.Batching = ""                                  // its default depends on latency_objective, as its doc says
	m.Admission = ""                                 // likewise
	for _, s := range settings(reflect.ValueOf(&m).Elem(), "") {
		val := s.format()
		if val == "" || val == "0s" && s.Path != "max_wait" {
			val = "—"
		} else {
			val = "`" + val + "`"
		}
		doc := s.Doc
		if s.Secret {
			doc += " (secret: masked by config print)"
		}
		fmt.Fprintf(&b, "| `models[].%s` | %s | %s |\n", s.Path, val, doc)
	}
	if f, ok := reflect.TypeOf(OIP{}).FieldByName("Inputs"); ok {
		fmt.Fprintf(&b, "| `models[].oip.inputs` | — | %s, e.g. `[{name: input-0, datatype: FP64, shape: [-1, 4]}]` |\n", f.Tag.Get("doc"))
	}
	b.WriteString("\nLanes are a list, set in the file only (`lanes:`), from the highest; the default is ")
	for i, l := range DefaultLanes {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "`{name: %s, min_priority: %d, wait_fraction: %v}`", l.Name, l.MinPriority, l.WaitFraction)
	}
	b.WriteString(" (a request's priority is 0 unless it says otherwise). Each lane is a topic of its own (`topics create` makes them). Each entry:\n\n")
	b.WriteString("| setting | meaning |\n|---|---|\n")
	for _, s := range settings(reflect.ValueOf(&Lane{}).Elem(), "") {
		fmt.Fprintf(&b, "| `lanes[].%s` | %s |\n", s.Path, s.Doc)
	}
	return b.String()
}
