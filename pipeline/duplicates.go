package pipeline

import (
	"context"

	"github.com/staticref/staticref/pipeline/dupkeys"
	"github.com/staticref/staticref/readers"
)

// rereadKeys collects the key of every row the version holds, reading every row group
// again (with the same null handling as the run, so that exactly the rows written
// count): for a resumed or sharded run, whose own process wrote only some of them. It
// costs a scan of the input, not of the store. When sample is not nil, it is emptied
// and given the same keys.
func (r *run) rereadKeys(ctx context.Context, all []task, sample *keySample) (*dupkeys.Counter, error) {
	keys := dupkeys.New(0, "")
	if sample != nil {
		sample.reset()
	}
	fill, filling := r.job.Source.NullFill()
	c := newChunk(r.job.Model.BatchSize, r.model.Width)
	var f Input
	open := ""
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	for _, t := range all {
		if t.file != open {
			if f != nil {
				f.Close()
				f = nil
			}
			var err error
			if f, err = r.cfg.Deps.OpenInput(ctx, t.file, r.ropts); err != nil {
				keys.Close()
				return nil, err
			}
			open = t.file
		}
		err := f.ReadRowGroup(ctx, t.rg, func(b *readers.Batch) error {
			if err := c.load(b, r.model.Width, false, fill, filling); err != nil {
				return err
			}
			for i := range c.n {
				if c.keyValid[i] && c.valid[i] {
					if err := keys.Add(c.key(i)); err != nil {
						return err
					}
					if sample != nil {
						sample.add(c.key(i))
					}
				}
			}
			return nil
		})
		if err != nil {
			keys.Close()
			return nil, err
		}
	}
	return keys, nil
}
