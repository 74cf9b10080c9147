package vmtests

import (
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vipctl/vipctl/e2e/lab"
)

// capNetAdmin is CAP_NET_ADMIN (linux/capability.h).
const capNetAdmin = 12

// The static pod runs the watchdog with CAP_NET_ADMIN alone (not privileged).
// This runs it as an unprivileged user whose only capability is NET_ADMIN
// and exercises everything it does in the kernel: creating the dummy
// interface, address and route, the IPVS service, weight changes and
// deletes, resetting an established connection (SOCK_DESTROY), and
// repairing a flush.
func TestCareNeedsOnlyNetAdmin(t *testing.T) {
	l := lab.New(t, 2)
	// The lab's files are in a 0700 test directory: give the unprivileged
	// watchdog a readable copy of the CA, as the pod's hostPath mount does.
	ca, err := os.ReadFile(l.CAFile)
	require.NoError(t, err)
	caFile := "/tmp/netadmin-ca.crt"
	require.NoError(t, os.WriteFile(caFile, ca, 0o644))
	t.Cleanup(func() { os.Remove(caFile) })
	attr := &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: 65534, Gid: 65534},
		AmbientCaps: []uintptr{capNetAdmin},
	}
	c := l.StartCareWith(attr, l.CareArgs("--ca-file", caFile)...)
	lab.WaitFor(t, 10*time.Second, "all in", allServing(l))
	status, err := os.ReadFile("/proc/" + itoa(c.Pid()) + "/status")
	require.NoError(t, err)
	assert.Regexp(t, `(?m)^CapEff:\s+0000000000001000$`, string(status), "the watchdog's only capability is NET_ADMIN")
	assert.Regexp(t, `(?m)^Uid:\s+65534\s`, string(status))

	o := lab.Observe(t)
	assert.True(t, o.VIPOnLink)
	assert.Equal(t, lab.NodeIP.String(), o.LocalSrc)

	name, done, closeWatch := openWatch(t, l)
	defer closeWatch()
	m := master(l, name)
	m.LinkDown()
	lab.WaitFor(t, 15*time.Second, m.Name+" out", out(m))
	select {
	case err := <-done:
		assert.Error(t, err, "the established connection was reset")
	case <-time.After(10 * time.Second):
		t.Fatal("SOCK_DESTROY did not reset the connection with NET_ADMIN alone")
	}
	lab.FlushIPVS(t)
	lab.WaitFor(t, 5*time.Second, "flush repaired", in(l.Masters[0]))
	assert.NotContains(t, c.Log(), "operation not permitted")
}

func itoa(n int) string { return strconvItoa(n) }
