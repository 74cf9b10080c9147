package vmtests

import (
	"fmt"
	"os"
)

func readFile(p string) (string, error) {
	b, err := os.ReadFile(p)
	return string(b), err
}

func fmtSscan(s string, v *float64) (int, error) { return fmt.Sscan(s, v) }

func strconvItoa(n int) string { return fmt.Sprint(n) }
