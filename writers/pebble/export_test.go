package writers

// Test hooks into the Pebble store's LSM, for pebble_test.go.

// FlushForTest writes the memtables out as L0 files, as a long load does on its own.
func (p *Pebble) FlushForTest() error { return p.db.Flush() }

// L0TablesForTest is the number of sstables in L0.
func (p *Pebble) L0TablesForTest() int64 { return p.db.Metrics().Levels[0].TablesCount }
