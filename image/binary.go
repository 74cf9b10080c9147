package image

import (
	"debug/elf"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// supportedArchitectures are the GOARCH values elfMachine knows.
func supportedArchitectures() []string {
	return []string{"386", "amd64", "arm", "arm64", "ppc64le", "riscv64", "s390x"}
}

// elfMachine is the ELF machine of binaries built for GOARCH arch.
func elfMachine(arch string) (elf.Machine, bool) {
	switch arch {
	case "amd64":
		return elf.EM_X86_64, true
	case "arm64":
		return elf.EM_AARCH64, true
	case "arm":
		return elf.EM_ARM, true
	case "386":
		return elf.EM_386, true
	case "ppc64le":
		return elf.EM_PPC64, true
	case "s390x":
		return elf.EM_S390, true
	case "riscv64":
		return elf.EM_RISCV, true
	}
	return elf.EM_NONE, false
}

// checkBinary makes sure path is a Linux ELF executable for platform p with no
// program interpreter: the image has no libc, so only a static binary
// (CGO_ENABLED=0) runs in it.
func checkBinary(path string, p v1.Platform) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("--binary %s=%s: not an ELF executable: %w", p, path, err)
	}
	defer f.Close()
	want, ok := elfMachine(p.Architecture)
	if !ok {
		return fmt.Errorf("--binary %s=%s: unsupported architecture %q", p, path, p.Architecture)
	}
	if f.Machine != want {
		return fmt.Errorf("--binary %s=%s: binary is for machine %s, not %s (%s)", p, path, f.Machine, p.Architecture, want)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("--binary %s=%s: ELF type %s is not an executable", p, path, f.Type)
	}
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		interp := make([]byte, prog.Filesz)
		if _, err := prog.ReadAt(interp, 0); err != nil {
			return fmt.Errorf("--binary %s=%s: binary is dynamically linked; build it with CGO_ENABLED=0", p, path)
		}
		return fmt.Errorf("--binary %s=%s: binary is dynamically linked (interpreter %s); build it with CGO_ENABLED=0",
			p, path, strings.TrimRight(string(interp), "\x00"))
	}
	return nil
}
