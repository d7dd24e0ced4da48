package config

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Masked is what a secret prints as.
const Masked = "<masked>"

// Print renders the configuration as YAML, with secrets masked, as the file
// that would reproduce it (secrets aside).
func Print(c *Config) ([]byte, error) {
	cp := *c
	for _, s := range settings(reflect.ValueOf(&cp).Elem(), "") {
		if s.Secret && s.v.String() != "" {
			s.v.SetString(Masked)
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
	b.WriteString("\nModels are a list, set in the file only (`models:`); when none is configured, one simulated model named `sim` is served. Each entry:\n\n")
	b.WriteString("| setting | default | meaning |\n|---|---|---|\n")
	m := ModelDefaults(Model{})
	for _, s := range settings(reflect.ValueOf(&m).Elem(), "") {
		val := s.format()
		if val == "" || val == "0s" && s.Path != "max_wait" {
			val = "—"
		} else {
			val = "`" + val + "`"
		}
		fmt.Fprintf(&b, "| `models[].%s` | %s | %s |\n", s.Path, val, s.Doc)
	}
	return b.String()
}
