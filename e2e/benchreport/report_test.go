package benchreport

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	in := "noise\nMEASURE kill_to_out 381.170 ms\n    MEASURE care_cpu 0.5 % of a core\nMEASURE kill_to_out 12 ms\nMEASURE broken x ms\n"
	s, err := Parse(strings.NewReader(in))
	require.NoError(t, err)
	require.Len(t, s, 2)
	assert.Equal(t, "kill_to_out", s[0].Name)
	assert.Equal(t, "ms", s[0].Unit)
	assert.Equal(t, []float64{381.17, 12}, s[0].Values)
	assert.Equal(t, "% of a core", s[1].Unit)
}

func TestQuantile(t *testing.T) {
	v := []float64{5, 1, 4, 2, 3}
	assert.Equal(t, 3.0, Quantile(v, 0.5))
	assert.Equal(t, 5.0, Quantile(v, 0.99))
	assert.Equal(t, 1.0, Quantile(v, 0.01))
	assert.Equal(t, []float64{5, 1, 4, 2, 3}, v, "the input is not reordered")
	twenty := make([]float64, 20)
	for i := range twenty {
		twenty[i] = float64(i + 1)
	}
	assert.Equal(t, 20.0, Quantile(twenty, 0.99), "with 20 samples the p99 is the maximum")
	assert.Equal(t, 10.0, Quantile(twenty, 0.5))
}

func TestSplice(t *testing.T) {
	doc := []byte("# T\nintro\n<!-- BEGIN x -->\nold\n<!-- END x -->\ntail\n")
	got := string(Splice(doc, "x", "new\n"))
	assert.Equal(t, "# T\nintro\n<!-- BEGIN x -->\nnew\n<!-- END x -->\ntail\n", got)
	got = string(Splice([]byte("# T\n"), "y", "body"))
	assert.Equal(t, "# T\n\n<!-- BEGIN y -->\nbody\n<!-- END y -->\n", got)
}

func TestTable(t *testing.T) {
	tab := Table([]*Series{{Name: "a", Unit: "ms", Values: []float64{1, 2, 300}}})
	assert.Contains(t, tab, "| a | ms | 3 | 2.0 | 300 | 1.0 | 300 |")
}

func TestDerived(t *testing.T) {
	s := []*Series{
		{Name: "calibration_handshake_vm", Unit: "ms", Values: []float64{10, 20, 30}},
		{Name: "calibration_handshake_host", Unit: "ms", Values: []float64{1, 2, 3}},
		{Name: "calibration_poll_vm", Unit: "ms", Values: []float64{50}},
		{Name: "calibration_poll_host", Unit: "ms", Values: []float64{2}},
		{Name: "calibration_orphan_vm", Unit: "ms", Values: []float64{7}},
		{Name: "care_cpu", Unit: "% of a core", Values: []float64{30, 40, 50}},
	}
	d := Derived(s)
	require.Len(t, d, 3)
	assert.Equal(t, "emulation_factor_handshake", d[0].Name)
	assert.Equal(t, []float64{10}, d[0].Values)
	assert.Equal(t, "emulation_factor_poll", d[1].Name)
	assert.Equal(t, []float64{25}, d[1].Values)
	assert.Equal(t, "care_cpu_estimated_on_hardware", d[2].Name)
	assert.Equal(t, []float64{4, 1.6}, d[2].Values, "the median CPU over each factor")
	assert.Equal(t, "% of a core", d[2].Unit)
	assert.Nil(t, Derived(s[5:]), "nothing to derive without calibration")
}

func TestDerivedDataPathRatios(t *testing.T) {
	s := []*Series{
		{Name: "datapath_new_tls_conns_direct", Values: []float64{100, 100, 100}},
		{Name: "datapath_new_tls_conns_vip", Values: []float64{99, 98, 97}},
		{Name: "datapath_new_tls_conns_nginx", Values: []float64{50, 60, 70}},
	}
	d := Derived(s)
	require.Len(t, d, 2)
	assert.Equal(t, "datapath_new_tls_conns_vip_vs_direct", d[0].Name)
	assert.InDelta(t, 0.98, d[0].Values[0], 1e-9)
	assert.InDelta(t, 0.60, d[1].Values[0], 1e-9)
}
