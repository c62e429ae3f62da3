package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/staticref/staticref/inference/onnxgen"
	"github.com/staticref/staticref/readers/shardgen"
)

// The seeds of `testdata generate`: tests that recompute predictions use the same ones.
const (
	dataSeed  = 1
	modelSeed = 7
)

func newTestdataCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "testdata",
		Short: "Generate deterministic feature shards and ONNX models with known weights",
	}
	group(c)
	var (
		out   string
		spec  = shardgen.Spec{Seed: dataSeed}
		codec string
	)
	gen := &cobra.Command{
		Use:   "generate --out DIR [--rows N --shards K]",
		Short: "Write DIR/features/part-*.parquet and DIR/models/*.onnx",
		Long: `generate writes a deterministic data set: Parquet shards with a string key (user_id),
float64/float32/int32/int64 features (f0..f3), an embedding list<float32> column, a
segment column (country) and a column no job uses (note), in several row groups; and
ONNX models built with known weights: logistic.onnx (score, logit), mlp.onnx (scores),
embedding.onnx (reads the embedding column) and zipmap.onnx (an sklearn-style
classifier with a non-tensor output).`,
		Example: `  staticref testdata generate --out demo --rows 200000 --shards 4
  staticref testdata generate --out big --rows 2000000 --shards 8 --codec snappy
  # a backfill: keys u000047000.. with new values, 3000 of them overlapping the first set
  staticref testdata generate --out backfill --rows 5000 --shards 1 --first-row 47000 --seed 2`,
		Args: args(0, 0),
		RunE: func(c *cobra.Command, _ []string) error {
			if err := requireFlags(c, "out"); err != nil {
				return err
			}
			if spec.Rows < 1 || spec.Shards < 1 || spec.Shards > spec.Rows {
				return usagef("--rows %d --shards %d: need rows >= shards >= 1", spec.Rows, spec.Shards)
			}
			spec.Codec = codec
			files, err := shardgen.Generate(filepath.Join(out, "features"), spec)
			if err != nil {
				return err
			}
			models := filepath.Join(out, "models")
			if err := os.MkdirAll(models, 0o755); err != nil {
				return err
			}
			for _, m := range []*onnxgen.Model{
				onnxgen.Logistic(4, modelSeed),
				onnxgen.MLP(4, 16, modelSeed),
				onnxgen.Embedding(shardgen.EmbeddingDim, modelSeed),
				onnxgen.ZipMapClassifier(4, modelSeed),
			} {
				if err := m.Write(filepath.Join(models, m.Name+".onnx")); err != nil {
					return err
				}
			}
			fmt.Fprintf(c.OutOrStdout(), "wrote %d rows in %d shards to %s and 4 models to %s\n",
				spec.Rows, len(files), filepath.Join(out, "features"), models)
			return nil
		},
	}
	f := gen.Flags()
	f.StringVar(&out, "out", "", "output directory")
	f.IntVar(&spec.Rows, "rows", 100000, "rows over all shards")
	f.IntVar(&spec.Shards, "shards", 4, "number of Parquet files")
	f.IntVar(&spec.RowGroupRows, "row-group-rows", 10000, "rows per row group")
	f.StringVar(&codec, "codec", "zstd", "compression: zstd or snappy")
	f.Int64Var(&spec.FirstRow, "first-row", 0, "number of the first row: keys from u<first-row> on (a backfill's overlapping keys)")
	f.Uint64Var(&spec.Seed, "seed", dataSeed, "selects the feature values: another seed gives the same keys new values")
	c.AddCommand(gen)
	return c
}
