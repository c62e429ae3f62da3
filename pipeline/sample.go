package pipeline

import (
	"bytes"
	"cmp"
	"slices"
)

// keySample is the sample of keys the drift gates read from the live and the new
// version: the k keys of smallest 64-bit hash among the keys added (bottom-k sampling).
// That is a uniform sample of the keys, spread over every file and row group, and it
// depends only on the set of keys, not on the order they arrive in: the same input gives
// the same sample whether one run wrote it, or shards and resumes did (which sample the
// keys finish reads again, see rereadKeys), so a re-run's gates read the same keys.
//
// It costs a hash per key and, rarely, a copy of the key into the sample (about
// k·ln(n/k) times for n keys); memory is k keys.
type keySample struct {
	k    int
	heap []sampled // a max-heap by hash: heap[0] is the first to be replaced
}

type sampled struct {
	h   uint64
	key []byte
}

func newKeySample(k int) *keySample { return &keySample{k: k} }

// add offers one key.
func (s *keySample) add(key []byte) {
	h := keyHash(key)
	if len(s.heap) < s.k {
		s.heap = append(s.heap, sampled{h, bytes.Clone(key)})
		s.up(len(s.heap) - 1)
		return
	}
	if h >= s.heap[0].h {
		return
	}
	s.heap[0].h = h
	s.heap[0].key = append(s.heap[0].key[:0], key...)
	s.down(0)
}

// reset empties the sample, keeping k.
func (s *keySample) reset() { s.heap = s.heap[:0] }

// keys are the sampled keys, distinct, in order of hash.
func (s *keySample) keys() [][]byte {
	all := slices.Clone(s.heap)
	slices.SortFunc(all, func(a, b sampled) int {
		if c := cmp.Compare(a.h, b.h); c != 0 {
			return c
		}
		return bytes.Compare(a.key, b.key)
	})
	all = slices.CompactFunc(all, func(a, b sampled) bool { return bytes.Equal(a.key, b.key) })
	out := make([][]byte, len(all))
	for i, e := range all {
		out[i] = e.key
	}
	return out
}

func (s *keySample) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if s.heap[p].h >= s.heap[i].h {
			return
		}
		s.heap[p], s.heap[i] = s.heap[i], s.heap[p]
		i = p
	}
}

func (s *keySample) down(i int) {
	n := len(s.heap)
	for {
		l, big := 2*i+1, i
		if l < n && s.heap[l].h > s.heap[big].h {
			big = l
		}
		if r := l + 1; r < n && s.heap[r].h > s.heap[big].h {
			big = r
		}
		if big == i {
			return
		}
		s.heap[i], s.heap[big] = s.heap[big], s.heap[i]
		i = big
	}
}

// keyHash is FNV-1a over the key, finished with SplitMix64's mixer so that every bit
// depends on every byte: fixed, so samples are the same in every process and run.
func keyHash(key []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, b := range key {
		h ^= uint64(b)
		h *= 1099511628211
	}
	h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9
	h = (h ^ (h >> 27)) * 0x94d049bb133111eb
	return h ^ (h >> 31)
}
