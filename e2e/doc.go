// Package e2e runs vipctl's end-to-end scenarios on a real kernel: TestVM
// builds the static vipctl binary and the vmtests test binary, boots
// Debian's kernel in qemu (see e2e/vm) and reports every scenario the VM ran
// as a subtest, with the scenario's log when it fails.
package e2e
