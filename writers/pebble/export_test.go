package pebble

import "time"

// Test hooks into the parts of a version this process writes, for pebble_test.go (reach
// them with s.Driver().(*pebble.Driver)).

// FlushForTest writes the memtables of this process's part of ns/version out as L0
// files, as a long load does on its own.
func (d *Driver) FlushForTest(ns, version string) error {
	return d.ownWriter(ns, version).db.Flush()
}

// L0TablesForTest is the number of sstables in L0 of this process's part of ns/version.
func (d *Driver) L0TablesForTest(ns, version string) int64 {
	return d.ownWriter(ns, version).db.Metrics().Levels[0].TablesCount
}

// PartsForTest lists the part directories of ns/version.
func (d *Driver) PartsForTest(ns, version string) ([]string, error) { return d.parts(ns, version) }

// SealedL0ForTest opens the parts of a complete ns/version read-only and sums the
// sstables in their L0.
func (d *Driver) SealedL0ForTest(ns, version string) (int64, error) {
	dirs, err := d.parts(ns, version)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, dir := range dirs {
		db, err := openReadOnly(dir)
		if err != nil {
			return 0, err
		}
		n += db.Metrics().Levels[0].TablesCount
		db.Close()
	}
	return n, nil
}

// CloseIdleForTest closes the readers idle at now, as the janitor does, and sweeps.
func (d *Driver) CloseIdleForTest(now time.Time) { d.closeIdle(now) }
