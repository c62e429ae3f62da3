// Command testreport reads `go test -json` on stdin and prints what a plain `go test`
// would (each package's result line, the output of failing tests, build errors), then
// lists the tests skipped for want of a Debian package, with the one apt-get line that
// would run them. A test says so by skipping with a message holding "apt-get install
// PACKAGE" (writers/redistest, readers/objtest, lookup/ui do). It exits 1 when anything
// failed, so `make test` fails too.
//
//	go test -json ./... | go run ./scripts/testreport
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

var aptInstall = regexp.MustCompile(`apt-get install ([a-z0-9][a-z0-9.+-]+)`)

func main() {
	type key struct{ pkg, test string }
	var (
		outputs = map[key][]string{}
		failed  bool
		skipped []string            // "pkg Test: message"
		pkgs    = map[string]bool{} // Debian packages that would run them
	)
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	for in.Scan() {
		line := in.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			fmt.Println(string(line))
			continue
		}
		k := key{e.Package, e.Test}
		switch e.Action {
		case "build-output":
			fmt.Print(e.Output)
		case "build-fail":
			failed = true
		case "output":
			if e.Test == "" {
				if o := strings.TrimSpace(e.Output); o != "PASS" && !strings.HasPrefix(o, "=== ") {
					fmt.Print(e.Output)
				}
				continue
			}
			outputs[k] = append(outputs[k], e.Output)
		case "fail":
			failed = true
			if e.Test != "" {
				fmt.Print(strings.Join(outputs[k], ""))
			}
			delete(outputs, k)
		case "skip":
			for _, o := range outputs[k] {
				if m := aptInstall.FindStringSubmatch(o); m != nil {
					skipped = append(skipped, fmt.Sprintf("%s %s: %s", e.Package, e.Test, strings.TrimSpace(o)))
					pkgs[m[1]] = true
					break
				}
			}
			delete(outputs, k)
		case "pass":
			delete(outputs, k)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		failed = true
	}
	if len(skipped) > 0 {
		fmt.Printf("\n%d tests against real servers were SKIPPED for want of a Debian package:\n", len(skipped))
		for _, s := range skipped {
			fmt.Println("  " + s)
		}
		var names []string
		for p := range pkgs {
			names = append(names, p)
		}
		slices.Sort(names)
		fmt.Printf("Run them too with:\n  sudo apt-get install -y %s && make test\n", strings.Join(names, " "))
	}
	if failed {
		os.Exit(1)
	}
}
