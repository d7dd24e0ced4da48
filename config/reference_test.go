package config

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the configuration reference in README.md")

const (
	readme   = "../README.md"
	refBegin = "<!-- BEGIN config reference: generated from package config; go test ./config -run Reference -update -->\n"
	refEnd   = "<!-- END config reference -->"
)

// The README's configuration reference is Reference(), so it cannot drift
// from the struct.
func TestReferenceInREADME(t *testing.T) {
	b, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i, j := strings.Index(s, refBegin), strings.Index(s, refEnd)
	if i < 0 || j < i {
		t.Fatalf("%s has no %q … %q section", readme, strings.TrimSpace(refBegin), refEnd)
	}
	got, want := s[i+len(refBegin):j], Reference()
	if got == want {
		return
	}
	if *update {
		if err := os.WriteFile(readme, []byte(s[:i+len(refBegin)]+want+s[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s's configuration reference is out of date: go test ./config -run Reference -update", readme)
}
