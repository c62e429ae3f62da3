package scheduler

import "time"

// Clock is the scheduler's source of time. The daemon uses the wall clock; tests inject a
// fake one so that nothing sleeps.
type Clock interface {
	Now() time.Time
	// TimerAt returns a timer that fires once at t (at once when t is not after Now).
	// Taking the instant, not a duration, leaves no gap between reading the clock and
	// setting the timer in which the clock could move.
	TimerAt(t time.Time) Timer
}

// Timer is the part of *time.Timer the scheduler uses.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// TimerAt returns a *time.Timer that fires at t.
func (SystemClock) TimerAt(t time.Time) Timer { return sysTimer{time.NewTimer(time.Until(t))} }

type sysTimer struct{ t *time.Timer }

func (t sysTimer) C() <-chan time.Time { return t.t.C }
func (t sysTimer) Stop() bool          { return t.t.Stop() }
