package client

import (
	"os/exec"
	"strings"
	"testing"
)

// Applications import this package: it must not pull the pipeline's runtime
// (Prometheus, the stages) into them.
func TestDependenciesStayLight(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		// go test runs with the go command at hand: a test that cannot
		// list the dependencies must not pass as if it had checked them.
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/prometheus/", "github.com/asyncinfer/asyncinfer/pipeline", "github.com/asyncinfer/asyncinfer/stages/"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("package client depends on %s", dep)
			}
		}
	}
}
