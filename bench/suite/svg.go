package suite

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"strconv"
)

// series is one line (or set of markers) of a chart.
type series struct {
	name   string
	pts    [][2]float64 // x, y; NaN skipped, +Inf y drawn at the top of the chart
	dashed bool
	marks  bool // a marker at each point
	noLine bool
}

// hline is a horizontal reference line (the objective, X*).
type hline struct {
	y     float64
	label string
}

// chart is a line chart the harness writes itself as SVG: no external
// tool, and every point in it is the report's.
type chart struct {
	title, xlabel, ylabel string
	logY                  bool
	series                []series
	hlines                []hline
	yMax                  float64 // 0: from the data
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"}

const (
	svgW, svgH                   = 780, 440
	padL, padR, padT, padB       = 70, 200, 40, 50
	plotW, plotH                 = svgW - padL - padR, svgH - padT - padB
	legendX                      = svgW - padR + 15
	fontAttr                     = `font-family="sans-serif" font-size="12"`
	markerR                      = 3
	maxLegend                    = 12
	clipID                       = "plot"
	tickLen                      = 4
	gridColour                   = "#e5e5e5"
	axisColour                   = "#333"
	infLabel                     = "≥ top: no answer"
	defaultLogMin, defaultLogMax = 1.0, 1000.0
)

// bounds are the data's x and y ranges (finite points only).
func (c chart) bounds() (x0, x1, y0, y1 float64, anyInf bool) {
	x0, y0 = math.Inf(1), math.Inf(1)
	x1, y1 = math.Inf(-1), math.Inf(-1)
	for _, s := range c.series {
		for _, p := range s.pts {
			if math.IsNaN(p[0]) || math.IsNaN(p[1]) || math.IsInf(p[0], 0) {
				continue
			}
			x0, x1 = math.Min(x0, p[0]), math.Max(x1, p[0])
			if math.IsInf(p[1], 1) {
				anyInf = true
				continue
			}
			if c.logY && p[1] <= 0 {
				continue
			}
			y0, y1 = math.Min(y0, p[1]), math.Max(y1, p[1])
		}
	}
	for _, h := range c.hlines {
		y0, y1 = math.Min(y0, h.y), math.Max(y1, h.y)
	}
	if math.IsInf(x0, 1) {
		x0, x1 = 0, 1
	}
	if x1 == x0 {
		x1 = x0 + 1
	}
	if math.IsInf(y0, 1) {
		y0, y1 = 0, 1
	}
	if c.yMax > 0 {
		y1 = c.yMax
	}
	return x0, x1, y0, y1, anyInf
}

// niceStep is a 1, 2 or 5 × 10^k step giving about n ticks over span.
func niceStep(span float64, n int) float64 {
	raw := span / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func tickLabel(v float64) string {
	if v == 0 {
		return "0"
	}
	if math.Abs(v) >= 1000 {
		return fmtNum(v)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

func (c chart) svg() []byte {
	x0, x1, y0, y1, anyInf := c.bounds()
	if x0 > 0 && x0 < 0.3*x1 {
		x0 = 0
	}
	var ly0, ly1 float64
	if c.logY {
		if y0 <= 0 || math.IsInf(y0, 0) {
			y0 = defaultLogMin
		}
		ly0, ly1 = math.Floor(math.Log10(y0)), math.Ceil(math.Log10(math.Max(y1, y0*10)))
	} else {
		if y0 > 0 {
			y0 = 0
		}
		st := niceStep(y1-y0, 5)
		y1 = math.Ceil(y1/st) * st
		if y1 == y0 {
			y1 = y0 + 1
		}
	}
	xs := func(x float64) float64 { return padL + (x-x0)/(x1-x0)*plotW }
	ys := func(y float64) float64 {
		if math.IsInf(y, 1) {
			return padT
		}
		if c.logY {
			if y <= 0 {
				return padT + plotH
			}
			f := (math.Log10(y) - ly0) / (ly1 - ly0)
			return padT + plotH - math.Max(0, math.Min(1, f))*plotH
		}
		f := (y - y0) / (y1 - y0)
		return padT + plotH - math.Max(0, math.Min(1, f))*plotH
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" %s>`+"\n", svgW, svgH, svgW, svgH, fontAttr)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", svgW, svgH)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="14" font-weight="bold">%s</text>`+"\n", padL, html.EscapeString(c.title))
	fmt.Fprintf(&b, `<clipPath id="%s"><rect x="%d" y="%d" width="%d" height="%d"/></clipPath>`+"\n", clipID, padL, padT-markerR, plotW, plotH+2*markerR)

	// Grid and ticks.
	xst := niceStep(x1-x0, 6)
	for v := math.Ceil(x0/xst) * xst; v <= x1+1e-9*xst; v += xst {
		x := xs(v)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s"/>`+"\n", x, padT, x, padT+plotH, gridColour)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, padT+plotH+16, tickLabel(v))
	}
	if c.logY {
		for d := ly0; d <= ly1; d++ {
			for _, m := range []float64{1, 2, 5} {
				v := m * math.Pow(10, d)
				if math.Log10(v) > ly1+1e-9 {
					break
				}
				y := ys(v)
				colour := gridColour
				if m == 1 {
					colour = "#cccccc"
				}
				fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", padL, y, padL+plotW, y, colour)
				fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", padL-6, y+4, tickLabel(v))
			}
		}
	} else {
		yst := niceStep(y1-y0, 5)
		for v := math.Ceil(y0/yst) * yst; v <= y1+1e-9*yst; v += yst {
			y := ys(v)
			fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", padL, y, padL+plotW, y, gridColour)
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", padL-6, y+4, tickLabel(v))
		}
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="%s"/>`+"\n", padL, padT, plotW, plotH, axisColour)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", padL+plotW/2, svgH-12, html.EscapeString(c.xlabel))
	fmt.Fprintf(&b, `<text transform="translate(16,%d) rotate(-90)" text-anchor="middle">%s</text>`+"\n", padT+plotH/2, html.EscapeString(c.ylabel))

	for _, h := range c.hlines {
		y := ys(h.y)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#000" stroke-dasharray="2,3"/>`+"\n", padL, y, padL+plotW, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" fill="#000">%s</text>`+"\n", padL+plotW-4, y-4, html.EscapeString(h.label))
	}

	// Series.
	for i, s := range c.series {
		colour := palette[i%len(palette)]
		var path bytes.Buffer
		for _, p := range s.pts {
			if math.IsNaN(p[0]) || math.IsNaN(p[1]) || (c.logY && p[1] <= 0) {
				continue
			}
			cmd := "L"
			if path.Len() == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&path, "%s%.1f,%.1f ", cmd, xs(p[0]), ys(p[1]))
		}
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="6,4"`
		}
		if !s.noLine && path.Len() > 0 {
			fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="1.8"%s clip-path="url(#%s)"/>`+"\n", bytes.TrimSpace(path.Bytes()), colour, dash, clipID)
		}
		if s.marks {
			for _, p := range s.pts {
				if math.IsNaN(p[0]) || math.IsNaN(p[1]) || (c.logY && p[1] <= 0) {
					continue
				}
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="%d" fill="%s"/>`+"\n", xs(p[0]), ys(p[1]), markerR, colour)
			}
		}
		if i < maxLegend {
			ly := padT + 10 + i*18
			if s.noLine {
				fmt.Fprintf(&b, `<circle cx="%d" cy="%d" r="%d" fill="%s"/>`+"\n", legendX+10, ly, markerR, colour)
			} else {
				fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", legendX, ly, legendX+20, ly, colour, dash)
			}
			fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", legendX+26, ly+4, html.EscapeString(s.name))
		}
	}
	if anyInf {
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#555">%s</text>`+"\n", legendX, padT+plotH, html.EscapeString(infLabel))
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}
