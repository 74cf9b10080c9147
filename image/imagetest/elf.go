// Package imagetest has test helpers for code that builds vipctl's image.
package imagetest

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// FakeELF writes a minimal 64-bit little-endian ELF executable for machine to
// dir/name and returns its path. A non-empty interp adds a PT_INTERP program
// header, which makes it look dynamically linked. payload follows the headers
// so that different payloads give different files.
func FakeELF(t *testing.T, dir, name string, machine elf.Machine, interp string, payload []byte) string {
	t.Helper()
	const ehsize, phsize = 64, 56
	var phnum uint16
	if interp != "" {
		phnum = 1
	}
	dataOff := uint64(ehsize + int(phnum)*phsize)
	hdr := elf.Header64{
		Type:      uint16(elf.ET_EXEC),
		Machine:   uint16(machine),
		Version:   uint32(elf.EV_CURRENT),
		Entry:     0x400000,
		Phoff:     ehsize,
		Ehsize:    ehsize,
		Phentsize: phsize,
		Phnum:     phnum,
		Shentsize: 64,
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	var buf bytes.Buffer
	require.NoError(t, binary.Write(&buf, binary.LittleEndian, hdr))
	if interp != "" {
		s := append([]byte(interp), 0)
		require.NoError(t, binary.Write(&buf, binary.LittleEndian, elf.Prog64{
			Type: uint32(elf.PT_INTERP), Flags: uint32(elf.PF_R), Off: dataOff,
			Vaddr: 0x400000 + dataOff, Paddr: 0x400000 + dataOff,
			Filesz: uint64(len(s)), Memsz: uint64(len(s)), Align: 1,
		}))
		buf.Write(s)
	}
	buf.Write(payload)
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, buf.Bytes(), 0o755))
	return p
}
