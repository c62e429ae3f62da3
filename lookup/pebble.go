package lookup

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/staticref/staticref/writers"
	"github.com/staticref/staticref/writers/pebble"
)

// Serving from the embedded store while runs publish into it.
//
// A Pebble directory admits one process at a time: pebble.Open takes a lock file, and
// takes it even with Options.ReadOnly. If `serve` held the store open, `staticref run`
// could never publish a new version, and if it opened the store per request, a run
// could not hold it for its minutes of writing. So serve never holds the lock of the
// store directory. Instead it answers from a private checkpoint of it:
//
//  1. Every poll, it fingerprints the directory (names, sizes and modification times of
//     its files). An unchanged fingerprint means no process has written since: nothing
//     to do, and no file is opened.
//  2. When the fingerprint changed, it reads the live pointer with
//     pebble.ReadLive, which opens the directory read-only *without* taking the
//     lock. A writer
//     may be running: Pebble's files are either immutable (sstables) or append-only
//     (WAL, MANIFEST), and a read-only open replays what it finds, treating a torn tail
//     as the end. If a concurrent compaction removed a file under it, the open or read
//     fails; the snapshot in use stays, and the next poll tries again.
//  3. When the pointer names another version, pebble.CopyVersion copies what
//     serving that version needs (the namespace's pointer and manifests, and the live
//     version's rows) into a private Pebble database beside the store and opens the copy
//     as an ordinary Pebble store. (Pebble's
//     Checkpoint would link files instead of copying rows, but it does not work from a
//     read-only handle.) The copy is this process's alone, immune to the writer's
//     compactions and deletions, and it holds every row of the live version, because a
//     flip is only ever made after the version is complete.
//  4. The new snapshot is published with one atomic pointer store; the previous
//     checkpoint is closed and deleted only after retireGrace, longer than any request
//     may run, so requests that loaded the old snapshot finish on it.
//
// Admin flips and rollbacks through the service open the real directory (taking the
// lock) for the duration of the flip; while a run holds it they fail with 503, and the
// CLI (`staticref versions flip`) is the tool for that. Costs: a copy of the live version
// per flip (time and disk proportional to its rows), and, while a run is writing, one read-only open per poll
// (a WAL replay). Redis or Bigtable are the stores for fleets of lookup replicas.
const retireGrace = 30 * time.Second

type pebbleSource struct {
	dir string
	log *slog.Logger

	mu          sync.Mutex
	fingerprint string
	cur         *writers.Store // the checkpoint in use
	curDir      string
	retired     []retiredCheckpoint
}

type retiredCheckpoint struct {
	store *writers.Store
	dir   string
	at    time.Time
}

func newPebbleSource(dir string, log *slog.Logger) (*pebbleSource, error) {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("pebble store %s: no such directory: run a job into it first", dir)
	}
	return &pebbleSource{dir: dir, log: log}, nil
}

func (p *pebbleSource) dirFingerprint() (string, error) {
	ents, err := os.ReadDir(p.dir)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			continue // removed while listing
		}
		fmt.Fprintf(&b, "%s %d %d\n", e.Name(), fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), nil
}

func (p *pebbleSource) resolve(ctx context.Context, ns string, cur *Snapshot) (*Snapshot, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reap(false)
	fp, err := p.dirFingerprint()
	if err != nil {
		return nil, fmt.Errorf("pebble store %s: %w", p.dir, err)
	}
	if fp == p.fingerprint && p.fingerprint != "" {
		return cur, nil
	}
	live, err := pebble.ReadLive(p.dir, ns)
	if err != nil {
		return nil, fmt.Errorf("read live pointer of %s in %s: %w", ns, p.dir, err)
	}
	if live == "" {
		p.fingerprint = fp
		return nil, nil
	}
	if cur != nil && cur.Manifest.Version == live && p.cur != nil {
		p.fingerprint = fp
		return cur, nil
	}
	ckpt, err := os.MkdirTemp(filepath.Dir(p.dir), "."+filepath.Base(p.dir)+".serve-")
	if err != nil {
		return nil, fmt.Errorf("checkpoint pebble store %s: %w", p.dir, err)
	}
	s, _, err := pebble.CopyVersion(p.dir, filepath.Join(ckpt, "db"), ns)
	if err != nil || s == nil {
		os.RemoveAll(ckpt)
		return nil, err
	}
	// The checkpoint may have caught a later flip than the pointer read above: read both
	// from the checkpoint, which is what requests will read.
	live, err = s.Live(ctx, ns)
	var m *writers.Manifest
	if err == nil && live != "" {
		m, err = s.Manifest(ctx, ns, live)
	}
	if err != nil || live == "" {
		s.Close()
		os.RemoveAll(ckpt)
		if err == nil {
			return nil, nil
		}
		return nil, fmt.Errorf("read checkpoint of %s: %w", p.dir, err)
	}
	if p.cur != nil {
		p.retired = append(p.retired, retiredCheckpoint{store: p.cur, dir: p.curDir, at: time.Now()})
	}
	p.cur, p.curDir, p.fingerprint = s, ckpt, fp
	return &Snapshot{Namespace: ns, Manifest: m, Store: s}, nil
}

// reap closes and removes checkpoints retired longer than retireGrace ago (all, if all).
func (p *pebbleSource) reap(all bool) {
	keep := p.retired[:0]
	for _, r := range p.retired {
		if all || time.Since(r.at) > retireGrace {
			r.store.Close()
			os.RemoveAll(r.dir)
			continue
		}
		keep = append(keep, r)
	}
	p.retired = keep
}

// catalog opens the real directory, taking its lock, for a flip or a status read.
func (p *pebbleSource) catalog(ctx context.Context) (*writers.Store, func(), error) {
	s, err := pebble.Open(p.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errStoreBusy, err)
	}
	return s, func() { s.Close() }, nil
}

func (p *pebbleSource) watch(context.Context, string, chan<- struct{}) {}

func (p *pebbleSource) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reap(true)
	if p.cur != nil {
		p.cur.Close()
		os.RemoveAll(p.curDir)
		p.cur = nil
	}
	return nil
}
