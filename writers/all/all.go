// Package all links every store driver into a program: import it for its side effect,
// and writers.Open opens pebble:, redis:, rediss:, redis+cluster: and bigtable: URLs.
// Programs that need fewer drivers import those driver packages alone.
package all

import (
	_ "github.com/staticref/staticref/writers/bigtable" // bigtable://
	_ "github.com/staticref/staticref/writers/pebble"   // pebble:
	_ "github.com/staticref/staticref/writers/redis"    // redis://, rediss://, redis+cluster://
)
