package lookup

import (
	"sync"
	"time"
)

// Readiness.
//
// /readyz is what a load balancer (a Kubernetes readiness probe) asks before it routes
// traffic to this process, so it must say whether the process can answer now, not
// whether it once could. A namespace is ready when all of these hold:
//
//  1. Its store is open. A store that cannot be reached at start does not stop the
//     service: its namespace is not ready while connect opens it again in the background.
//  2. It has a live version loaded. Before the first read of the pointer there is none;
//     after a store restarted empty, or a pointer that was deleted, there is none either,
//     and every key of the namespace would answer 503.
//  3. The last check of its store succeeded. The check is the refresh that runs every
//     poll_interval (and on every flip notification): it reads the live pointer, each
//     store call bounded by store_timeout, so a store that is down, refuses, or hangs
//     fails it within store_timeout.
//  4. That success is recent: no older than readyWindow (three poll intervals, plus
//     twice store_timeout for the refresh's two calls). This catches a check that never
//     returns, however a driver treats its deadline.
//
// The process is ready when every namespace is: a replica that cannot answer one of its
// namespaces is taken out of rotation, and the others (which can) receive its share.
// Readiness is computed when asked, from what the checks recorded; asking reads no store.

// readyWindow is how old a namespace's last successful check may be while it is ready.
func (s *Service) readyWindow() time.Duration {
	return 3*time.Duration(s.cfg.PollInterval) + 2*time.Duration(s.cfg.StoreTimeout)
}

// health is what the checks of one namespace's store recorded.
type health struct {
	mu sync.Mutex
	checks
}

type checks struct {
	checking time.Time // start of the refresh in flight; zero: none
	last     time.Time // end of the last refresh
	lastOK   time.Time // end of the last refresh that succeeded
	failed   bool      // the last refresh failed
	attempts int       // failed opens of the store so far (while it is not open)
}

func (h *health) begin(now time.Time) {
	h.mu.Lock()
	h.checking = now
	h.mu.Unlock()
}

// end records the end of a check and returns whether the check before it failed.
func (h *health) end(now time.Time, ok bool) (failedBefore bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	failedBefore = h.failed
	h.checking, h.last, h.failed = time.Time{}, now, !ok
	if ok {
		h.lastOK = now
	}
	return failedBefore
}

// openFailed counts a failed open and returns how many there were.
func (h *health) openFailed() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.attempts++
	return h.attempts
}

func (h *health) get() checks {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.checks
}

// NamespaceReadiness is one namespace's part of /readyz. Reason says, when it is not
// ready, why, in terms that never include a store's address or internal error.
type NamespaceReadiness struct {
	Ready     bool       `json:"ready"`
	Reason    string     `json:"reason,omitempty"`
	Live      string     `json:"live"`                 // the version served, "" for none
	LastCheck *time.Time `json:"last_check,omitempty"` // end of the last check of its store
}

// Readiness is the answer of /readyz.
type Readiness struct {
	Ready      bool                          `json:"ready"`
	Namespaces map[string]NamespaceReadiness `json:"namespaces"`
}

// Readiness says whether every namespace can answer now, and why not (see above).
func (s *Service) Readiness() Readiness {
	r := Readiness{Ready: true, Namespaces: make(map[string]NamespaceReadiness, len(s.ns))}
	now := s.now()
	for _, name := range s.names {
		nr := s.namespaceReadiness(s.ns[name], now)
		r.Namespaces[name] = nr
		r.Ready = r.Ready && nr.Ready
	}
	return r
}

// Ready reports whether every namespace is ready.
func (s *Service) Ready() bool { return s.Readiness().Ready }

func (s *Service) namespaceReadiness(n *namespace, now time.Time) NamespaceReadiness {
	nr := NamespaceReadiness{Live: versionOf(n.snap.Load())}
	src := n.src.Load()
	h := n.health.get()
	if !h.last.IsZero() {
		at := h.last.UTC()
		nr.LastCheck = &at
	}
	window := s.readyWindow()
	switch {
	case src == nil:
		nr.Reason = "the store is not reachable: connecting in the background"
	case !n.loaded.Load() && h.failed:
		nr.Reason = "the live version is not loaded: the check of the store failed"
	case !n.loaded.Load():
		nr.Reason = "the live version is not loaded yet"
	case h.failed:
		nr.Reason = "the last check of the store failed"
	case now.Sub(h.lastOK) > window:
		nr.Reason = "the store has not answered a check for " + now.Sub(h.lastOK).Round(time.Millisecond).String() +
			" (at most " + window.String() + ")"
	case nr.Live == "":
		nr.Reason = "the namespace has no live version (a store that restarted empty has none): run a job or flip one"
	default:
		nr.Ready = true
	}
	return nr
}
