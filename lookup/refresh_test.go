package lookup

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/staticref/staticref/writers"
)

// orderedSource answers its first resolve (made before a flip) only when released; every
// later resolve sees the flipped pointer.
type orderedSource struct {
	calls            atomic.Int32
	inFirst, release chan struct{}
	before, after    *Snapshot
}

func (o *orderedSource) resolve(ctx context.Context, ns string, cur *Snapshot) (*Snapshot, error) {
	if o.calls.Add(1) == 1 {
		close(o.inFirst)
		<-o.release
		return o.before, nil
	}
	return o.after, nil
}
func (o *orderedSource) catalog(context.Context) (*writers.Store, func(), error) {
	return nil, nil, nil
}
func (o *orderedSource) watch(context.Context, string, chan<- struct{}) {}
func (o *orderedSource) close() error                                   { return nil }

// TestRefreshesDoNotOverwriteANewerSnapshot: the background refresh read the pointer just
// before an admin flip and is slow to finish; the flip's own refresh comes after it.
// The service must end on the flipped version, not on the slow refresh's older one.
func TestRefreshesDoNotOverwriteANewerSnapshot(t *testing.T) {
	snap := func(v string) *Snapshot {
		return &Snapshot{Namespace: "ns", Manifest: &writers.Manifest{Namespace: "ns", Version: v, CompletedAt: time.Now()}}
	}
	src := &orderedSource{inFirst: make(chan struct{}), release: make(chan struct{}), before: snap("v1"), after: snap("v2")}
	s := &Service{cfg: &Config{StoreTimeout: Duration(time.Second)}, log: slog.New(slog.NewTextHandler(io.Discard, nil)), met: newMetrics(), now: time.Now}
	n := &namespace{name: "ns", cfg: &NamespaceConfig{}, src: src}
	ctx := context.Background()

	var wg sync.WaitGroup
	wg.Go(func() { s.refresh(ctx, n) }) // the background refresh, before the flip
	<-src.inFirst
	wg.Go(func() { s.refresh(ctx, n) }) // the admin flip's refresh
	time.Sleep(50 * time.Millisecond)   // lets an unserialised second refresh finish first
	close(src.release)
	wg.Wait()
	if got := versionOf(n.snap.Load()); got != "v2" {
		t.Errorf("serving %s after the flip to v2", got)
	}
}
