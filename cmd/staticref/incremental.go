package main

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/staticref/staticref/jobs"
	"github.com/staticref/staticref/pipeline"
	"github.com/staticref/staticref/writers"
)

// maintainFlags are the flags delete and versions compact share.
type maintainFlags struct {
	store, ns, output string
	noFlip, wait      bool
	keep              int
	leaseTTL          time.Duration
}

func (f *maintainFlags) add(c *cobra.Command, withStore bool) {
	fl := c.Flags()
	if withStore {
		fl.StringVar(&f.store, "store", "", "store URL")
		fl.StringVar(&f.ns, "namespace", "", "namespace")
	}
	fl.BoolVar(&f.noFlip, "no-flip", false, "leave the complete version for a later versions flip")
	fl.BoolVar(&f.wait, "wait", false, "wait for another writer of the namespace to finish instead of failing")
	fl.IntVar(&f.keep, "keep", jobs.DefaultKeep, "previous versions gc keeps after the flip")
	fl.DurationVar(&f.leaseTTL, "lease-ttl", pipeline.DefaultLeaseTTL, "writer lease lifetime")
	fl.StringVarP(&f.output, "output", "o", "text", "summary format: text or json (the manifest)")
}

func (f *maintainFlags) config(s *writers.Store) pipeline.MaintainConfig {
	return pipeline.MaintainConfig{Store: s, Namespace: f.ns, NoFlip: f.noFlip, Keep: f.keep, Wait: f.wait,
		LeaseTTL: f.leaseTTL, Log: slog.Default()}
}

func (f *maintainFlags) check(c *cobra.Command) error {
	if err := requireFlags(c, "store", "namespace"); err != nil {
		return err
	}
	if err := writers.ValidateNamespace(f.ns); err != nil {
		return usageError{err}
	}
	if f.keep < 0 {
		return usagef("--keep %d: use 0 or more", f.keep)
	}
	return checkOutput(f.output)
}

func newDeleteCmd() *cobra.Command {
	var (
		f        maintainFlags
		keysFile string
		maxChain int
	)
	c := &cobra.Command{
		Use:   "delete --store URL --namespace NS KEY...|--keys-file FILE",
		Short: "Delete keys: an incremental version of tombstones on top of the live one, flipped live",
		Long: `delete writes an incremental version that holds a tombstone for each key, on top of
the live version, and flips it live through the usual compare-and-swap (unless --no-flip).
Those keys then get the cold-start answers (segment or global default, online prediction,
or not_found), as a key no run ever saw. A rollback brings them back.

The values stay in the versions beneath until the chain is compacted and gc removes them:
for an erasure, follow with "versions compact" and "versions gc --keep 0".

--keys-file names a file of one key per line ("-": standard input); blank lines are
skipped. Exit status: 0 on success, 1 on a failure (the live version untouched), 2 on bad
usage.`,
		Example: `  staticref delete --store pebble:.staticref/store --namespace churn u000000042 u000000043
  staticref delete --store redis://localhost:6379/0 --namespace churn --keys-file erasures.txt
  # then drop the rows for good
  staticref versions compact --store redis://localhost:6379/0 --namespace churn
  staticref versions gc --store redis://localhost:6379/0 --namespace churn --keep 0`,
		RunE: func(c *cobra.Command, a []string) error {
			if err := f.check(c); err != nil {
				return err
			}
			keys, err := deleteKeys(a, keysFile)
			if err != nil {
				return err
			}
			s, err := openStore(c, f.store)
			if err != nil {
				return err
			}
			defer s.Close()
			cfg := f.config(s)
			cfg.MaxChain = maxChain
			res, err := pipeline.Delete(c.Context(), cfg, keys)
			if res != nil && res.Manifest != nil {
				printSummary(c, res, f.output, f.store)
			}
			return err
		},
	}
	f.add(c, true)
	c.Flags().StringVar(&keysFile, "keys-file", "", `file of keys to delete, one a line ("-": standard input)`)
	c.Flags().IntVar(&maxChain, "max-chain", writers.DefaultMaxChain, "refuse when the live chain is already this deep (compact it first)")
	return c
}

// deleteKeys are the keys named on the command line and in the keys file.
func deleteKeys(args []string, file string) ([][]byte, error) {
	var keys [][]byte
	for _, k := range args {
		keys = append(keys, []byte(k))
	}
	if file != "" {
		in := os.Stdin
		if file != "-" {
			fh, err := os.Open(file)
			if err != nil {
				return nil, usagef("--keys-file: %v", err)
			}
			defer fh.Close()
			in = fh
		}
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64*1024), writers.MaxKeyLen+2)
		for line := 1; sc.Scan(); line++ {
			k := strings.TrimRight(sc.Text(), "\r")
			if k == "" {
				continue
			}
			if err := writers.ValidateKey([]byte(k)); err != nil {
				return nil, usagef("--keys-file %s line %d: %v", file, line, err)
			}
			keys = append(keys, []byte(k))
		}
		if err := sc.Err(); err != nil {
			return nil, usagef("--keys-file %s: %v", file, err)
		}
	}
	if len(keys) == 0 {
		return nil, usagef("no keys to delete: name them, or give --keys-file")
	}
	for _, k := range keys {
		if err := writers.ValidateKey(k); err != nil {
			return nil, usageError{err}
		}
	}
	return keys, nil
}

// newCompactCmd is `versions compact`; store and namespace are versions' own flags.
func newCompactCmd(store, ns *string) *cobra.Command {
	var f maintainFlags
	c := &cobra.Command{
		Use:   "compact --store URL --namespace NS",
		Short: "Write a full version from the live chain of incremental versions, inside the store, and flip it",
		Long: `compact writes a new full version holding every key the live chain answers (the live
incremental version and its bases, newest first), with the value it answers and without the
deleted keys, all inside the store (no model run), then flips it live through its gates:
min_rows_ratio (every key the chain answers was written) and max_null_fraction. Run it when
a chain nears sink.max_chain, or after deletions to drop the deleted rows for good (then
versions gc). A live version that is already full is left alone (exit 0).`,
		Example: `  staticref versions compact --store pebble:.staticref/store --namespace churn
  staticref versions compact --store redis://localhost:6379/0 --namespace churn --no-flip`,
		Args: args(0, 0),
		RunE: func(c *cobra.Command, _ []string) error {
			f.store, f.ns = *store, *ns
			if err := f.check(c); err != nil {
				return err
			}
			s, err := openStore(c, f.store)
			if err != nil {
				return err
			}
			defer s.Close()
			res, err := pipeline.Compact(c.Context(), f.config(s))
			if errors.Is(err, pipeline.ErrNothingToCompact) {
				fmt.Fprintf(c.ErrOrStderr(), "%s: live version %s is a full version: nothing to compact\n", f.ns, res.Manifest.Version)
				return nil
			}
			if res != nil && res.Manifest != nil {
				printSummary(c, res, f.output, f.store)
			}
			return err
		},
	}
	f.add(c, false)
	return c
}
