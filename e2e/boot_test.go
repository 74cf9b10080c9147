package e2e

import (
	"fmt"
	"io"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeBoots plays VM boots: each call prints the next console and returns
// exit code 0 for a console that ends the run, -1 for one that locked up.
type fakeBoots struct {
	consoles []string
	extras   [][]string
}

func (f *fakeBoots) boot(extra []string, console io.Writer) (int, error) {
	i := len(f.extras)
	f.extras = append(f.extras, extra)
	fmt.Fprint(console, f.consoles[i])
	if i < len(f.consoles)-1 || f.consoles[i] == lockedUp {
		return -1, fmt.Errorf("VM ended without a LAB EXIT line")
	}
	return 0, nil
}

const lockedUp = "=== RUN   TestA\n--- PASS: TestA (1.00s)\n=== RUN   TestB\n=== RUN   TestB/ipv4\n" +
	"[   76.5] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [vipctl-watchdog:432]\n" +
	"[   76.6] Call Trace:\n[   76.6]  <TASK>\n[   77.0] Kernel panic - not syncing: softlockup: hung tasks\n"

func TestBootScenariosRetriesWhatALockupCut(t *testing.T) {
	f := &fakeBoots{consoles: []string{
		lockedUp,
		"=== RUN   TestB\n--- PASS: TestB (2.00s)\n=== RUN   TestC\n--- FAIL: TestC (1.00s)\nLAB EXIT 1\n",
	}}
	b := bootScenarios(t, filepath.Join(t.TempDir(), "console.log"), f.boot)
	require.Len(t, f.extras, 2, "one more boot after the lockup")
	assert.Empty(t, f.extras[0])
	assert.Equal(t, []string{"-test.skip=^(TestA)$"}, f.extras[1], "what finished is not run again")
	var got []string
	for _, r := range b.results {
		got = append(got, r.Name+" "+r.Result)
	}
	assert.Equal(t, []string{"TestA PASS", "TestB PASS", "TestC FAIL"}, got)
	assert.Equal(t, 0, b.code)
}

func TestBootScenariosRetriesOnce(t *testing.T) {
	f := &fakeBoots{consoles: []string{lockedUp, lockedUp}}
	b := bootScenarios(t, filepath.Join(t.TempDir(), "console.log"), f.boot)
	require.Len(t, f.extras, 2, "a second lockup is not retried")
	var unfinished []string
	for _, r := range b.results {
		if r.Result == "" {
			unfinished = append(unfinished, r.Name)
		}
	}
	assert.Equal(t, []string{"TestB"}, unfinished, "reported as not finished")
	assert.Error(t, b.err)
}

func TestNoRetryWithoutALockup(t *testing.T) {
	f := &fakeBoots{consoles: []string{"=== RUN   TestA\n--- FAIL: TestA (1.00s)\n=== RUN   TestB\n"}}
	b := bootScenarios(t, filepath.Join(t.TempDir(), "console.log"), f.boot)
	assert.Len(t, f.extras, 1, "a scenario that did not finish without a lockup is a failure, not retried")
	assert.Len(t, b.results, 2)
}
