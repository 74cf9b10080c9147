package lab

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestClientReportClassifiesFailures(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tr := &Traffic{start: t0, stopped: at(20000), faults: []time.Time{at(10000)},
		windows: []Window{{From: at(10000), To: at(10100), Why: "kill -> out"}}}
	failed := func(start, end, opened int) Request {
		q := Request{Start: at(start), End: at(end), Err: "boom"}
		if opened >= 0 {
			q.ConnOpened = at(opened)
		}
		return q
	}
	c := tr.clientReport("kubelet", []Request{
		{Start: at(9000), End: at(9010)},
		failed(9990, 10010, 5000),   // in flight at the fault
		failed(10050, 10060, -1),    // inside the fault -> out window
		failed(10500, 10510, 5000),  // on a connection the fault broke
		failed(10600, 10610, 10200), // a connection opened after the fault: not excused
		failed(10700, 10710, -1),    // no connection known: not excused
		{Start: at(11000), End: at(11010)},
	})
	assert.Equal(t, 7, c.Attempted)
	assert.Equal(t, 5, c.Failed)
	assert.Equal(t, 1, c.InFlight)
	assert.Equal(t, 1, c.InWindow)
	assert.Equal(t, 1, c.OnBrokenConn)
	assert.Equal(t, 2, c.Unexcused)
	assert.Len(t, c.UnexcusedErrors, 2)
	assert.Equal(t, at(11010).Sub(at(9990)), c.LongestOutage)
}
