package benchreport

import (
	"bufio"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Request is one client request of a failover timeline.
type Request struct {
	StartMS    float64 // relative to the failure (negative: before it)
	DurationMS float64
	OK         bool
	Master     string
}

// Timeline is the client's view of one failure.
type Timeline struct {
	Name      string
	Requests  []Request
	RemovedMS float64 // when the master left the IPVS table; NaN if never
}

// ParseTimelines collects "TIMELINE name… start dur result master" (master
// "-" when none answered) and "EVENT name… removed ms" lines (names may
// contain spaces).
func ParseTimelines(r io.Reader) ([]*Timeline, error) {
	var out []*Timeline
	by := map[string]*Timeline{}
	get := func(name string) *Timeline {
		if by[name] == nil {
			by[name] = &Timeline{Name: name, RemovedMS: math.NaN()}
			out = append(out, by[name])
		}
		return by[name]
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(strings.TrimSpace(sc.Text()))
		switch {
		case len(f) >= 6 && f[0] == "TIMELINE":
			n := len(f)
			start, err1 := strconv.ParseFloat(f[n-4], 64)
			dur, err2 := strconv.ParseFloat(f[n-3], 64)
			if err1 != nil || err2 != nil {
				continue
			}
			tl := get(strings.Join(f[1:n-4], " "))
			master := f[n-1]
			if master == "-" {
				master = ""
			}
			tl.Requests = append(tl.Requests, Request{StartMS: start, DurationMS: dur, OK: f[n-2] == "ok", Master: master})
		case len(f) >= 4 && f[0] == "EVENT" && f[len(f)-2] == "removed":
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				continue
			}
			get(strings.Join(f[1:len(f)-2], " ")).RemovedMS = v
		}
	}
	return out, sc.Err()
}

// Chart geometry.
const (
	chartW      = 1100
	panelH      = 330
	marginL     = 80
	marginR     = 30
	marginT     = 40
	marginB     = 50
	xMinMS      = -1000.0
	xMaxMS      = 5000.0
	yMinMS      = 1.0
	yMaxMS      = 5000.0
	dotRadius   = 3
	legendWidth = 260
)

var (
	white    = color.RGBA{255, 255, 255, 255}
	black    = color.RGBA{0, 0, 0, 255}
	grey     = color.RGBA{200, 200, 200, 255}
	red      = color.RGBA{220, 30, 30, 255}
	blue     = color.RGBA{30, 80, 220, 255}
	palettes = []color.RGBA{{0, 150, 70, 255}, {230, 140, 0, 255}, {120, 60, 180, 255}, {0, 150, 200, 255}}
)

// RenderPNG draws one panel per timeline: each request a dot at (start,
// duration) coloured by the master that answered, failed requests as red
// crosses at their duration, a black line at the failure and a blue one
// where the master left the IPVS table.
func RenderPNG(w io.Writer, tls []*Timeline) error {
	if len(tls) == 0 {
		return fmt.Errorf("no timeline to draw")
	}
	img := image.NewRGBA(image.Rect(0, 0, chartW, panelH*len(tls)))
	draw.Draw(img, img.Bounds(), &image.Uniform{white}, image.Point{}, draw.Src)
	for i, tl := range tls {
		drawPanel(img, image.Rect(0, i*panelH, chartW, (i+1)*panelH), tl)
	}
	return png.Encode(w, img)
}

func drawPanel(img *image.RGBA, r image.Rectangle, tl *Timeline) {
	plot := image.Rect(r.Min.X+marginL, r.Min.Y+marginT, r.Max.X-marginR, r.Max.Y-marginB)
	x := func(ms float64) int {
		return plot.Min.X + int((ms-xMinMS)/(xMaxMS-xMinMS)*float64(plot.Dx()))
	}
	y := func(ms float64) int {
		v := math.Log10(math.Max(yMinMS, math.Min(yMaxMS, ms)))
		lo, hi := math.Log10(yMinMS), math.Log10(yMaxMS)
		return plot.Max.Y - int((v-lo)/(hi-lo)*float64(plot.Dy()))
	}
	failed := 0
	for _, q := range tl.Requests {
		if !q.OK {
			failed++
		}
	}
	text(img, r.Min.X+marginL, r.Min.Y+20, black, fmt.Sprintf("%s: %d requests, %d failed; removed from IPVS %s after the failure",
		tl.Name, len(tl.Requests), failed, msText(tl.RemovedMS)))
	// Axes and grid.
	for s := -1; s <= 5; s++ {
		gx := x(float64(s) * 1000)
		vline(img, gx, plot.Min.Y, plot.Max.Y, grey)
		text(img, gx-8, plot.Max.Y+16, black, fmt.Sprintf("%+ds", s))
	}
	for _, v := range []float64{1, 10, 100, 1000} {
		gy := y(v)
		hline(img, plot.Min.X, plot.Max.X, gy, grey)
		text(img, r.Min.X+8, gy+4, black, msText(v))
	}
	text(img, plot.Min.X+plot.Dx()/2-150, plot.Max.Y+36, black, "request start, relative to the failure")
	text(img, r.Min.X+4, plot.Min.Y-6, black, "request time (log)")
	hline(img, plot.Min.X, plot.Max.X, plot.Max.Y, black)
	vline(img, plot.Min.X, plot.Min.Y, plot.Max.Y, black)
	// Events.
	vline(img, x(0), plot.Min.Y, plot.Max.Y, black)
	text(img, x(0)+4, plot.Min.Y+12, black, "failure")
	if !math.IsNaN(tl.RemovedMS) {
		for yy := plot.Min.Y; yy < plot.Max.Y; yy += 6 {
			vline(img, x(tl.RemovedMS), yy, min(yy+3, plot.Max.Y), blue)
		}
		text(img, x(tl.RemovedMS)+4, plot.Min.Y+26, blue, "removed")
	}
	// Requests, coloured by master.
	masters := map[string]color.RGBA{}
	var names []string
	for _, q := range tl.Requests {
		if q.OK && q.Master != "" {
			if _, ok := masters[q.Master]; !ok {
				names = append(names, q.Master)
				masters[q.Master] = color.RGBA{}
			}
		}
	}
	sort.Strings(names)
	for i, n := range names {
		masters[n] = palettes[i%len(palettes)]
	}
	for _, q := range tl.Requests {
		if q.StartMS < xMinMS || q.StartMS > xMaxMS {
			continue
		}
		px, py := x(q.StartMS), y(q.DurationMS)
		if q.OK {
			dot(img, px, py, masters[q.Master])
		} else {
			cross(img, px, py, red)
		}
	}
	// Legend.
	lx, ly := plot.Max.X-legendWidth, plot.Min.Y+12
	for i, n := range names {
		dot(img, lx, ly+i*16-4, masters[n])
		text(img, lx+10, ly+i*16, black, "answered by "+n)
	}
	cross(img, lx, ly+len(names)*16-4, red)
	text(img, lx+10, ly+len(names)*16, black, "failed (error or timeout)")
}

func msText(v float64) string {
	switch {
	case math.IsNaN(v):
		return "never"
	case v >= 1000:
		return strconv.FormatFloat(v/1000, 'f', -1, 64) + " s"
	default:
		return strconv.FormatFloat(v, 'f', 0, 64) + " ms"
	}
}

func text(img *image.RGBA, x, y int, c color.Color, s string) {
	d := &font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func vline(img *image.RGBA, x, y0, y1 int, c color.Color) {
	for y := y0; y <= y1; y++ {
		img.Set(x, y, c)
	}
}

func hline(img *image.RGBA, x0, x1, y int, c color.Color) {
	for x := x0; x <= x1; x++ {
		img.Set(x, y, c)
	}
}

func dot(img *image.RGBA, cx, cy int, c color.Color) {
	for dx := -dotRadius; dx <= dotRadius; dx++ {
		for dy := -dotRadius; dy <= dotRadius; dy++ {
			if dx*dx+dy*dy <= dotRadius*dotRadius {
				img.Set(cx+dx, cy+dy, c)
			}
		}
	}
}

func cross(img *image.RGBA, cx, cy int, c color.Color) {
	for d := -4; d <= 4; d++ {
		img.Set(cx+d, cy+d, c)
		img.Set(cx+d, cy-d, c)
		img.Set(cx+d+1, cy+d, c)
		img.Set(cx+d+1, cy-d, c)
	}
}
