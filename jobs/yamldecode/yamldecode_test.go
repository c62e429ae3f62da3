package yamldecode_test

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/staticref/staticref/jobs/yamldecode"
)

type celsius float64

func (c *celsius) UnmarshalYAML(n *yaml.Node) error {
	var f float64
	if err := n.Decode(&f); err != nil || f < -273.15 {
		return errors.New("below absolute zero, or not a temperature")
	}
	*c = celsius(f)
	return nil
}

type config struct {
	Name  string             `yaml:"name"`
	Count *int               `yaml:"count"`
	Tags  []string           `yaml:"tags"`
	Temp  celsius            `yaml:"temp"`
	Sub   struct{ On bool }  `yaml:"sub"`
	Named map[string]*config `yaml:"named"`
	Raw   yaml.Node          `yaml:"raw"`
	Attrs map[string]float64 `yaml:"attrs"`
}

func decode(t *testing.T, doc string) (*config, *yamldecode.Result) {
	t.Helper()
	root, bad := yamldecode.Document([]byte(doc), "a config")
	if bad != nil {
		t.Fatalf("Document: %+v", *bad)
	}
	var c config
	return &c, yamldecode.Decode(root, &c)
}

func TestAGoodDocumentDecodesLikeYAML(t *testing.T) {
	c, res := decode(t, "base: &b {name: x}\nname: n\ncount: 3\ntags: [a, b]\ntemp: 21.5\nnamed:\n  one: {<<: *b, count: 1}\nraw: {any: thing}\nattrs: {f0: 1.5}\n")
	if len(res.Problems) != 1 || res.Problems[0].Path != "base" {
		t.Fatalf("problems: %+v, want only base unknown", res.Problems)
	}
	if c.Name != "n" || *c.Count != 3 || !slices.Equal(c.Tags, []string{"a", "b"}) || c.Temp != 21.5 ||
		c.Named["one"].Name != "x" || *c.Named["one"].Count != 1 || c.Raw.Kind != yaml.MappingNode || c.Attrs["f0"] != 1.5 {
		t.Errorf("decoded %+v", c)
	}
	if got := res.Line("named.one.count"); got != 7 {
		t.Errorf("Line(named.one.count) = %d, want 7", got)
	}
	if got := res.Line("named.one.nothing"); got != 7 {
		t.Errorf("Line of an absent field is its parent's: got %d, want 7", got)
	}
}

// TestAMergeIsShallow: a key written beside <<: *base replaces the base's value whole,
// as in YAML; a mapping is not merged field by field.
func TestAMergeIsShallow(t *testing.T) {
	c, res := decode(t, "named:\n  a: &a {name: x, attrs: {f0: 1, f1: 2}}\n  b: {<<: *a, attrs: {f2: 3}}\n")
	if len(res.Problems) != 0 {
		t.Fatal(res.Problems)
	}
	if b := c.Named["b"]; b.Name != "x" || len(b.Attrs) != 1 || b.Attrs["f2"] != 3 {
		t.Errorf("b: got name %q and attrs %v, want x and only f2", b.Name, b.Attrs)
	}
}

func TestEveryProblemIsFoundWithItsLineAndPath(t *testing.T) {
	_, res := decode(t, "nmae: x\ncount: many\ntags: a\ntemp: -300\nsub: [1]\nname: a\nname: b\nnamed:\n  one: {tags: {x: 1}}\n")
	want := []string{
		"1 nmae: unknown field (did you mean name?)",
		`2 count: "many" is not a whole number`,
		`3 tags: want a list of strings, as in [a, b], got "a"`,
		"4 temp: below absolute zero, or not a temperature",
		"5 sub: want a mapping, got a list",
		"7 name: given twice (first on line 6)",
		"9 named.one.tags: want a list of strings, as in [a, b], got a mapping",
	}
	var got []string
	for _, p := range res.Problems {
		got = append(got, fmt.Sprintf("%d %s", p.Line, p))
	}
	if !slices.Equal(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !res.Failed("sub.On") || !res.Failed("count") || res.Failed("named") {
		t.Error("Failed: want sub.On and count failed, named not")
	}
}

func TestASyntaxErrorOrANonMappingIsOneProblem(t *testing.T) {
	if _, bad := yamldecode.Document([]byte("a: 1\nb: [\n"), "a config"); bad == nil || bad.Line == 0 {
		t.Errorf("syntax error: got %+v, want a problem with a line", bad)
	}
	if _, bad := yamldecode.Document([]byte("- a\n"), "a config"); bad == nil || bad.Msg != "a config is a mapping of fields" {
		t.Errorf("a list: got %+v", bad)
	}
	if root, bad := yamldecode.Document(nil, "a config"); bad != nil || root.Kind != yaml.MappingNode {
		t.Errorf("an empty file is an empty mapping: got %v, %+v", root, bad)
	}
}

// bomb is a document of about 500 bytes whose merge keys stand for 10^levels copies of
// a mapping with an unknown field: decoded by walking every copy, it takes minutes and
// gigabytes (a problem per copy).
func bomb(levels int) string {
	var b strings.Builder
	b.WriteString("named:\n  l0: &l0 {nmae: x}\n")
	for l := 1; l <= levels; l++ {
		refs := strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*l%d, ", l-1), 10), ", ")
		fmt.Fprintf(&b, "  l%d: &l%d {<<: [%s]}\n", l, l, refs)
	}
	return b.String()
}

// decodeBounded decodes doc in a goroutine and fails the test unless it returns within
// two seconds having allocated less than 64 MiB.
func decodeBounded(t *testing.T, doc string) *yamldecode.Result {
	t.Helper()
	root, bad := yamldecode.Document([]byte(doc), "a config")
	if bad != nil {
		t.Fatalf("Document: %+v", *bad)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	done := make(chan *yamldecode.Result, 1)
	go func() {
		var c config
		done <- yamldecode.Decode(root, &c)
	}()
	select {
	case res := <-done:
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > 64<<20 {
			t.Errorf("decoding allocated %d MiB, want under 64", got>>20)
		}
		return res
	case <-time.After(2 * time.Second):
		t.Fatal("decoding did not return within 2s")
		return nil
	}
}

func TestAliasesThatStandForTooMuchAreOneProblem(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"merge keys nested eight levels, ten copies a level", bomb(8), "expand to more than 1000000 nodes or 10000 aliases"},
		{"list aliases diluted with plain items", func() string {
			// yaml.v3's own limit is a ratio of aliases to nodes: a hundred plain items
			// beside every ten aliases stays under it at any size.
			var b strings.Builder
			b.WriteString("raw: x\ntags: &t0 [" + strings.TrimSuffix(strings.Repeat("a, ", 100), ", ") + "]\nnamed:\n")
			for l := 1; l <= 7; l++ {
				fmt.Fprintf(&b, "  l%d: {tags: &t%d [%s%s]}\n", l, l, strings.Repeat(fmt.Sprintf("*t%d, ", l-1), 10), strings.TrimSuffix(strings.Repeat("a, ", 100), ", "))
			}
			return b.String()
		}(), "expand to more than"},
		{"a mapping that merges itself", "named:\n  a: &a {<<: *a}\n", "alias *a names a node that holds the alias"},
		{"a list that holds itself", "named:\n  a: {tags: &a [x, *a]}\n", "alias *a names a node that holds the alias"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := decodeBounded(t, tc.doc)
			if len(res.Problems) != 1 || !strings.Contains(res.Problems[0].Msg, tc.want) || !res.Refused() {
				t.Fatalf("got problems %v (refused %v), want the tree refused with one saying %q", res.Problems, res.Refused(), tc.want)
			}
		})
	}
}

func TestAliasesWithinTheLimitsDecode(t *testing.T) {
	// Three levels of ten copies: a thousand mappings, far below the limits.
	res := decodeBounded(t, strings.Replace(bomb(3), "nmae", "name", 1))
	if len(res.Problems) != 0 {
		t.Fatalf("got problems %v, want none", res.Problems)
	}
	if p := yamldecode.Check(&yaml.Node{Kind: yaml.ScalarNode, Value: "x"}); p != nil {
		t.Errorf("a scalar: got %v, want no problem", p)
	}
}

func TestGivenTellsAFieldWrittenFromOneLeftOutOrNull(t *testing.T) {
	_, res := decode(t, "name: x\ncount: ~\nsub:\nnamed:\n  a: {<<: {name: y}}\n")
	for path, want := range map[string]bool{"name": true, "count": false, "sub": false, "tags": false, "named.a.name": true} {
		if got := res.Given(path); got != want {
			t.Errorf("Given(%s): got %v, want %v", path, got, want)
		}
	}
}

func TestLongValuesAreClippedInProblems(t *testing.T) {
	long := strings.Repeat("9", 1<<20) + "x" // a megabyte: the 20 MB reads the same, slower
	_, res := decode(t, "count: "+long+"\nname: [1]\n"+strings.Repeat("k", 200)+": 1\ntemp: "+long+"\n")
	want := []string{
		`count: "` + strings.Repeat("9", 80) + `…" is not a whole number`,
		`name: want a string, got a list`,
		strings.Repeat("k", 80) + "…: unknown field",
		"temp: below absolute zero, or not a temperature",
	}
	if len(res.Problems) != len(want) {
		t.Fatalf("got %d problems, want %d", len(res.Problems), len(want))
	}
	for i, p := range res.Problems {
		if p.String() != want[i] {
			t.Errorf("problem %d: got %.200q, want %q", i, p.String(), want[i])
		}
	}
	if got := yamldecode.Quote("é" + strings.Repeat("ü", 100)); got != `"é`+strings.Repeat("ü", 79)+`…"` {
		t.Errorf("Quote cuts characters, not bytes: got %s", got)
	}
	if got, want := yamldecode.QuoteIn(fmt.Sprintf("value %q: bad", long), long), `value "`+strings.Repeat("9", 80)+`…": bad`; got != want {
		t.Errorf("QuoteIn: got %.200q, want %q", got, want)
	}
}
