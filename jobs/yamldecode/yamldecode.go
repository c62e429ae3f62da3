// Package yamldecode reads a YAML config file into a Go struct field by field, so that
// one bad value hides no other: every unknown field (with the nearest known name), value
// of the wrong kind and key given twice is a Problem with its line and field path. Job
// files (jobs) and the lookup service's config (lookup) are both read with it.
//
// # Aliases are bounded
//
// An alias (*name) and a merge key (<<: *name) stand for a copy of the node they name,
// and copies of copies multiply: ten aliases of ten aliases of ... eight levels deep is a
// file of a few hundred bytes that stands for a hundred million nodes. yaml.v3 bounds
// aliasing in its own Decode, but this package walks the node tree itself (and feeds
// parts of it to Decode one at a time), so that bound never sees the whole file. Decode
// therefore first counts, without expanding anything, what the tree would expand to:
// every node once per copy, and every alias followed. A tree over MaxNodes or
// MaxAliases, or one whose alias names a node that holds it (a copy that contains
// itself), is one Problem and nothing is decoded. The count takes one pass over the
// nodes as parsed, so decoding any file costs time and memory in proportion to the
// file, never to what its aliases stand for, and a process decoding it stays as
// responsive to a signal as it is to anything else.
package yamldecode

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Problem is one thing wrong with a file: at a field path ("" for the file as a whole)
// and a line (0 when the file does not have one, as for a field set from the command line).
type Problem struct {
	Line int
	Path string
	Msg  string
}

// String is "path: msg", or msg for the file as a whole. A key of the path longer than
// MaxQuoted is clipped.
func (p Problem) String() string {
	if p.Path == "" {
		return p.Msg
	}
	path := p.Path
	if len(path) > MaxQuoted {
		parts := strings.Split(path, ".")
		for i := range parts {
			parts[i] = Clip(parts[i])
		}
		path = strings.Join(parts, ".")
	}
	return path + ": " + p.Msg
}

// MaxQuoted is how much of a value a problem quotes: a longer value is clipped to this
// many characters and "…", so that a problem names a bad value without echoing all of
// a 20 MB one.
const MaxQuoted = 80

// Clip is s cut to MaxQuoted characters with "…" after them, or s when it is no longer.
func Clip(s string) string {
	if len(s) <= MaxQuoted {
		return s
	}
	n := 0
	for i := range s {
		if n == MaxQuoted {
			return s[:i] + "…"
		}
		n++
	}
	return s
}

// Quote is a value as a problem quotes it: %q of the value clipped to MaxQuoted.
func Quote(s string) string { return strconv.Quote(Clip(s)) }

// QuoteIn is msg with every copy of s that %q wrote into it clipped as Quote clips it:
// for the messages of other packages, which quote a value whole.
func QuoteIn(msg, s string) string {
	if len(s) <= MaxQuoted {
		return msg
	}
	return strings.ReplaceAll(msg, strconv.Quote(s), Quote(s))
}

// Document parses data and returns its top-level mapping; an empty document is an empty
// mapping. A syntax error, or a document that is not a mapping, is a Problem.
func Document(data []byte, what string) (*yaml.Node, *Problem) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			return nil, &Problem{Line: line, Msg: m[2]}
		}
		return nil, &Problem{Msg: msg}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == 0 {
		return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, &Problem{Line: root.Line, Msg: what + " is a mapping of fields"}
	}
	return root, nil
}

var yamlLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// Result is what Decode found: its problems, and the line of every field it read.
type Result struct {
	Problems []Problem
	lines    map[string]int  // field path -> line of its key
	bad      map[string]bool // field paths that could not be read
	given    map[string]bool // field paths the file gives a value (not null)
	refused  bool            // the tree was refused whole (Check): nothing was decoded
}

// Refused reports whether the tree was refused whole, its aliases standing for too much
// (see Check): nothing was decoded, so a check of the fields would only add noise.
func (r *Result) Refused() bool { return r.refused }

// Given reports whether the file gives the field at path a value: null (~, or nothing
// after the colon) counts as absent, as it does for decoding.
func (r *Result) Given(path string) bool { return r.given[path] }

// Decode sets *v (a struct, by its yaml tags) from the mapping n. A value that cannot be
// read leaves its field as it was. A tree whose aliases stand for too much (see Check)
// is that one problem, and nothing is decoded.
func Decode(n *yaml.Node, v any) *Result {
	r := &Result{lines: map[string]int{}, bad: map[string]bool{}, given: map[string]bool{}}
	if p := Check(n); p != nil {
		r.Problems = append(r.Problems, *p)
		r.refused = true
		return r
	}
	r.decode(n, reflect.ValueOf(v).Elem(), "")
	return r
}

// Limits on what one document may stand for once its aliases (*name) and merge keys
// (<<: *name) are expanded, counting every copy. A hand-written config is far below
// both: a serve config of a thousand namespaces that each merge a shared block of ten
// fields stands for about 20,000 nodes and follows 1,000 aliases.
const (
	// MaxNodes is the most nodes a document may stand for: every key, value and list
	// item, once per copy an alias or a merge makes of it.
	MaxNodes = 1_000_000
	// MaxAliases is the most aliases a document may follow, counting those inside the
	// copies an alias makes.
	MaxAliases = 10_000
)

// Check counts what n stands for once its aliases and merge keys are expanded, without
// expanding them, and returns a Problem when that is more than MaxNodes nodes or
// MaxAliases aliases, or when an alias names a node that holds it. It takes one pass
// over the nodes as parsed.
func Check(n *yaml.Node) *Problem {
	c := counter{memo: map[*yaml.Node]cost{}, open: map[*yaml.Node]bool{}}
	total := c.count(n)
	switch {
	case c.cycle != nil:
		return &Problem{Line: c.cycle.Line, Msg: fmt.Sprintf("alias *%s names a node that holds the alias: a value cannot contain itself", Clip(c.cycle.Value))}
	case total.nodes > MaxNodes || total.aliases > MaxAliases:
		at := 0
		if c.over != nil {
			at = c.over.Line
		}
		return &Problem{Line: at, Msg: fmt.Sprintf("the aliases (*name) and merge keys (<<) expand to more than %d nodes or %d aliases, "+
			"the most a file may stand for: write the values out, or nest fewer copies of copies", MaxNodes, MaxAliases)}
	}
	return nil
}

// cost is what a node stands for, expanded: its nodes and the aliases followed in it.
type cost struct{ nodes, aliases int64 }

// counter computes expanded costs depth first, each node once (memo), so a node that
// a thousand aliases name is counted once and multiplied, never walked a thousand times.
type counter struct {
	memo  map[*yaml.Node]cost
	open  map[*yaml.Node]bool // on the current path: an alias to one is a cycle
	cycle *yaml.Node          // the first alias found naming a node that holds it
	over  *yaml.Node          // the first alias whose copy took the count over a limit
	seen  cost                // running total, to find over
}

func (c *counter) count(n *yaml.Node) cost {
	if n == nil || c.cycle != nil {
		return cost{}
	}
	if k, ok := c.memo[n]; ok {
		return k
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return cost{nodes: 1}
		}
		if c.open[n.Alias] {
			c.cycle = n
			return cost{}
		}
		k := c.count(n.Alias)
		k = cost{nodes: capped(k.nodes), aliases: capped(k.aliases + 1)}
		c.seen = cost{nodes: capped(c.seen.nodes + k.nodes), aliases: capped(c.seen.aliases + k.aliases)}
		if c.over == nil && (c.seen.nodes > MaxNodes || c.seen.aliases > MaxAliases) {
			c.over = n
		}
		c.memo[n] = k
		return k
	}
	c.open[n] = true
	k := cost{nodes: 1}
	for _, ch := range n.Content {
		ck := c.count(ch)
		k = cost{nodes: capped(k.nodes + ck.nodes), aliases: capped(k.aliases + ck.aliases)}
	}
	delete(c.open, n)
	c.memo[n] = k
	return k
}

// capped keeps a count just over every limit: past that its size no longer matters, and
// a product of copies of copies would overflow.
func capped(v int64) int64 { return min(v, 2*MaxNodes+2*MaxAliases) }

// Line is the line of path's key, or of the nearest field above it that the file has.
func (r *Result) Line(path string) int {
	for path != "" {
		if l, ok := r.lines[path]; ok {
			return l
		}
		i := strings.LastIndexByte(path, '.')
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// Failed reports whether path, or a field above it, could not be read: a later check of
// it would only repeat that problem.
func (r *Result) Failed(path string) bool {
	for p := range r.bad {
		if path == p || strings.HasPrefix(path, p+".") || strings.HasPrefix(path, p+"[") {
			return true
		}
	}
	return false
}

// FieldType is the type of the field at a dotted path ("model.batch_size") of struct
// type t, by yaml tags: what a value set at that path must decode into.
func FieldType(t reflect.Type, path string) (reflect.Type, error) {
	parts := strings.Split(path, ".")
	for i, part := range parts {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return nil, fmt.Errorf("%s is not a mapping", strings.Join(parts[:i], "."))
		}
		f, ok := fieldIndex(t)[part]
		if !ok {
			return nil, errors.New("unknown field")
		}
		t = t.Field(f).Type
	}
	return t, nil
}

// fieldIndex maps a struct's yaml names to its field indices.
func fieldIndex(t reflect.Type) map[string]int {
	fields := map[string]int{}
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" && t.Field(i).IsExported() {
			fields[name] = i
		}
	}
	return fields
}

// Sort puts problems in file order, those without a line last.
func Sort(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i].Line, ps[j].Line
		return a != 0 && (b == 0 || a < b)
	})
}

func (r *Result) add(line int, path, format string, args ...any) {
	r.Problems = append(r.Problems, Problem{Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
	r.bad[path] = true
}

var nodeType = reflect.TypeFor[yaml.Node]()

// resolve is the node an alias names, or n.
func resolve(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

func (r *Result) decode(n *yaml.Node, v reflect.Value, path string) {
	n = resolve(n)
	t := v.Type()
	switch {
	case t == nodeType:
		v.Set(reflect.ValueOf(*n))
		return
	case n.Kind == yaml.ScalarNode && n.Tag == "!!null":
		return // absent: the zero value, as if not written
	case reflect.PointerTo(t).Implements(unmarshalerType) || t.Kind() == reflect.Slice:
		r.value(n, v, path)
		return
	case t.Kind() == reflect.Pointer:
		p := reflect.New(t.Elem())
		r.decode(n, p.Elem(), path)
		v.Set(p)
		return
	case t.Kind() != reflect.Struct && t.Kind() != reflect.Map:
		r.value(n, v, path)
		return
	}
	if n.Kind != yaml.MappingNode {
		r.add(n.Line, path, "want a mapping, got %s", describe(n))
		return
	}
	var fields map[string]int
	if t.Kind() == reflect.Struct {
		fields = fieldIndex(t)
	} else if v.IsNil() {
		v.Set(reflect.MakeMap(t))
	}
	// Merged mappings (<<: *base) first, so that the fields written beside them win.
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Tag == "!!merge" {
			for _, m := range mergeSources(n.Content[i+1]) {
				r.decode(m, v, path)
			}
		}
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Tag == "!!merge" {
			continue
		}
		p := k.Value
		if path != "" {
			p = path + "." + k.Value
		}
		if first, ok := seen[k.Value]; ok {
			r.add(k.Line, p, "given twice (first on line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		r.lines[p] = k.Line
		if target := resolve(val); target.Kind != yaml.ScalarNode || target.Tag != "!!null" {
			r.given[p] = true
		}
		if t.Kind() == reflect.Map {
			e := reflect.New(t.Elem()).Elem()
			r.decode(val, e, p)
			v.SetMapIndex(reflect.ValueOf(k.Value).Convert(t.Key()), e)
			continue
		}
		f, ok := fields[k.Value]
		if !ok {
			msg := "unknown field"
			if s := suggest(k.Value, fields); s != "" {
				msg += " (did you mean " + s + "?)"
			}
			r.add(k.Line, p, "%s", msg)
			continue
		}
		// A key written here replaces what a merge (<<) gave it, whole: YAML merges are
		// shallow.
		fv := v.Field(f)
		fv.Set(reflect.Zero(fv.Type()))
		r.decode(val, fv, p)
	}
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// value sets a scalar, a list, or a type with its own UnmarshalYAML (whose error is its
// message).
func (r *Result) value(n *yaml.Node, v reflect.Value, path string) {
	t := v.Type()
	custom := reflect.PointerTo(t).Implements(unmarshalerType)
	if !custom {
		if wantList := t.Kind() == reflect.Slice; wantList != (n.Kind == yaml.SequenceNode) || (!wantList && n.Kind != yaml.ScalarNode) {
			r.add(n.Line, path, "want %s, got %s", Want(t), describe(n))
			return
		}
	}
	err := n.Decode(v.Addr().Interface())
	var te *yaml.TypeError
	switch {
	case err == nil:
	case custom && !errors.As(err, &te):
		r.add(n.Line, path, "%s", QuoteIn(err.Error(), n.Value))
	case t.Kind() == reflect.Slice:
		r.add(n.Line, path, "want %s", Want(t))
	default:
		r.add(n.Line, path, "%s is not %s", Quote(n.Value), Want(t))
	}
}

// Want names what a value of t looks like in YAML.
func Want(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice:
		return "a list of " + strings.TrimPrefix(strings.TrimPrefix(Want(t.Elem()), "a "), "an ") + "s, as in [a, b]"
	case reflect.Struct, reflect.Map:
		return "a mapping of fields"
	}
	return "a " + t.Kind().String()
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return Quote(n.Value)
}

func mergeSources(n *yaml.Node) []*yaml.Node {
	if n.Kind == yaml.SequenceNode {
		return n.Content
	}
	return []*yaml.Node{n}
}

// suggest is the known field closest to a misspelt one, or "".
func suggest(name string, fields map[string]int) string {
	best, bestDist := "", max(2, len(name)/3)+1 // further apart is no suggestion
	for f := range fields {
		if dist := editDistance(name, f); dist < bestDist || (dist == bestDist && f < best) {
			best, bestDist = f, dist
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
