package yamldecode_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

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
