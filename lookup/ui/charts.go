package ui

import (
	"fmt"
	"html/template"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/dist"
)

// The charts are computed here, as numbers and strings, and drawn by the templates as
// inline SVG: a template never builds markup from data, so html/template escapes every
// label, in <title> and aria-label too.

// Chart geometry, in SVG user units (the SVG scales to its box).
const (
	chartW, chartH = 480.0, 200.0
	padL, padR     = 44.0, 8.0
	padT, padB     = 10.0, 28.0
)

// histChart is one output's distribution, one version's 20 bins against another's.
type histChart struct {
	Output      string
	Series      []histSeries // 1 or 2: the reference (filled) and the other (outlined)
	PSI         string       // of the second series against the first's deciles; "" when none
	Label       string       // for aria-label
	Ticks       []tick
	YTicks      []tick
	W, H        float64
	Left, Right float64 // plot area, x
	Top, Bottom float64 // plot area, y
}

type histSeries struct {
	Name  string
	Class string // ref | other
	Bars  []bar
	Count int64
}

type bar struct {
	X, Y, W, H float64
	Lo, Hi     float64
	Count      int64
	Share      float64
}

type tick struct {
	Pos   float64
	Label string
}

// histCharts draws, for each output of ref, ref's histogram and other's (when other has
// that output), with the PSI of other's shares over ref's deciles.
func histCharts(ref, other *writers.Manifest, refName, otherName string) []histChart {
	var out []histChart
	for _, d := range ref.Distributions {
		ds := []writers.Distribution{d}
		names := []string{refName}
		if other != nil {
			for _, o := range other.Distributions {
				if o.Output == d.Output {
					ds, names = append(ds, o), append(names, otherName)
				}
			}
		}
		c, ok := histChartOf(d.Output, ds, names)
		if ok {
			out = append(out, c)
		}
	}
	return out
}

func histChartOf(output string, ds []writers.Distribution, names []string) (histChart, bool) {
	c := histChart{Output: output, W: chartW, H: chartH, Left: padL, Right: chartW - padR, Top: padT, Bottom: chartH - padB}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, d := range ds {
		e := d.Histogram.Edges
		if len(e) < 2 || len(d.Histogram.Counts) != len(e)-1 {
			return c, false
		}
		lo, hi = math.Min(lo, e[0]), math.Max(hi, e[len(e)-1])
	}
	if !(hi > lo) || math.IsInf(lo, 0) || math.IsInf(hi, 0) {
		lo, hi = lo-0.5, lo+0.5
	}
	span := hi - lo
	// Heights are densities (share per unit of x), so versions with other bin edges compare.
	density := func(d writers.Distribution, i int, total int64) float64 {
		w := math.Max(d.Histogram.Edges[i+1]-d.Histogram.Edges[i], span/200)
		return float64(d.Histogram.Counts[i]) / float64(total) / w
	}
	maxD := 0.0
	totals := make([]int64, len(ds))
	for k, d := range ds {
		for _, n := range d.Histogram.Counts {
			totals[k] += n
		}
		if totals[k] == 0 {
			continue
		}
		for i := range d.Histogram.Counts {
			maxD = math.Max(maxD, density(d, i, totals[k]))
		}
	}
	if maxD == 0 {
		maxD = 1
	}
	x := func(v float64) float64 { return c.Left + (v-lo)/span*(c.Right-c.Left) }
	y := func(v float64) float64 { return c.Bottom - v/maxD*(c.Bottom-c.Top) }
	for k, d := range ds {
		s := histSeries{Name: names[k], Class: "ref", Count: totals[k]}
		if k > 0 {
			s.Class = "other"
		}
		for i, n := range d.Histogram.Counts {
			b := bar{Lo: d.Histogram.Edges[i], Hi: d.Histogram.Edges[i+1], Count: n}
			b.X = x(b.Lo)
			b.W = math.Max(x(b.Hi)-b.X, 1)
			if totals[k] > 0 {
				b.Share = float64(n) / float64(totals[k])
				b.Y = y(density(d, i, totals[k]))
			} else {
				b.Y = c.Bottom
			}
			b.H = c.Bottom - b.Y
			s.Bars = append(s.Bars, b)
		}
		c.Series = append(c.Series, s)
	}
	for i := 0; i <= 4; i++ {
		v := lo + span*float64(i)/4
		c.Ticks = append(c.Ticks, tick{Pos: x(v), Label: num(v)})
	}
	c.YTicks = []tick{{Pos: c.Bottom, Label: "0"}, {Pos: c.Top, Label: "max"}}
	if len(ds) == 2 {
		if edges := dist.Deciles(ds[0]); edges != nil {
			if shares := dist.SharesOver(ds[1], edges); shares != nil {
				if p := dist.PSIOfShares(dist.DecileShares(), shares); !math.IsNaN(p) {
					c.PSI = strconv.FormatFloat(p, 'f', 4, 64)
				}
			}
		}
	}
	var parts []string
	for _, s := range c.Series {
		parts = append(parts, fmt.Sprintf("%s (%d values)", s.Name, s.Count))
	}
	c.Label = fmt.Sprintf("Histogram of output %s, %d bins: %s", output, writers.DistributionBins, strings.Join(parts, " against "))
	if c.PSI != "" {
		c.Label += ", PSI " + c.PSI
	}
	return c, true
}

// releaseView is a release with its charts.
type releaseView struct {
	*Release
	Active bool
	Weight lineChart
	Arms   armChart
	Rates  [2]armRates
}

type armRates struct {
	Name                    string
	Requests                int64
	NotFound, Errors        int64
	NotFoundPct, ErrorsPct  string
	NotFoundRate, ErrorRate float64
}

// lineChart is the weight over time, a step line from the history.
type lineChart struct {
	Points      []point
	Path        string // SVG path data: numbers only
	Label       string
	XTicks      []tick
	YTicks      []tick
	W, H        float64
	Left, Right float64
	Top, Bottom float64
}

type point struct {
	X, Y    float64
	At      time.Time
	Weight  float64
	Outcome string
	Reason  string
	Class   string // outcome class: pass | fail | hold | other
}

// armChart is requests per arm and the not-found and error rates per arm.
type armChart struct {
	Bars        []armBar
	Label       string
	W, H        float64
	Left, Right float64
	Top, Bottom float64
	Groups      []tick
}

type armBar struct {
	X, Y, W, H float64
	Class      string // live | candidate
	Title      string
}

func newReleaseView(r *Release, now time.Time) *releaseView {
	v := &releaseView{Release: r, Active: active(r)}
	end := now
	if !v.Active && !r.UpdatedAt.IsZero() {
		end = r.UpdatedAt
	}
	v.Weight = weightChart(r, end)
	names := [2]string{"live", "candidate"}
	for i, a := range r.Arms {
		ar := armRates{Name: names[i], Requests: a.Requests, NotFound: a.NotFound, Errors: a.Errors, NotFoundPct: "–", ErrorsPct: "–"}
		if a.Requests > 0 {
			ar.NotFoundRate = float64(a.NotFound) / float64(a.Requests)
			ar.ErrorRate = float64(a.Errors) / float64(a.Requests)
			ar.NotFoundPct = pct(ar.NotFoundRate)
			ar.ErrorsPct = pct(ar.ErrorRate)
		}
		v.Rates[i] = ar
	}
	v.Arms = armsChart(v.Rates)
	return v
}

func weightChart(r *Release, end time.Time) lineChart {
	c := lineChart{W: chartW, H: chartH, Left: padL, Right: chartW - padR, Top: padT, Bottom: chartH - padB}
	start := r.StartedAt
	if len(r.History) > 0 && r.History[0].At.Before(start) {
		start = r.History[0].At
	}
	if !end.After(start) {
		end = start.Add(time.Second)
	}
	span := end.Sub(start).Seconds()
	x := func(t time.Time) float64 { return c.Left + t.Sub(start).Seconds()/span*(c.Right-c.Left) }
	y := func(w float64) float64 { return c.Bottom - w/100*(c.Bottom-c.Top) }
	var b strings.Builder
	last := math.NaN()
	for _, j := range r.History {
		p := point{X: x(j.At), Y: y(j.Weight), At: j.At, Weight: j.Weight, Outcome: j.Outcome, Reason: j.Reason, Class: outcomeClass(j.Outcome)}
		if b.Len() == 0 {
			fmt.Fprintf(&b, "M%.1f %.1f", p.X, p.Y)
		} else {
			fmt.Fprintf(&b, " H%.1f V%.1f", p.X, p.Y)
		}
		last = j.Weight
		c.Points = append(c.Points, p)
	}
	if b.Len() == 0 {
		last = r.WeightPercent
		fmt.Fprintf(&b, "M%.1f %.1f", x(start), y(last))
	}
	fmt.Fprintf(&b, " H%.1f", x(end))
	c.Path = b.String()
	for _, w := range []float64{0, 50, 100} {
		c.YTicks = append(c.YTicks, tick{Pos: y(w), Label: strconv.Itoa(int(w)) + "%"})
	}
	c.XTicks = []tick{{Pos: c.Left, Label: start.UTC().Format("01-02 15:04")}, {Pos: c.Right, Label: end.UTC().Format("01-02 15:04")}}
	c.Label = fmt.Sprintf("Candidate weight over time, from %s to %s: %d decisions, now %s%%",
		start.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339), len(r.History), num(r.WeightPercent))
	return c
}

func outcomeClass(o string) string {
	switch o {
	case "pass", "promote", "step":
		return "pass"
	case "fail", "abort":
		return "fail"
	case "hold", "pause":
		return "hold"
	}
	return "other"
}

// armsChart: three groups (requests, not found %, errors %), a bar per arm, each group
// on its own scale.
func armsChart(rates [2]armRates) armChart {
	c := armChart{W: chartW, H: chartH, Left: padL, Right: chartW - padR, Top: padT, Bottom: chartH - padB}
	groups := []struct {
		name string
		val  func(a armRates) (float64, string)
	}{
		{"requests", func(a armRates) (float64, string) { return float64(a.Requests), strconv.FormatInt(a.Requests, 10) }},
		{"not found", func(a armRates) (float64, string) { return a.NotFoundRate, a.NotFoundPct }},
		{"errors", func(a armRates) (float64, string) { return a.ErrorRate, a.ErrorsPct }},
	}
	gw := (c.Right - c.Left) / float64(len(groups))
	bw := gw / 3
	var label []string
	for g, grp := range groups {
		maxV := 0.0
		for _, a := range rates {
			v, _ := grp.val(a)
			maxV = math.Max(maxV, v)
		}
		if maxV == 0 {
			maxV = 1
		}
		x0 := c.Left + float64(g)*gw + bw/2
		for i, a := range rates {
			v, text := grp.val(a)
			h := v / maxV * (c.Bottom - c.Top)
			title := fmt.Sprintf("%s, %s: %s", a.Name, grp.name, text)
			c.Bars = append(c.Bars, armBar{X: x0 + float64(i)*bw, Y: c.Bottom - h, W: bw * 0.9, H: h, Class: a.Name, Title: title})
			label = append(label, title)
		}
		c.Groups = append(c.Groups, tick{Pos: x0 + bw, Label: grp.name})
	}
	c.Label = "Per-arm counts: " + strings.Join(label, "; ")
	return c
}

// Template functions: formatting only, every one returning a plain string.
var funcs = template.FuncMap{
	"num":   num,
	"int":   func(n int64) string { return groupDigits(n) },
	"pct":   pct,
	"share": func(f float64) string { return strconv.FormatFloat(f*100, 'f', 1, 64) + "%" },
	"f1":    func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) },
	"time": func(t time.Time) string {
		if t.IsZero() {
			return "–"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"dur": dur,
	"ptr": func(p *float64) string {
		if p == nil {
			return "–"
		}
		return num(*p)
	},
	"nums": func(vs []float64) string {
		s := make([]string, len(vs))
		for i, v := range vs {
			s[i] = num(v)
		}
		return strings.Join(s, ", ")
	},
	"state": func(s writers.State) string { return string(s) },
	"add":   func(a, b float64) float64 { return a + b },
}

func num(f float64) string {
	switch {
	case math.IsNaN(f) || math.IsInf(f, 0):
		return strconv.FormatFloat(f, 'g', -1, 64)
	case f == math.Trunc(f) && math.Abs(f) < 1e15:
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return strconv.FormatFloat(f, 'g', 4, 64)
}

func pct(f float64) string { return strconv.FormatFloat(f*100, 'f', 2, 64) + "%" }

func dur(d time.Duration) string {
	switch {
	case d <= 0:
		return "–"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%.1fd", d.Hours()/24)
}

func groupDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
