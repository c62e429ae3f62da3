package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/staticref/staticref/readers"
	"github.com/staticref/staticref/writers"
)

func (r *run) createVersion(ctx context.Context) error {
	start := r.now().UTC()
	id := r.cfg.Version
	if id == "" {
		var err error
		if id, err = writers.NewVersionID(ctx, r.store, r.ns, start); err != nil {
			return fmt.Errorf("new version: %w", err)
		}
	} else {
		if err := writers.ValidateVersion(id); err != nil {
			return fmt.Errorf("--version: %w", err)
		}
		old, err := r.store.Manifest(ctx, r.ns, id)
		switch {
		case err == nil:
			return r.resume(ctx, old)
		case !errors.Is(err, writers.ErrNotFound):
			return fmt.Errorf("read manifest %s: %w", id, err)
		}
	}
	mode, base, depth, err := r.chainOnto(ctx)
	if err != nil {
		return err
	}
	r.m = &writers.Manifest{
		Namespace: r.ns,
		Version:   id,
		Job:       r.job.Name,
		State:     writers.StateWriting,
		Mode:      mode,
		Base:      base,
		Depth:     depth,
		Model:     r.model.Info,
		Key:       r.job.Source.Key,
		Features:  r.job.Source.Features,
		Encoding:  r.job.Sink.Encoding,
		Outputs:   r.model.Outputs,
		StartedAt: start,
		Export:    r.exportInfo(),
	}
	for _, f := range r.files {
		r.m.Sources = append(r.m.Sources, writers.Source{Path: f.Path, Bytes: f.Bytes, Rows: f.Rows})
		// Every file's footer row count, in a sharded run too (all shards create the
		// same manifest): the store sizes the version's layout by it (Redis' buckets).
		r.m.ExpectedRows += f.Rows
	}
	r.m.KeyPrefix = keyPrefix(r.files)
	if err := r.store.PutManifest(ctx, r.m); err != nil {
		return fmt.Errorf("create version %s: %w", id, err)
	}
	r.created = true
	r.log.Info("version started", "namespace", r.ns, "version", id, "shards", len(r.files), "device", r.model.Device)
	return nil
}

// resume continues a version that a failed or killed run left writing (or failed): the
// row groups it committed are kept and skipped. It must be the same job over the same
// files with the same model, or the version would mix two computations.
func (r *run) resume(ctx context.Context, old *writers.Manifest) error {
	id := old.Version
	if r.sharded() && old.State != writers.StateWriting && old.State != writers.StateFailed {
		r.m = old // complete already: Run has nothing to do
		return nil
	}
	if old.State != writers.StateWriting && old.State != writers.StateFailed {
		return fmt.Errorf("version %s of %s is %s: only a writing or failed version can be resumed; choose another --version", id, r.ns, old.State)
	}
	var problems []string
	if old.Model.SHA256 != r.model.Info.SHA256 {
		problems = append(problems, fmt.Sprintf("model sha256 %s, now %s", old.Model.SHA256, r.model.Info.SHA256))
	}
	if oldMode, mode := modeOf(old), r.job.Sink.Mode; oldMode != mode {
		problems = append(problems, fmt.Sprintf("sink.mode %s, now %s", oldMode, mode))
	}
	if old.Encoding != r.job.Sink.Encoding {
		problems = append(problems, fmt.Sprintf("encoding %s, now %s", old.Encoding, r.job.Sink.Encoding))
	}
	if old.Key != r.job.Source.Key || !slices.Equal(old.Features, r.job.Source.Features) {
		problems = append(problems, fmt.Sprintf("key %s and features %v, now %s and %v", old.Key, old.Features, r.job.Source.Key, r.job.Source.Features))
	}
	if !slices.Equal(old.Outputs, r.model.Outputs) {
		problems = append(problems, fmt.Sprintf("outputs %v, now %v", old.Outputs, r.model.Outputs))
	}
	problems = append(problems, r.exportProblems(old)...)
	var now []writers.Source
	for _, f := range r.files {
		now = append(now, writers.Source{Path: f.Path, Bytes: f.Bytes, Rows: f.Rows})
	}
	if !slices.Equal(old.Sources, now) {
		problems = append(problems, fmt.Sprintf("%d source files, now %d (or their sizes differ)", len(old.Sources), len(now)))
	}
	if len(problems) > 0 {
		return fmt.Errorf("cannot resume version %s of %s: it was written with %s", id, r.ns, strings.Join(problems, "; "))
	}
	r.m = old
	if old.State != writers.StateWriting {
		// Only a failed version is rewritten: another shard may be completing a writing one.
		old.State, old.Error, old.CompletedAt = writers.StateWriting, "", time.Time{}
		if err := r.store.PutManifest(ctx, r.m); err != nil {
			return fmt.Errorf("resume version %s: %w", id, err)
		}
	}
	r.created = true
	r.log.Info("version resumed", "namespace", r.ns, "version", id)
	return nil
}

// fail records why the version failed. It uses a fresh context: the run's own is often
// the one that was cancelled.
func (r *run) fail(cause error) {
	if !r.created || r.sharded() {
		// A shard's failure is retried by its own index (Kubernetes' backoffLimitPerIndex);
		// marking the version failed would stop the other shards' writes.
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r.m.State = writers.StateFailed
	r.m.Error = cause.Error()
	r.m.CompletedAt = r.now().UTC()
	if err := r.store.PutManifest(ctx, r.m); err != nil {
		r.log.Error("could not mark version failed", "version", r.m.Version, "err", err)
	}
}

// keyPrefix is the prefix every key of the files has by their footers (see
// readers.FileInfo.KeyPrefix), for the store's layout: the common prefix of the files'
// own, of whole characters. Files without rows say nothing.
func keyPrefix(files []readers.FileInfo) string {
	prefix, seen := "", false
	for _, f := range files {
		if f.Rows == 0 {
			continue
		}
		if !seen {
			prefix, seen = f.KeyPrefix, true
			continue
		}
		n := 0
		for n < len(prefix) && n < len(f.KeyPrefix) && prefix[n] == f.KeyPrefix[n] {
			n++
		}
		prefix = prefix[:n]
	}
	for prefix != "" && !utf8.ValidString(prefix) {
		prefix = prefix[:len(prefix)-1]
	}
	return prefix
}
