package spool

import (
	"strings"
	"syscall"
)

// adviseLogs marks Badger's shared mappings of the memtable WALs and of
// the newest value-log file in dir MADV_RANDOM, gives older value-log files
// back the normal advice, and reports how many mappings it marked random.
//
// Badger appends to these files through mmap and msyncs them on every
// commit. Without the advice a write fault into a file's hole goes through
// the fault readahead, which on current kernels (ext4 with large folios)
// fills the page cache with folios of up to 2 MiB; a commit dirties the
// folio holding the file's tail and the msync writes back the whole folio,
// again at every commit until the tail moves past it. The spool probe's
// steady pattern (spooling while deliveries remove, about ten writes per
// commit) wrote 180 KB to disk per 10.7 KB message that way and 12 KB with
// the advice. MADV_RANDOM only turns off readahead on faults: single pages
// are faulted in, already cached neighbours are still mapped around a
// fault, and the data and its durability are unchanged.
//
// Older value-log files are only read (deliveries of a backlog, value-log
// GC reading a file from start to end), so they keep the readahead.
//
// The advice belongs to a mapping, so the committer calls this after
// Open and regularly after commits, to reach the files Badger creates as
// the value log and the memtables rotate (see adviseEvery).
func adviseLogs(dir string) int {
	maps := sharedMappings(dir, func(path string) bool {
		return strings.HasSuffix(path, ".vlog") || strings.HasSuffix(path, ".mem")
	})
	newest := ""
	for _, m := range maps {
		// Badger numbers value-log files with zero-padded ids, so the
		// newest sorts last.
		if strings.HasSuffix(m.name, ".vlog") && m.name > newest {
			newest = m.name
		}
	}
	n := 0
	for _, m := range maps {
		advice := syscall.MADV_RANDOM
		if strings.HasSuffix(m.name, ".vlog") && m.name != newest {
			advice = syscall.MADV_NORMAL
		}
		if m.advise(advice) && advice == syscall.MADV_RANDOM {
			n++
		}
	}
	return n
}
