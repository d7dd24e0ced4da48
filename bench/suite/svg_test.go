package suite

import (
	"encoding/xml"
	"math"
	"strings"
	"testing"
)

// A chart is well-formed XML whatever the data: empty series, unknown
// values, unanswered (+Inf) points, a log axis.
func TestChartWellFormed(t *testing.T) {
	for _, c := range []chart{
		{title: "empty"},
		{title: "p99 <&> rate", logY: true, hlines: []hline{{50, "L"}}, series: []series{
			{name: "a", pts: [][2]float64{{100, 10}, {200, math.Inf(1)}, {300, math.NaN()}}, marks: true},
			{name: "b", pts: [][2]float64{{100, 0}, {200, 20}}, dashed: true},
		}},
		{title: "linear", series: []series{{name: "one point", pts: [][2]float64{{1, 1}}}}},
	} {
		out := c.svg()
		d := xml.NewDecoder(strings.NewReader(string(out)))
		for {
			_, err := d.Token()
			if err != nil {
				if err.Error() != "EOF" {
					t.Errorf("%s: not well-formed: %v\n%s", c.title, err, out)
				}
				break
			}
		}
		if strings.Contains(string(out), "NaN") || strings.Contains(string(out), "Inf") {
			t.Errorf("%s: a NaN or Inf reached the SVG:\n%s", c.title, out)
		}
	}
}
