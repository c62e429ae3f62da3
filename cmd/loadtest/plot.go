package main

import (
	"fmt"
	"image/color"
	"os"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// plotBaselines draws the baselines table as an SVG: requests per second on the left,
// p50, p99 and p999 on the right, one bar (group) per row.
func plotBaselines(path string, rs []result) error {
	names := make([]string, len(rs))
	rps := make(plotter.Values, len(rs))
	var lat [3]plotter.Values
	for i, r := range rs {
		names[i] = shortName(r.Name)
		rps[i] = r.RPS / 1000
		for j, d := range []float64{r.P50.Seconds(), r.P99.Seconds(), r.P999.Seconds()} {
			lat[j] = append(lat[j], d*1000)
		}
	}
	left := plot.New()
	left.Title.Text = "throughput (thousand requests/s)"
	left.Add(plotter.NewGrid())
	bars, err := plotter.NewBarChart(rps, vg.Points(22))
	if err != nil {
		return err
	}
	bars.Color = color.RGBA{R: 0x33, G: 0x66, B: 0x99, A: 0xff}
	left.Add(bars)
	left.NominalX(names...)
	left.X.Tick.Label.Rotation = 0.6
	left.X.Tick.Label.XAlign = draw.XRight

	right := plot.New()
	right.Title.Text = "latency (ms)"
	right.Add(plotter.NewGrid())
	colors := []color.Color{color.RGBA{0x66, 0xaa, 0x66, 0xff}, color.RGBA{0xdd, 0x88, 0x33, 0xff}, color.RGBA{0xcc, 0x33, 0x33, 0xff}}
	for j, label := range []string{"p50", "p99", "p999"} {
		b, err := plotter.NewBarChart(lat[j], vg.Points(8))
		if err != nil {
			return err
		}
		b.Offset = vg.Points(float64(j-1) * 8)
		b.Color = colors[j]
		right.Add(b)
		right.Legend.Add(label, b)
	}
	right.Legend.Top = true
	right.NominalX(names...)
	right.X.Tick.Label.Rotation = 0.6
	right.X.Tick.Label.XAlign = draw.XRight

	const w, h = 10 * vg.Inch, 4.5 * vg.Inch
	img := vgsvg.New(w, h)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Millimeter * 4}
	canvases := plot.Align([][]*plot.Plot{{left, right}}, tiles, dc)
	left.Draw(canvases[0][0])
	right.Draw(canvases[0][1])
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := img.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// shortName is a row's name as a tick label.
func shortName(s string) string {
	for _, l := range []struct{ prefix, label string }{
		{"redis-benchmark", "redis GET"}, {"bare", "bare HTTP"}, {"serve, cache hits", "serve hits"},
		{"serve, cache misses", "serve misses"}, {"gRPC", "gRPC Get"}, {"net/http handler, a map", "map HTTP"}, {"net/http handler, a store Get", "store Get HTTP"},
	} {
		if strings.HasPrefix(s, l.prefix) {
			return l.label
		}
	}
	return s
}
