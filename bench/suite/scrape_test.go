package suite

import (
	"math"
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	page := `# HELP go_memstats_mallocs_total Total number of heap objects allocated.
# TYPE go_memstats_mallocs_total counter
go_memstats_mallocs_total 1.234e+06
asyncinfer_batch_size_sum{model="sim"} 640
asyncinfer_batch_size_sum{model="other"} 10
asyncinfer_batch_size_count{model="sim"} 10
asyncinfer_dead_letters_total{reason="odd value, with spaces",stage="dedup"} 3
asyncinfer_batch_size_bucket{model="sim",le="+Inf"} 10
`
	m, err := parseMetrics(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		match []string
		want  float64
	}{
		{"go_memstats_mallocs_total", nil, 1.234e6},
		{"asyncinfer_batch_size_sum", nil, 650},
		{"asyncinfer_batch_size_sum", []string{`model="sim"`}, 640},
		{"asyncinfer_batch_size_count", nil, 10}, // not the _bucket series
		{"asyncinfer_batch_size", nil, nan},      // a prefix of other names is not a match
		{"asyncinfer_dead_letters_total", []string{`stage="dedup"`}, 3},
		{"absent_total", nil, nan},
	} {
		got := m.sum(c.name, c.match...)
		if got != c.want && !(math.IsNaN(got) && math.IsNaN(c.want)) {
			t.Errorf("sum(%s, %v) = %v, want %v", c.name, c.match, got, c.want)
		}
	}
}
