package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strconv"
	"sync"
	"unicode/utf8"

	goredis "github.com/redis/go-redis/v9"

	"github.com/staticref/staticref/writers"
)

// Row layouts. A version's manifest records how its rows are laid out (writers.Layout),
// chosen by ChooseLayout when the version is created and never changed after:
//
//	plain (or no layout: every version written before layouts existed)
//	    sr:NS:VERSION:KEY          string  the value; one Redis key per row
//	hash-buckets, B buckets
//	    sr:NS:VERSION#N            hash    FIELD -> value, for every KEY with
//	                                       fnv1a64(KEY) mod B == N (0 <= N < B);
//	                                       FIELD is KEY, less the layout's strip
//	                                       prefix when it has one (layout.field)
//
// Why buckets. A Redis key costs about 100 bytes beyond its name and value (the
// keyspace's dict entry, the key's and value's objects, allocator rounding), and in the
// plain layout every row's key name repeats "sr:NS:VERSION:": 153 bytes a row for a
// 10-byte key and a 40-byte value. A small hash is stored as one listpack, a flat byte
// array holding field, value, field, value… with two bytes of overhead per entry, as
// long as it has at most hash-max-listpack-entries fields and none longer than
// hash-max-listpack-value bytes; past either, Redis converts it to a real hash table,
// which costs nearly as much per entry as a key. ChooseLayout therefore reads both
// settings (CONFIG GET; the defaults of redis.conf, 128 and 64, where CONFIG is refused)
// and picks B from the expected row count so that even the fullest of the B buckets
// stays within the entry limit (bucketsFor). The bucket's key names are the readable
// sr:NS:VERSION#N: one name per bucket of about a hundred rows costs under half a byte a
// row, so nothing is gained by a shorter id. No bucket key carries a hash tag, so a
// cluster spreads the buckets of a version over every master; '#' cannot occur in a
// namespace or a version, so no bucket key is a plain row key of any version, and
// "sr:NS:VERSION:*" still matches exactly one plain version's rows.
//
// A listpack entry costs two bytes beyond its data, so a row costs four beyond its key
// and value, before allocator rounding: 22 bytes for a 10-byte key and an 8-byte value.
// Keys often share a prefix ("user_", "u000"), which the input's footers reveal before
// any row is read (writers.Manifest.KeyPrefix); the fields then drop it. That is exact:
// a key without the prefix (statistics can be wrong) is stored as 0xFF and the whole
// key, and no UTF-8 key, nor any key less a prefix of whole characters, begins with
// 0xFF, so no two keys ever share a field.
//
// Values too long for a listpack (a model with many outputs, JSON-encoded) still go into
// buckets: a hash-table bucket costs about a third less per row than a key per row. The
// layout's note says so. Keys longer than the value limit make their own bucket a hash
// table; nothing else changes.
//
// Every bucket of a version is known from its manifest, so counting a version's rows is
// an exact sum of HLENs (no SCAN, which may return a key twice while the keyspace is
// resized), and gc unlinks exactly those keys.

// layout is a version's row layout as the driver uses it: buckets 0 is plain.
type layout struct {
	buckets uint64
	strip   string // taken off a key's front to make its field (writers.Layout.Strip)
}

// decodeLayout reads a manifest's layout.
func decodeLayout(l *writers.Layout) (layout, error) {
	if l == nil || l.Kind == writers.LayoutPlain {
		return layout{}, nil
	}
	if l.Kind != writers.LayoutHashBuckets {
		return layout{}, fmt.Errorf("the version's rows have layout %q, which this staticref does not know: upgrade it", l.Kind)
	}
	if l.Hash != writers.HashFNV1a64 || l.Buckets < 1 {
		return layout{}, fmt.Errorf("the version's hash-buckets layout has hash %q and %d buckets, which this staticref cannot read", l.Hash, l.Buckets)
	}
	return layout{buckets: uint64(l.Buckets), strip: l.Strip}, nil
}

// field is key's field in its bucket: key without the layout's strip prefix when it has
// it, else 0xFF and the whole key (see writers.Layout.Strip: never two keys one field).
func (l layout) field(key []byte) []byte {
	if l.strip == "" {
		return key
	}
	if len(key) >= len(l.strip) && string(key[:len(l.strip)]) == l.strip {
		return key[len(l.strip):]
	}
	return append([]byte{0xff}, key...)
}

// key is the key whose field in its bucket is f: field's inverse.
func (l layout) key(f string) []byte {
	switch {
	case l.strip == "":
		return []byte(f)
	case len(f) > 0 && f[0] == 0xff:
		return []byte(f[1:])
	}
	return []byte(l.strip + f)
}

// bucket is the bucket of key.
func (l layout) bucket(key []byte) uint64 {
	h := fnv.New64a()
	h.Write(key)
	return h.Sum64() % l.buckets
}

func bucketPrefix(ns, version string) string { return "sr:" + ns + ":" + version + "#" }

func bucketKey(prefix string, b uint64) string { return prefix + strconv.FormatUint(b, 10) }

// Listpack limits of a server that does not let us ask: redis.conf's defaults.
const (
	defaultListpackEntries = 128
	defaultListpackValue   = 64
)

// maxBucketEntries caps the rows a bucket is sized for, whatever the server allows: a
// listpack is searched from its start by HGET and HSET alike, and Redis 7 compiles in
// 512 entries when redis.conf does not say 128. Measured on such a server (2M rows,
// json, 2026-12-01, medians of 3): buckets of 415 rows cost the server 3.76 s of HSET
// time (1.9 us a row), buckets of 103 rows 2.46 s (1.2 us), for 31.6 against 33.7 bytes
// a row of memory. A Redis server is one thread, shared: its time is the dearer.
const maxBucketEntries = 128

// bucketsWhenUnknown is the bucket count of a version created without an expected row
// count: ample for the small versions that are created so (tests, deletions), and for a
// big one still far smaller than a key per row (its buckets become hash tables).
const bucketsWhenUnknown = 1024

// ChooseLayout implements writers.LayoutChooser: hash buckets, as many as bucketsFor
// says for the expected rows (m.ExpectedRows, else the rows of m.Sources) under the
// server's listpack limits.
func (d *Driver) ChooseLayout(ctx context.Context, m *writers.Manifest) (*writers.Layout, error) {
	entries, valueLimit, asked, err := d.listpackLimits(ctx)
	if err != nil {
		return nil, d.fail(err)
	}
	expected := m.ExpectedRows
	if expected <= 0 {
		for _, s := range m.Sources {
			expected += s.Rows
		}
	}
	l := &writers.Layout{Kind: writers.LayoutHashBuckets, Hash: writers.HashFNV1a64}
	limits := fmt.Sprintf("hash-max-listpack-entries %d, hash-max-listpack-value %d", entries, valueLimit)
	if !asked {
		limits += " (assumed: CONFIG GET was refused)"
	}
	if expected <= 0 {
		l.Buckets = bucketsWhenUnknown
		l.Note = fmt.Sprintf("expected rows unknown: %d buckets; %s", l.Buckets, limits)
	} else {
		l.Buckets = bucketsFor(expected, min(entries, maxBucketEntries))
		l.Note = fmt.Sprintf("%d expected rows in %d buckets, about %.0f each; %s", expected, l.Buckets, float64(expected)/float64(l.Buckets), limits)
	}
	if p := m.KeyPrefix; p != "" && utf8.ValidString(p) {
		l.Strip = p
		l.Note += fmt.Sprintf("; fields are the keys less their common prefix %q", p)
	}
	if n := writers.MaxValueLen(m.Encoding, m.Outputs); len(m.Outputs) > 0 && n > valueLimit {
		l.Note += fmt.Sprintf("; values of up to %d bytes exceed the value limit, so buckets holding them are hash tables", n)
	}
	return d.recordLayout(ctx, m.Namespace, m.Version, l)
}

// recordLayout makes l the layout of ns/version unless one is recorded already, and
// returns the one that is. The record (HSETNX into {sr:NS}:layouts) is what decides:
// the shards of a sharded run that create one version at once may each choose (and a
// cluster answers CONFIG GET from any master, whose settings may differ during a
// rollout), but all adopt the first record. It is also kept apart from the manifest, so
// that a manifest rewritten by a binary that predates layouts (an old `versions flip`
// during an upgrade drops fields it does not know) cannot turn a bucketed version into
// an empty plain one.
func (d *Driver) recordLayout(ctx context.Context, ns, version string, l *writers.Layout) (*writers.Layout, error) {
	data, err := json.Marshal(l)
	if err != nil {
		return nil, err
	}
	var stored *writers.Layout
	err = d.retry(ctx, func(ctx context.Context) error {
		set, err := d.client.HSetNX(ctx, layoutsKey(ns), version, data).Result()
		if err != nil || set {
			return err
		}
		stored, _, err = d.storedLayout(ctx, ns, version)
		return err
	})
	switch {
	case err != nil:
		return nil, d.fail(err)
	case stored != nil:
		return stored, nil
	}
	return l, nil
}

// storedLayout reads the recorded layout of ns/version; ok is false when none is (a
// version written before layouts were recorded).
func (d *Driver) storedLayout(ctx context.Context, ns, version string) (*writers.Layout, bool, error) {
	data, err := d.client.HGet(ctx, layoutsKey(ns), version).Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	l := new(writers.Layout)
	if err := json.Unmarshal(data, l); err != nil {
		return nil, false, fmt.Errorf("decode the layout of version %s: %w", version, err)
	}
	return l, true, nil
}

// listpackLimits returns the server's hash-max-listpack-entries and -value (Redis 7;
// hash-max-ziplist-* before), or redis.conf's defaults when the server refuses CONFIG
// (managed services often disable it), with asked false. Any other failure is an error:
// guessing then could make two shards creating one version choose different layouts.
func (d *Driver) listpackLimits(ctx context.Context) (entries, value int, asked bool, err error) {
	entries, value = defaultListpackEntries, defaultListpackValue
	var cfg map[string]string
	err = d.retry(ctx, func(ctx context.Context) (err error) {
		cfg, err = d.client.ConfigGet(ctx, "hash-max-*").Result()
		return err
	})
	var refused goredis.Error
	if errors.As(err, &refused) && !isTransient(err) {
		return entries, value, false, nil // the server answered: no CONFIG for us
	}
	if err != nil {
		return 0, 0, false, err
	}
	pick := func(names ...string) (int, bool) {
		for _, n := range names {
			if v, err := strconv.Atoi(cfg[n]); err == nil && v >= 0 {
				return v, true
			}
		}
		return 0, false
	}
	e, ok1 := pick("hash-max-listpack-entries", "hash-max-ziplist-entries")
	v, ok2 := pick("hash-max-listpack-value", "hash-max-ziplist-value")
	if !ok1 || !ok2 {
		return entries, value, false, nil
	}
	return e, v, true, nil
}

// overflowBudget is the expected number of a version's buckets that may exceed the
// listpack entry limit (bucketsFor).
const overflowBudget = 0.01

// bucketsFor is the bucket count for n rows with at most limit entries per listpack: the
// fewest buckets (fewer names, fewer HLENs and UNLINKs) for which the expected number of
// buckets holding more than limit rows stays under overflowBudget. Rows fall into
// buckets at random (a good hash of distinct keys), so a bucket's count is Poisson with
// mean n/B; for a million rows and a limit of 128 that is about 80 rows a bucket, whose
// fullest holds about 115.
func bucketsFor(n int64, limit int) int64 {
	if limit < 1 {
		return max(n, 1) // listpacks turned off: a bucket per row costs what a key does
	}
	for mean := float64(limit); mean >= 1; mean-- {
		b := int64(math.Ceil(float64(n) / mean))
		if float64(b)*poissonTail(float64(n)/float64(b), limit) <= overflowBudget {
			return b
		}
	}
	return max(n, 1)
}

// poissonTail is P(X > k) for X ~ Poisson(mean).
func poissonTail(mean float64, k int) float64 {
	// Sum the upper tail from k+1 outwards until the terms vanish; in log space, so a
	// big mean does not overflow.
	logP := float64(k+1)*math.Log(mean) - mean - lgamma(float64(k+2))
	sum := 0.0
	for i := k + 1; i < k+1+10*int(mean+10); i++ {
		sum += math.Exp(logP)
		logP += math.Log(mean) - math.Log(float64(i+1))
		if logP < -60 && float64(i) > mean {
			break
		}
	}
	return sum
}

func lgamma(x float64) float64 { v, _ := math.Lgamma(x); return v }

// layouts remembers the layout of every version the driver has read or written. A
// layout never changes once chosen, so entries never go stale; PutManifest and
// DeleteVersion drop theirs anyway, and the map is emptied when it grows past
// maxLayouts (a lookup service reads a handful of versions).
type layouts struct {
	mu sync.Mutex
	m  map[string]layout
}

const maxLayouts = 4096

func (c *layouts) get(ns, version string) (layout, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.m[ns+"\x00"+version]
	return l, ok
}

func (c *layouts) put(ns, version string, l layout) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxLayouts {
		c.m = map[string]layout{}
	}
	c.m[ns+"\x00"+version] = l
}

func (c *layouts) forget(ns, version string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, ns+"\x00"+version)
}

// layoutOf returns the layout of ns/version: the recorded one (recordLayout), else the
// manifest's (none: plain), read the first time. A version with neither a record nor a
// manifest is ErrNotFound (its rows cannot be found either).
func (d *Driver) layoutOf(ctx context.Context, ns, version string) (layout, error) {
	if l, ok := d.layouts.get(ns, version); ok {
		return l, nil
	}
	wl, ok, err := d.storedLayout(ctx, ns, version)
	if err != nil {
		return layout{}, d.fail(err)
	}
	if !ok {
		m, err := d.manifest(ctx, ns, version)
		if err != nil {
			return layout{}, err
		}
		wl = m.Layout
	}
	l, err := decodeLayout(wl)
	if err != nil {
		return layout{}, err
	}
	d.layouts.put(ns, version, l)
	return l, nil
}

// queueReads queues on pipe the commands that read keys of ns/version laid out as l (as
// d.layoutOf returns it; cluster is d.cluster != nil), and returns the function that
// decodes their answers once pipe has been executed: one
// value per key (a copy), nil for a key the version lacks. It sends nothing itself, so
// a caller may queue the reads of several versions (an incremental chain) on one
// pipeline and pay one round trip for all (one per master on a cluster: go-redis
// splits a pipeline by node and sends to every node at once). Errors of pipe.Exec are
// the decoder's to report, per command; a caller may ignore Exec's own error.
//
// Plain rows are one MGET per getManyChunk keys on a single server (a cluster refuses
// multi-key commands across slots, so there it is a GET per key). Bucketed rows are one
// HMGET per bucket that any of the keys falls in: a bucket is one key, so one slot.
func queueReads(ctx context.Context, pipe goredis.Pipeliner, cluster bool, l layout, ns, version string, keys [][]byte) func() ([][]byte, error) {
	if l.buckets > 0 {
		return queueBucketReads(ctx, pipe, l, ns, version, keys)
	}
	prefix := dataPrefix(ns, version)
	if !cluster {
		var cmds []*goredis.SliceCmd
		for lo := 0; lo < len(keys); lo += getManyChunk {
			hi := min(lo+getManyChunk, len(keys))
			names := make([]string, 0, hi-lo)
			for _, k := range keys[lo:hi] {
				names = append(names, prefix+string(k))
			}
			cmds = append(cmds, pipe.MGet(ctx, names...))
		}
		return func() ([][]byte, error) {
			out := make([][]byte, len(keys))
			for c, cmd := range cmds {
				if err := cmd.Err(); err != nil {
					return nil, err
				}
				lo := c * getManyChunk
				if err := copyAnswers(out[lo:min(lo+getManyChunk, len(out))], cmd.Val(), "MGET"); err != nil {
					return nil, err
				}
			}
			return out, nil
		}
	}
	cmds := make([]*goredis.StringCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.Get(ctx, prefix+string(k))
	}
	return func() ([][]byte, error) {
		out := make([][]byte, len(keys))
		for i, cmd := range cmds {
			v, err := cmd.Bytes()
			switch {
			case errors.Is(err, goredis.Nil):
			case err != nil:
				return nil, err
			default:
				if v == nil {
					v = []byte{}
				}
				out[i] = v
			}
		}
		return out, nil
	}
}

// queueBucketReads is queueReads for hash buckets.
func queueBucketReads(ctx context.Context, pipe goredis.Pipeliner, l layout, ns, version string, keys [][]byte) func() ([][]byte, error) {
	prefix := bucketPrefix(ns, version)
	type group struct {
		bucket uint64
		cmd    *goredis.SliceCmd
		fields []string
		index  []int // into keys
	}
	// The keys of a coalesced miss batch are a few, each in its own bucket: a linear
	// search of the groups costs less than a map, which only a long batch gets.
	order := make([]group, 0, len(keys))
	var byBucket map[uint64]int // index into order, past smallBatch keys
	const smallBatch = 32
	if len(keys) > smallBatch {
		byBucket = make(map[uint64]int, len(keys))
	}
	for i, k := range keys {
		b := l.bucket(k)
		at := -1
		if byBucket != nil {
			if j, ok := byBucket[b]; ok {
				at = j
			}
		} else {
			for j := range order {
				if order[j].bucket == b {
					at = j
					break
				}
			}
		}
		if at < 0 {
			at = len(order)
			order = append(order, group{bucket: b})
			if byBucket != nil {
				byBucket[b] = at
			}
		}
		g := &order[at]
		g.fields = append(g.fields, string(l.field(k)))
		g.index = append(g.index, i)
	}
	for i := range order {
		order[i].cmd = pipe.HMGet(ctx, bucketKey(prefix, order[i].bucket), order[i].fields...)
	}
	return func() ([][]byte, error) {
		out := make([][]byte, len(keys))
		for _, g := range order {
			if err := g.cmd.Err(); err != nil {
				return nil, err
			}
			vals := g.cmd.Val()
			if len(vals) != len(g.index) {
				return nil, fmt.Errorf("HMGET answered %d of %d fields", len(vals), len(g.index))
			}
			for j, i := range g.index {
				switch v := vals[j].(type) {
				case nil:
				case string:
					out[i] = append(make([]byte, 0, len(v)), v...)
				default:
					return nil, fmt.Errorf("HMGET answered a %T", v)
				}
			}
		}
		return out, nil
	}
}

// copyAnswers copies the string answers of an MGET or HMGET into out (nil stays nil).
func copyAnswers(out [][]byte, vals []any, what string) error {
	if len(vals) != len(out) {
		return fmt.Errorf("%s answered %d values for %d keys", what, len(vals), len(out))
	}
	for i, v := range vals {
		switch v := v.(type) {
		case nil:
		case string:
			out[i] = append(make([]byte, 0, len(v)), v...)
		default:
			return fmt.Errorf("%s answered a %T", what, v)
		}
	}
	return nil
}

// hset is one HSET of a bucket: field, value, field, value…
type hset struct {
	key  string
	args []any
}

// bucketWrites turns a batch of rows of a bucketed version into HSETs, one per bucket
// that any row falls in, with all of that bucket's rows: the rows sorted by bucket. A
// server spends about as much on dispatching a command as on setting a field, so the
// fewer commands the better: a batch of 8192 rows into the 12,346 buckets of a
// million-row version is about 6,000 HSETs, into the 1,235 of a 100k-row one about
// 1,200. Rows of the same key keep their order, so the last one wins, as with SET.
func bucketWrites(l layout, prefix string, rows writers.Rows) []hset {
	// bucket<<32 | row: sorting groups a bucket's rows in row order (a batch has fewer
	// than 2^32 rows, and a bucket number fits the 32 bits above it: bucketsFor never
	// picks 2^32 buckets for a version of fewer rows than that).
	order := make([]uint64, len(rows.Keys))
	for i, k := range rows.Keys {
		order[i] = l.bucket(k)<<32 | uint64(i)
	}
	slices.Sort(order)
	// One backing array for every command's arguments, and the keys as []byte (go-redis
	// writes them as they are): two allocations a row fewer than strings in appends.
	args := make([]any, 0, 2*len(order))
	var cmds []hset
	key := make([]byte, 0, len(prefix)+20)
	for j := 0; j < len(order); {
		b := order[j] >> 32
		key = strconv.AppendUint(append(key[:0], prefix...), b, 10)
		first := len(args)
		for ; j < len(order) && order[j]>>32 == b; j++ {
			i := int(order[j] & (1<<32 - 1))
			args = append(args, l.field(rows.Keys[i]), rows.Values[i])
		}
		cmds = append(cmds, hset{key: string(key), args: args[first:len(args):len(args)]})
	}
	return cmds
}

// writeBuckets sends HSETs in one pipeline. HSET is idempotent, so a resent pipeline
// (or a resumed run rewriting a commit) changes nothing.
func (d *Driver) writeBuckets(ctx context.Context, cmds []hset) error {
	return d.retry(ctx, func(ctx context.Context) error {
		pipe := d.client.Pipeline()
		for _, c := range cmds {
			pipe.HSet(ctx, c.key, c.args...)
		}
		_, err := pipe.Exec(ctx)
		return err
	})
}

// bucketBatch is how many bucket commands (HLEN, UNLINK) one pipeline carries.
const bucketBatch = 1000

// forEachBucket sends one command per bucket of a version, bucketBatch in a pipeline,
// with queue, and calls done with each pipeline's commands once it has been executed.
func (d *Driver) forEachBucket(ctx context.Context, l layout, ns, version string, queue func(pipe goredis.Pipeliner, key string) goredis.Cmder, done func([]goredis.Cmder) error) error {
	prefix := bucketPrefix(ns, version)
	for lo := uint64(0); lo < l.buckets; lo += bucketBatch {
		hi := min(lo+bucketBatch, l.buckets)
		var cmds []goredis.Cmder
		err := d.retry(ctx, func(ctx context.Context) error {
			pipe := d.client.Pipeline()
			cmds = cmds[:0]
			for b := lo; b < hi; b++ {
				cmds = append(cmds, queue(pipe, bucketKey(prefix, b)))
			}
			_, err := pipe.Exec(ctx)
			return err
		})
		if err != nil {
			return err
		}
		if err := done(cmds); err != nil {
			return err
		}
	}
	return nil
}

// countBuckets is CountKeys of a bucketed version: the sum of its buckets' HLENs, exact.
func (d *Driver) countBuckets(ctx context.Context, l layout, ns, version string) (int64, error) {
	var n int64
	err := d.forEachBucket(ctx, l, ns, version,
		func(pipe goredis.Pipeliner, key string) goredis.Cmder { return pipe.HLen(ctx, key) },
		func(cmds []goredis.Cmder) error {
			for _, c := range cmds {
				n += c.(*goredis.IntCmd).Val()
			}
			return nil
		})
	return n, err
}

// deleteBuckets unlinks every bucket of a version, one UNLINK per key (a multi-key
// UNLINK fails with CROSSSLOT in a cluster), each sent to the master that holds it.
func (d *Driver) deleteBuckets(ctx context.Context, l layout, ns, version string) error {
	return d.forEachBucket(ctx, l, ns, version,
		func(pipe goredis.Pipeliner, key string) goredis.Cmder { return pipe.Unlink(ctx, key) },
		func([]goredis.Cmder) error { return nil })
}
