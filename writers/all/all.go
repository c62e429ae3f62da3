// Package all links every store driver into a program: import it for its side effect,
// and writers.Open opens pebble:, redis:, rediss:, redis+cluster:, bigtable: and the
// export-only parquet: (and parquet+s3:, parquet+gs:, parquet+azblob:, parquet+file:) URLs.
// Programs that need fewer drivers import those driver packages alone.
package all

import (
	_ "github.com/staticref/staticref/writers/bigtable" // bigtable://
	_ "github.com/staticref/staticref/writers/parquet"  // parquet:, parquet+s3:// …
	_ "github.com/staticref/staticref/writers/pebble"   // pebble:
	_ "github.com/staticref/staticref/writers/redis"    // redis://, rediss://, redis+cluster://
)
