package benchreport

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"strconv"
)

// Curve is one measured series of a CurveChart: points (X, Y) joined by
// lines, and optionally a fitted line through (FitX, FitY), drawn dashed.
type Curve struct {
	Name       string
	X, Y       []float64
	FitX, FitY []float64
}

// CurveChart is a line chart of Curves on linear axes from zero.
type CurveChart struct {
	Title, XLabel, YLabel string
	Curves                []Curve
}

// RenderCurves draws c as a PNG.
func RenderCurves(w io.Writer, c CurveChart) error {
	if len(c.Curves) == 0 {
		return fmt.Errorf("no curve to draw")
	}
	const height = 420
	img := image.NewRGBA(image.Rect(0, 0, chartW, height))
	draw.Draw(img, img.Bounds(), &image.Uniform{white}, image.Point{}, draw.Src)
	plot := image.Rect(marginL, marginT+10, chartW-marginR-legendWidth, height-marginB)
	var xMax, yMax float64
	for _, cv := range c.Curves {
		for _, v := range append(append([]float64{}, cv.X...), cv.FitX...) {
			xMax = math.Max(xMax, v)
		}
		for _, v := range append(append([]float64{}, cv.Y...), cv.FitY...) {
			yMax = math.Max(yMax, v)
		}
	}
	xMax, yMax = niceCeil(xMax), niceCeil(yMax)
	x := func(v float64) int { return plot.Min.X + int(v/xMax*float64(plot.Dx())) }
	y := func(v float64) int { return plot.Max.Y - int(math.Max(0, v)/yMax*float64(plot.Dy())) }
	text(img, marginL, 20, black, c.Title)
	for i := 0; i <= 5; i++ {
		xv, yv := xMax*float64(i)/5, yMax*float64(i)/5
		vline(img, x(xv), plot.Min.Y, plot.Max.Y, grey)
		text(img, x(xv)-10, plot.Max.Y+16, black, strconv.FormatFloat(xv, 'g', 4, 64))
		hline(img, plot.Min.X, plot.Max.X, y(yv), grey)
		text(img, 8, y(yv)+4, black, strconv.FormatFloat(yv, 'g', 3, 64))
	}
	hline(img, plot.Min.X, plot.Max.X, plot.Max.Y, black)
	vline(img, plot.Min.X, plot.Min.Y, plot.Max.Y, black)
	text(img, plot.Min.X+plot.Dx()/2-20, plot.Max.Y+36, black, c.XLabel)
	text(img, 4, plot.Min.Y-8, black, c.YLabel)
	for i, cv := range c.Curves {
		col := curveColors[i%len(curveColors)]
		for j := range cv.X {
			dot(img, x(cv.X[j]), y(cv.Y[j]), col)
			if j > 0 {
				line(img, x(cv.X[j-1]), y(cv.Y[j-1]), x(cv.X[j]), y(cv.Y[j]), col, false)
			}
		}
		for j := 1; j < len(cv.FitX) && j < len(cv.FitY); j++ {
			line(img, x(cv.FitX[j-1]), y(cv.FitY[j-1]), x(cv.FitX[j]), y(cv.FitY[j]), col, true)
		}
		lx, ly := plot.Max.X+20, plot.Min.Y+12+i*18
		dot(img, lx, ly-4, col)
		text(img, lx+10, ly, black, cv.Name)
	}
	return png.Encode(w, img)
}

var curveColors = []color.RGBA{{200, 30, 30, 255}, {0, 110, 200, 255}, {0, 150, 70, 255}, {230, 140, 0, 255}, {120, 60, 180, 255}, {90, 90, 90, 255}}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// line draws a straight line (Bresenham), dashed when asked.
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.Color, dashed bool) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := 1, 1
	if x0 > x1 {
		sx = -1
	}
	if y0 > y1 {
		sy = -1
	}
	e := dx + dy
	for i := 0; ; i++ {
		if !dashed || i%10 < 6 {
			img.Set(x0, y0, c)
			img.Set(x0, y0+1, c)
		}
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
