package main

import (
	"encoding/json"
	"time"

	"github.com/spf13/cobra"

	"github.com/staticref/staticref/lookup"
	"github.com/staticref/staticref/writers"
)

func newGetCmd() *cobra.Command {
	var store, ns string
	c := &cobra.Command{
		Use:   "get --store URL --namespace NS KEY...",
		Short: "Print the live prediction of each key, one JSON object a line",
		Long: `get answers each key from the namespace's live version, one JSON object a line, in the
shape of the lookup API's answer. A key the live version lacks prints an object with
"error": {"code": "not_found"} and makes the exit status 1.`,
		Example: `  staticref get --store pebble:.staticref/store --namespace demo u000000001 u000000002
  # keys that begin with '-' follow --
  staticref get --store redis://localhost:6379/0 --namespace churn -- -42`,
		Args: args(1, -1),
		RunE: func(c *cobra.Command, keys []string) error {
			if err := requireFlags(c, "store", "namespace"); err != nil {
				return err
			}
			if err := writers.ValidateNamespace(ns); err != nil {
				return usageError{err}
			}
			if err := refuseExportOnly("--store", store); err != nil {
				return err
			}
			s, err := openStore(c, store)
			if err != nil {
				return err
			}
			defer s.Close()
			snap, err := lookup.Resolve(c.Context(), s, ns)
			if err != nil {
				return err
			}
			enc := json.NewEncoder(c.OutOrStdout())
			missing := false
			for _, k := range keys {
				a, err := snap.Get(c.Context(), s, k, time.Now())
				if err != nil {
					return err
				}
				missing = missing || a.Error != nil
				if err := enc.Encode(a); err != nil {
					return err
				}
			}
			if missing {
				return silentError{exitFailed}
			}
			return nil
		},
	}
	c.Flags().StringVar(&store, "store", "", "store URL (pebble:DIR, redis://…, bigtable://…)")
	c.Flags().StringVar(&ns, "namespace", "", "namespace")
	return c
}
