package bench

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Chart geometry, in SVG user units (pixels).
const (
	chartW, chartH                         = 720, 420
	marginL, marginR, marginT, marginB     = 80, 160, 64, 60
	plotW, plotH                           = chartW - marginL - marginR, chartH - marginT - marginB
	yTicks                                 = 5 // about how many grid lines
	legendX, legendY, legendRow, markerRad = chartW - marginR + 20, marginT + 10, 22, 4
)

// seriesColor gives each target the same colour in every chart.
var seriesColor = map[string]string{
	TargetPgtenant:  "#1f77b4",
	TargetPgbouncer: "#ff7f0e",
	TargetDirect:    "#2ca02c",
}

// chartSVG draws scenario 1 (pgbench -S simple) as tps by clients, one
// line per target, with the x axis evenly spaced by client count.
func (r *Report) chartSVG() string {
	series := map[string]map[int]float64{}
	var clients []int
	for _, res := range r.Results {
		if res.Scenario != "select" || res.OKRounds == 0 {
			continue
		}
		if series[res.Target] == nil {
			series[res.Target] = map[int]float64{}
		}
		series[res.Target][res.Clients] = res.Median
		if !slices.Contains(clients, res.Clients) {
			clients = append(clients, res.Clients)
		}
	}
	slices.Sort(clients)
	top := 0.0
	for _, s := range series {
		for _, v := range s {
			top = max(top, v)
		}
	}
	// Ticks every nice step (1, 2, 2.5 or 5 times a power of ten), about
	// yTicks of them, the axis ending at the first tick above the top.
	step := niceCeil(top * 1.1 / yTicks)
	ticks := max(1, int(math.Ceil(top*1.1/step)))
	yMax := step * float64(ticks)

	var b bytes.Buffer
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		chartW, chartH, chartW, chartH)
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%d" height="%d" fill="white"/>`+"\n", chartW, chartH)
	title := fmt.Sprintf("pgbench -S (simple protocol), pool size %d: tps by clients (median of %d rounds)", r.Config.PoolSize, r.Config.Rounds)
	fmt.Fprintf(&b, `<text x="%d" y="25" font-size="14" font-weight="bold">%s</text>`+"\n", marginL-60, esc(title))
	m := r.Machine
	sub := fmt.Sprintf("%s, %d cores; %s, %s; %d s per run", m.CPU, m.Cores, m.PostgreSQL, m.PgBouncer, r.Config.DurationSec)
	fmt.Fprintf(&b, `<text x="%d" y="44" font-size="11" fill="#555">%s</text>`+"\n", marginL-60, esc(sub))

	x := func(i int) float64 {
		if len(clients) <= 1 {
			return marginL + plotW/2
		}
		return marginL + float64(i)*plotW/float64(len(clients)-1)
	}
	y := func(v float64) float64 { return marginT + plotH - v/yMax*plotH }

	// Grid and y axis labels.
	for i := 0; i <= ticks; i++ {
		v := step * float64(i)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", marginL, y(v), marginL+plotW, y(v))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", marginL-8, y(v)+4, esc(shortNumber(v)))
	}
	// Axes.
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", marginL, marginT, marginL, marginT+plotH)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", marginL, marginT+plotH, marginL+plotW, marginT+plotH)
	for i, c := range clients {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black"/>`+"\n", x(i), marginT+plotH, x(i), marginT+plotH+5)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n", x(i), marginT+plotH+20, c)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">clients</text>`+"\n", marginL+plotW/2, chartH-15)
	fmt.Fprintf(&b, `<text x="20" y="%d" text-anchor="middle" transform="rotate(-90 20 %d)">transactions per second</text>`+"\n",
		marginT+plotH/2, marginT+plotH/2)
	if len(clients) == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">no data</text>`+"\n", marginL+plotW/2, marginT+plotH/2)
	}

	// One line per target, then the legend.
	row := 0
	for _, t := range targetOrder {
		s, ok := series[t]
		if !ok {
			continue
		}
		color := seriesColor[t]
		if color == "" {
			color = "#7f7f7f"
		}
		var pts []string
		for i, c := range clients {
			if v, ok := s[c]; ok {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(v)))
			}
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", color, strings.Join(pts, " "))
		for i, c := range clients {
			if v, ok := s[c]; ok {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="%d" fill="%s"><title>%s</title></circle>`+"\n",
					x(i), y(v), markerRad, color, esc(fmt.Sprintf("%s, %d clients: %.0f tps", t, c, v)))
			}
		}
		ly := legendY + row*legendRow
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>`+"\n", legendX, ly, legendX+24, ly, color)
		fmt.Fprintf(&b, `<circle cx="%d" cy="%d" r="%d" fill="%s"/>`+"\n", legendX+12, ly, markerRad, color)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", legendX+32, ly+4, esc(t))
		row++
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// esc escapes s for XML text and attribute values.
func esc(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (1 for v ≤ 0).
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// shortNumber prints an axis label: 12000 as 12k.
func shortNumber(v float64) string {
	switch {
	case v >= 1e6:
		return strings.TrimSuffix(fmt.Sprintf("%.1f", v/1e6), ".0") + "M"
	case v >= 1e3:
		return strings.TrimSuffix(fmt.Sprintf("%.1f", v/1e3), ".0") + "k"
	}
	return fmt.Sprintf("%.0f", v)
}
