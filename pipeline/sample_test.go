package pipeline

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestKeySampleIsTheKeysOfSmallestHashInAnyOrder(t *testing.T) {
	var keys [][]byte
	for i := range 5000 {
		keys = append(keys, fmt.Appendf(nil, "u%09d", i))
	}
	// Independent: sort every key by its hash, take the first k.
	want := slices.Clone(keys)
	slices.SortFunc(want, func(a, b []byte) int {
		ha, hb := keyHash(a), keyHash(b)
		switch {
		case ha < hb:
			return -1
		case ha > hb:
			return 1
		}
		return bytes.Compare(a, b)
	})
	want = want[:300]

	for _, order := range []string{"in order", "shuffled", "reversed, each key twice"} {
		t.Run(order, func(t *testing.T) {
			in := slices.Clone(keys)
			switch order {
			case "shuffled":
				rand.New(rand.NewPCG(1, 2)).Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
			case "reversed, each key twice":
				slices.Reverse(in)
			}
			s := newKeySample(300)
			for _, k := range in {
				s.add(k)
				if order == "reversed, each key twice" {
					s.add(k)
				}
			}
			got := s.keys()
			if order == "reversed, each key twice" {
				// A repeated key takes two places of the sample and is listed once.
				if len(got) != 150 || !slices.EqualFunc(got, want[:150], bytes.Equal) {
					t.Errorf("got %d keys, want the first 150 of smallest hash", len(got))
				}
				return
			}
			if !slices.EqualFunc(got, want, bytes.Equal) {
				t.Errorf("got %d keys %q…, want the 300 of smallest hash %q…", len(got), got[:3], want[:3])
			}
		})
	}
	t.Run("a sample of more keys than there are holds them all", func(t *testing.T) {
		s := newKeySample(10000)
		for _, k := range keys {
			s.add(k)
		}
		if got := s.keys(); len(got) != len(keys) {
			t.Errorf("got %d keys, want %d", len(got), len(keys))
		}
	})
}
