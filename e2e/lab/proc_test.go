package lab

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReadProcCPU(t *testing.T) {
	p, err := ReadProcCPU(os.Getpid())
	require.NoError(t, err)
	comm := filepath.Base(os.Args[0])
	if len(comm) > 15 {
		comm = comm[:15]
	}
	assert.Equal(t, comm, p.Comm)
	_, err = ReadProcCPU(-1)
	assert.Error(t, err, "a process that cannot exist")
}
