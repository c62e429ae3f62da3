package pebble

// Test hooks into the Pebble store's LSM, for pebble_test.go (reach them with
// s.Driver().(*pebble.Driver)).

// FlushForTest writes the memtables out as L0 files, as a long load does on its own.
func (d *Driver) FlushForTest() error { return d.db.Flush() }

// L0TablesForTest is the number of sstables in L0.
func (d *Driver) L0TablesForTest() int64 { return d.db.Metrics().Levels[0].TablesCount }
