package lab

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
)

// RunScript runs the project's scripts/name with bash in root, its stderr
// to log, and returns its stdout's non-empty lines, trimmed: how the e2e
// harnesses get the paths of the binaries the build scripts cached.
func RunScript(ctx context.Context, root string, log io.Writer, name string, args ...string) ([]string, error) {
	p := filepath.Join(root, "scripts", name)
	cmd := exec.CommandContext(ctx, "bash", append([]string{p}, args...)...)
	cmd.Dir = root
	cmd.Stderr = log
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", p, strings.Join(args, " "), err)
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			lines = append(lines, l)
		}
	}
	return lines, nil
}
