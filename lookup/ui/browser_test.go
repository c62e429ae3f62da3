package ui_test

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

var screenshot = flag.String("screenshot", "", "write a 1280x900 screenshot of the namespace page to this PNG file (docs/status-page.png)")

// chromium finds a headless-capable Chromium, skipping the test without one (failing
// under CI=true, as writers/redistest does for a missing redis-server).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("ui: chromium not found on PATH (CI=true, so this fails instead of skipping): apt-get install chromium")
	}
	t.Skip("ui: chromium not found on PATH: apt-get install chromium to run the browser test")
	return ""
}

// TestStatusPageInABrowser loads the pages in a real headless Chromium and reads the
// rendered DOM: the live version, the canary's weight, the charts with their 20 bars,
// hostile strings as text, no console error and no request beyond 127.0.0.1.
func TestStatusPageInABrowser(t *testing.T) {
	exe := chromium(t)
	f := newFixture(t, "admin_token_file: token\n")

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.WindowSize(1280, 900), chromedp.Flag("no-first-run", true))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	var mu sync.Mutex
	var problems []string
	listenErr := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				problems = append(problems, fmt.Sprintf("console %s", ev.Type))
			}
		case *runtime.EventExceptionThrown:
			problems = append(problems, "exception: "+ev.ExceptionDetails.Text)
		case *cdplog.EventEntryAdded: // CSP violations, failed loads, deprecations
			if ev.Entry.Level == cdplog.EntryLevelError || ev.Entry.Level == cdplog.EntryLevelWarning {
				problems = append(problems, fmt.Sprintf("log %s: %s", ev.Entry.Level, ev.Entry.Text))
			}
		case *page.EventJavascriptDialogOpening:
			problems = append(problems, "a dialog opened: "+ev.Message)
		case *network.EventRequestWillBeSent:
			if u, err := url.Parse(ev.Request.URL); err != nil || u.Hostname() != "127.0.0.1" {
				problems = append(problems, "a request left 127.0.0.1: "+ev.Request.URL)
			}
		case *network.EventLoadingFailed:
			problems = append(problems, "a load failed: "+ev.ErrorText)
		case *network.EventResponseReceived:
			if ev.Response.Status >= 400 {
				problems = append(problems, fmt.Sprintf("%s answered %d", ev.Response.URL, int(ev.Response.Status)))
			}
		}
	})
	if listenErr != nil {
		t.Fatal(listenErr)
	}
	// chromedp enables the Network, Log and Runtime domains of every tab it opens.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	open := func(path string) {
		t.Helper()
		must(chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900), chromedp.Navigate(f.base+path)))
	}
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		must(err)
		return strings.TrimSpace(v)
	}
	n := func(sel string) int {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", sel)))
		must(err)
		return v
	}
	open("/ui/")
	live, weight := text(`tr[data-namespace="churn"] td.live`), text(`tr[data-namespace="churn"] .weight`)
	css, err := chromedp.Run(ctx, chromedp.Evaluate[string](`getComputedStyle(document.querySelector("header.top")).borderBottomStyle`))
	must(err)
	open("/ui/churn")
	relWeight := text(`#release dd.weight`)
	refBars, otherBars := n(`svg.hist rect.bar.ref`), n(`svg.hist rect.bar.other`)
	points, arms := n(`svg.weight-chart circle.point`), n(`svg.arms-chart rect.bar`)
	decisions := n(`table.history tbody tr`)
	open("/ui/churn/" + f.v2.Version)
	job, detail, segment := text(`dd.job`), text(`table.gates tbody tr:last-child td.detail`), text(`table.defaults th.segment`)
	scripts, charts := n(`script`), n(`svg.hist`)
	verRef, verOther := n(`svg.hist rect.bar.ref`), n(`svg.hist rect.bar.other`)
	checks := []struct {
		what      string
		got, want any
	}{
		{"the index's live version", strings.TrimSpace(live), f.v1.Version},
		{"the index's canary weight", strings.TrimSpace(weight), "10%"},
		{"the stylesheet applied", css, "solid"},
		{"the release's weight", strings.TrimSpace(relWeight), "10%"},
		{"live's bars on the namespace page", refBars, 20},
		{"the candidate's bars on the namespace page", otherBars, 20},
		{"the weight chart's points (a point per decision)", points, decisions},
		{"decisions so far (at least the start)", decisions > 0, true},
		{"the per-arm bars (3 groups × 2 arms)", arms, 6},
		{"the hostile job name, as text", strings.TrimSpace(job), hostile},
		{"the hostile gate detail, as text", strings.TrimSpace(detail), hostile},
		{"the hostile segment, as text", strings.TrimSpace(segment), hostile},
		{"script elements", scripts, 0},
		{"histograms on the version page", charts, 1},
		{"live's bars on the version page", verRef, 20},
		{"the version's bars on the version page", verOther, 20},
	}
	for _, c := range checks {
		if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
			t.Errorf("%s: got %v, want %v", c.what, c.got, c.want)
		}
	}

	if *screenshot != "" {
		open("/ui/churn")
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		must(err)
		if err := os.WriteFile(*screenshot, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Errorf("in the browser: %s", p)
	}
}
