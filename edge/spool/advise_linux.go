package spool

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// adviseLogs marks Badger's shared mappings of the value log and the
// memtable WALs in dir MADV_RANDOM, and reports how many it marked.
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
// The advice belongs to a mapping, so the committer calls this after
// Open and regularly after commits, to reach the files Badger creates as
// the value log and the memtables rotate (see adviseEvery).
func adviseLogs(dir string) int {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return 0
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 7f10...-7f10... rw-s 00000000 fe:00 9987789   /path/000001.vlog
		fs := strings.Fields(sc.Text())
		if len(fs) < 6 || len(fs[1]) < 4 || fs[1][3] != 's' {
			continue
		}
		path := strings.Join(fs[5:], " ")
		if filepath.Dir(path) != abs || !(strings.HasSuffix(path, ".vlog") || strings.HasSuffix(path, ".mem")) {
			continue
		}
		lo, hi, ok := strings.Cut(fs[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), uintptr(end-start), syscall.MADV_RANDOM); e == 0 {
			n++
		}
	}
	return n
}
