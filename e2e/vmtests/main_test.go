// Package vmtests holds the end-to-end scenarios that run inside the e2e VM
// on a real kernel with IPVS, as root, against the real vipctl binary
// (VIPCTL_BIN). On the host they skip; the e2e package's TestVM builds this
// package's test binary, boots the VM and reports each scenario.
package vmtests

import (
	"os"
	"testing"

	"github.com/vipctl/vipctl/e2e/lab"
)

func TestMain(m *testing.M) {
	lab.MaybeServe() // the fake apiserver processes are this binary too
	os.Exit(m.Run())
}
