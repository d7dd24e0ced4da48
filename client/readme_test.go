package client

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var updateREADME = flag.Bool("update", false, "rewrite the README's Python code from client/python")

const readme = "../README.md"

// A README code block shown from the example: the marker names the file and
// the region, and the fenced block that follows must be that region.
var readmeSnippet = regexp.MustCompile("(?s)<!-- (client/python/[a-z_]+\\.py): ([a-z]+) -->\n```python\n(.*?)```\n")

// A region of an example file: the lines between "# README: name" and
// "# README: end".
var pyRegion = regexp.MustCompile(`(?ms)^# README: ([a-z]+)\n(.*?)^# README: end\n`)

// The README's Python code is the tested example's (TestPythonClient runs
// it), so that what a reader copies is what works; every region the
// example marks is shown.
func TestPythonInREADME(t *testing.T) {
	b, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	regions := map[string]string{} // "client/python/produce.py: producer" -> code
	files, err := filepath.Glob("python/*.py")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range pyRegion.FindAllStringSubmatch(string(src), -1) {
			regions[fmt.Sprintf("client/%s: %s", filepath.ToSlash(f), m[1])] = m[2]
		}
	}
	if len(regions) == 0 {
		t.Fatal("no # README: regions in client/python/*.py")
	}

	shown := map[string]bool{}
	stale := false
	doc = readmeSnippet.ReplaceAllStringFunc(doc, func(block string) string {
		m := readmeSnippet.FindStringSubmatch(block)
		name := m[1] + ": " + m[2]
		want, ok := regions[name]
		if !ok {
			t.Errorf("%s shows %s, which has no such region", readme, name)
			return block
		}
		shown[name] = true
		if m[3] == want {
			return block
		}
		stale = true
		return strings.Replace(block, "```python\n"+m[3], "```python\n"+want, 1)
	})
	for name := range regions {
		if !shown[name] {
			t.Errorf("%s does not show %s: add <!-- %s --> and a python block", readme, name, name)
		}
	}
	switch {
	case !stale:
	case *updateREADME:
		if err := os.WriteFile(readme, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	default:
		t.Errorf("%s's Python code differs from client/python: go test ./client -run PythonInREADME -update", readme)
	}
}
