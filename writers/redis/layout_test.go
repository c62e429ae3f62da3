package redis

import (
	"fmt"
	"testing"
	"unicode/utf8"
)

func TestBucketsFor(t *testing.T) {
	for _, tc := range []struct {
		rows           int64
		limit          int
		minPer, maxPer float64
	}{
		{rows: 1_000_000, limit: 128, minPer: 70, maxPer: 90},
		{rows: 1_000_000, limit: 512, minPer: 380, maxPer: 470},
		{rows: 10_000, limit: 128, minPer: 60, maxPer: 128},
		{rows: 50, limit: 128, minPer: 50, maxPer: 50},
	} {
		t.Run(fmt.Sprintf("%d rows under %d entries", tc.rows, tc.limit), func(t *testing.T) {
			b := bucketsFor(tc.rows, tc.limit)
			per := float64(tc.rows) / float64(b)
			if per < tc.minPer || per > tc.maxPer {
				t.Errorf("bucketsFor = %d: %.1f rows a bucket, want %.0f to %.0f", b, per, tc.minPer, tc.maxPer)
			}
			if got := float64(b) * poissonTail(per, tc.limit); got > overflowBudget {
				t.Errorf("expected buckets over the limit = %g, want <= %g", got, overflowBudget)
			}
		})
	}
	if got := bucketsFor(1000, 0); got != 1000 {
		t.Errorf("bucketsFor(1000, 0) = %d, want 1000", got)
	}
}

// TestBucketsOfRealKeysStayUnderTheLimit: fnv1a64 mod B spreads a million keys of the
// bench's shape (u and nine digits) as evenly as the Poisson model says.
func TestBucketsOfRealKeysStayUnderTheLimit(t *testing.T) {
	const n = 1_000_000
	l := layout{buckets: uint64(bucketsFor(n, 128))}
	counts := make([]int, l.buckets)
	for i := range n {
		counts[l.bucket(fmt.Appendf(nil, "u%09d", i))]++
	}
	for b, c := range counts {
		if c > 128 {
			t.Fatalf("bucket %d of %d holds %d keys, want at most 128", b, l.buckets, c)
		}
	}
}

func TestPoissonTail(t *testing.T) {
	// P(X > 0) = 1 - e^-mean; P(X > 2) for mean 1 = 1 - e^-1 (1 + 1 + 1/2).
	for _, tc := range []struct {
		mean float64
		k    int
		want float64
	}{{1, 0, 0.6321205588}, {1, 2, 0.0803013971}, {80, 128, 0}} {
		got := poissonTail(tc.mean, tc.k)
		if tc.want == 0 {
			if got <= 0 || got > 1e-5 {
				t.Errorf("poissonTail(%g, %d) = %g, want a tiny positive number", tc.mean, tc.k, got)
			}
			continue
		}
		if d := got - tc.want; d > 1e-9 || d < -1e-9 {
			t.Errorf("poissonTail(%g, %d) = %.10f, want %.10f", tc.mean, tc.k, got, tc.want)
		}
	}
}

// FuzzFieldsNeverCollide: for any prefix of whole characters and any two distinct valid
// keys, the fields differ.
func FuzzFieldsNeverCollide(f *testing.F) {
	f.Add("user_", "user_1", "\xffuser_1")
	f.Add("u000", "u000", "")
	f.Add("é", "éa", "a")
	f.Fuzz(func(t *testing.T, strip, a, b string) {
		if !utf8.ValidString(strip) || !utf8.ValidString(a) || !utf8.ValidString(b) || a == b {
			return
		}
		l := layout{buckets: 1, strip: strip}
		if fa, fb := l.field([]byte(a)), l.field([]byte(b)); string(fa) == string(fb) {
			t.Errorf("keys %q and %q share field %q under strip %q", a, b, fa, strip)
		}
	})
}
