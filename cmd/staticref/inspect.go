package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/staticref/staticref/inference"
	"github.com/staticref/staticref/readers"
)

func newInspectCmd() *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "inspect FILE.onnx|FILE.parquet",
		Short: "Show a model's inputs and outputs, or a Parquet file's schema and row groups",
		Example: `  staticref inspect testdata/models/logistic.onnx
  staticref inspect testdata/features/part-00000.parquet -o json
  staticref inspect 's3://features/dt=2026-11-30/part-00000.parquet?region=eu-west-1'`,
		Args: args(1, 1),
		RunE: func(c *cobra.Command, a []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			path := a[0]
			name, _, _ := strings.Cut(path, "?") // an object URL's bucket options
			switch strings.ToLower(filepath.Ext(name)) {
			case ".onnx":
				if err := inference.Init(); err != nil {
					return err
				}
				info, err := inference.Inspect(c.Context(), path)
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(c, info)
				}
				w := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintf(w, "model %s\nsha256 %s\n\nKIND\tNAME\tTYPE\n", info.Path, info.SHA256)
				for _, t := range info.Inputs {
					fmt.Fprintf(w, "input\t%s\t%s %s %v\n", t.Name, t.Kind, t.ElemType, t.Shape)
				}
				for _, t := range info.Outputs {
					fmt.Fprintf(w, "output\t%s\t%s %s %v\n", t.Name, t.Kind, t.ElemType, t.Shape)
				}
				return w.Flush()
			case ".parquet", ".parq", ".pq":
				d, err := readers.DescribeContext(c.Context(), path)
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(c, d)
				}
				w := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintf(w, "file %s: %d bytes, %d rows, %d row groups, written by %s\n\nCOLUMN\tARROW TYPE\tNULLABLE\n",
					d.Path, d.Bytes, d.Rows, len(d.RowGroups), d.CreatedBy)
				for _, col := range d.Columns {
					fmt.Fprintf(w, "%s\t%s\t%v\n", col.Name, col.Type, col.Nullable)
				}
				fmt.Fprintf(w, "\nROW GROUP\tROWS\tBYTES\tCODECS\n")
				for _, rg := range d.RowGroups {
					fmt.Fprintf(w, "%d\t%d\t%d\t%s\n", rg.Index, rg.Rows, rg.Bytes, strings.Join(rg.Codecs, ","))
				}
				return w.Flush()
			default:
				return usagef("inspect %s: name an .onnx or .parquet file", path)
			}
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return c
}
