package main

import (
	"errors"
	"log/slog"
	"net"

	"github.com/spf13/cobra"

	"github.com/staticref/staticref/lookup"
)

func newServeCmd() *cobra.Command {
	var config, addr string
	c := &cobra.Command{
		Use:   "serve --config FILE [--addr :8080]",
		Short: "Serve the live predictions of namespaces over HTTP (and gRPC)",
		Long: `serve answers GET /v1/{namespace}/{key} from each namespace's live version, follows
flips within a second, and falls back to segment defaults, online predictions or a
global default for unknown keys. With grpc_addr in the config it also serves the gRPC
service staticref.v1.Lookup (Get, BatchGet; server reflection on). See docs/lookup.md
for the config and both APIs.

It stops on SIGINT or SIGTERM after finishing the requests in flight.
Exit status: 2 on a bad config or flag, 1 when serving fails.`,
		Example: `  staticref serve --config deploy/lookup.yaml
  curl localhost:8080/v1/churn/u000000042
  curl -X POST localhost:8080/v1/churn:batchGet -d '{"keys":["u000000001","u000000002"]}'
  grpcurl -plaintext -d '{"namespace":"churn","key":"u000000042"}' localhost:9090 staticref.v1.Lookup/Get`,
		Args: args(0, 0),
		RunE: func(c *cobra.Command, _ []string) error {
			if err := requireFlags(c, "config"); err != nil {
				return err
			}
			cfg, err := lookup.LoadConfig(config)
			if err != nil {
				return usageError{err}
			}
			for name, n := range cfg.Namespaces {
				if err := refuseExportOnly("namespaces."+name+".store", n.Store); err != nil {
					return err
				}
			}
			if addr != "" {
				cfg.Addr = addr
			}
			svc, err := lookup.New(c.Context(), cfg, slog.Default())
			if errors.Is(err, lookup.ErrConfig) {
				return usageError{err}
			}
			if err != nil {
				return err
			}
			defer svc.Close()
			ln, err := net.Listen("tcp", cfg.Addr)
			if err != nil {
				return usagef("--addr %s: %v", cfg.Addr, err)
			}
			return svc.Run(c.Context(), ln)
		},
	}
	c.Flags().StringVar(&config, "config", "", "service config (YAML)")
	c.Flags().StringVar(&addr, "addr", "", "listen address, overriding addr in the config (default :8080)")
	return c
}
