package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// versionString is what `staticref --version` prints: the module version (a tag, a
// pseudo-version naming the commit, or "(devel)"), the commit when the version does not
// name it, and the Go toolchain. `make build` records the commit (-buildvcs=auto). Nothing here needs ONNX Runtime, so it answers on a machine
// without the library.
func versionString() string {
	v, rev, at, dirty := "(devel)", "", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	out := v
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" && !strings.Contains(v, rev) { // a pseudo-version already names it
		if dirty {
			rev += "-dirty"
		}
		out += fmt.Sprintf(" (commit %s, %s)", rev, at)
	}
	return fmt.Sprintf("%s, %s %s/%s", out, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
