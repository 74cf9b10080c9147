// Package offline tests vipctl's air-gapped bundle end to end: the tests
// drive scripts/install.sh with stub runtimes on PATH (no root needed), and
// build a real bundle with scripts/offline.sh, install it with install.sh
// into a private containerd and run the imported image (root, containerd,
// ctr and runc needed; skipped otherwise). The package has no non-test code.
package offline
