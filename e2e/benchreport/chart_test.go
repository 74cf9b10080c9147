package benchreport

import (
	"bytes"
	"image/color"
	"image/png"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseTimelinesAndRender(t *testing.T) {
	in := strings.Join([]string{
		"TIMELINE apiserver killed -950.0 20.5 ok master1",
		"TIMELINE apiserver killed 10.0 3.1 error -",
		"TIMELINE apiserver killed 60.0 25.0 ok master3",
		"EVENT apiserver killed removed 191.5",
		"TIMELINE master link cut 100.0 3000.0 error -",
		"noise",
	}, "\n")
	tls, err := ParseTimelines(strings.NewReader(in))
	require.NoError(t, err)
	require.Len(t, tls, 2)
	assert.Equal(t, "apiserver killed", tls[0].Name)
	require.Len(t, tls[0].Requests, 3)
	assert.Equal(t, Request{StartMS: -950, DurationMS: 20.5, OK: true, Master: "master1"}, tls[0].Requests[0])
	assert.False(t, tls[0].Requests[1].OK)
	assert.Equal(t, 191.5, tls[0].RemovedMS)
	assert.True(t, math.IsNaN(tls[1].RemovedMS), "never removed")

	var buf bytes.Buffer
	require.NoError(t, RenderPNG(&buf, tls))
	img, err := png.Decode(&buf)
	require.NoError(t, err)
	assert.Equal(t, 2*panelH, img.Bounds().Dy(), "one panel per timeline")
	count := func(panel int, c color.RGBA) int {
		n := 0
		for y := panel * panelH; y < (panel+1)*panelH; y++ {
			for x := 0; x < chartW; x++ {
				if img.At(x, y) == color.Color(c) {
					n++
				}
			}
		}
		return n
	}
	assert.Positive(t, count(0, red), "the failed request is drawn")
	assert.Positive(t, count(0, blue), "the removal is marked")
	assert.Zero(t, count(1, blue), "no removal in the second timeline")
	assert.Positive(t, count(0, palettes[0]), "successful requests are drawn in their master's colour")
	assert.Error(t, RenderPNG(&buf, nil))
}
