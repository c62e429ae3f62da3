package lookup

import (
	"time"

	"github.com/staticref/staticref/writers"
)

// SetReleaseTiming replaces the release loop's clock, flush interval and judge's grace
// (and the gauges' report period, as the flush interval) of a service that has not run
// yet: tests judge intervals of a second or two.
func SetReleaseTiming(s *Service, now func() time.Time, flush, grace time.Duration) {
	if now != nil {
		s.rt.now = now
	}
	s.rt.flush, s.rt.grace, s.rt.report = flush, grace, flush
}

// Replica is the service's replica id, as release records and sketches name it.
func Replica(s *Service) string { return s.replica }

// SRMPValue is the service's sample-ratio-mismatch p-value.
func SRMPValue(live, cand, weightPercent float64) float64 {
	return srmPValue(live, cand, weightPercent)
}

// Bucket is the service's allocation-free bucket of a unit.
func Bucket(salt, unit string) uint32 {
	b, _ := bucketOf(salt, unit)
	return b
}

// FirstValue is the first value of an answer's value object.
func FirstValue(v []byte) (float64, bool) { return firstValue(v) }

// StoreOf is the store the service reads namespace ns from (nil until it is open).
func StoreOf(s *Service, ns string) *writers.Store {
	src := s.ns[ns].src.Load()
	if src == nil {
		return nil
	}
	return src.source.(*storeSource).store
}

// SetClock replaces the service's clock (answers' ages, staleness, readiness).
func SetClock(s *Service, now func() time.Time) { s.now = now }
