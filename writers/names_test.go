package writers_test

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	"github.com/staticref/staticref/writers"
)

// The documented grammars of namespaces and versions, as regular expressions: the
// independent check of the byte loops that validate them on every read.
var (
	namespaceGrammar = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)
	versionGrammar   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
)

func TestNamesAreValidatedByTheirGrammar(t *testing.T) {
	names := []string{"", "a", "churn", "churn-v2.x_y", "_a", ".a", "-a", "A", "Churn", "a b", "é",
		"20261127T020000Z-2", strings.Repeat("a", 63), strings.Repeat("a", 64), "a/b", "a\x00", "a:b"}
	const alphabet = "azAZ09_.-/: é\x00"
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		b := make([]byte, r.IntN(66))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		names = append(names, string(b))
	}
	for _, s := range names {
		if got, want := writers.ValidateNamespace(s) == nil, namespaceGrammar.MatchString(s); got != want {
			t.Errorf("ValidateNamespace(%q) accepts: %v, the grammar: %v", s, got, want)
		}
		if got, want := writers.ValidateVersion(s) == nil, versionGrammar.MatchString(s); got != want {
			t.Errorf("ValidateVersion(%q) accepts: %v, the grammar: %v", s, got, want)
		}
	}
}
