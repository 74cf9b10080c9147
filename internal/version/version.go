// Package version holds the build's version and commit, set by the linker:
//
//	-X github.com/vipctl/vipctl/internal/version.Version=v0.1.0
//	-X github.com/vipctl/vipctl/internal/version.Commit=abc123
package version

import "runtime"

// These are set at link time; the defaults mark a development build.
var (
	Version = "v0.0.0-dev"
	Commit  = "unknown"
)

// Info describes this build.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// Get returns the build information.
func Get() Info {
	return Info{Version: Version, Commit: Commit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
}
