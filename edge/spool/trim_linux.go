package spool

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// trimMappings drops the spool's value-log, memtable-WAL and SSTable pages
// from this process's page tables (madvise MADV_DONTNEED on Badger's shared
// file mappings). Badger reads the whole last value-log file through mmap
// when it opens (to find its end), every body read maps pages, and every
// commit writes the memtable's WAL (a .mem file of twice the memtable size)
// through its mapping; those pages count as RSS until the kernel reclaims
// them, so a WAL near the end of its memtable alone would add megabytes to
// the edge's resident set. For a MAP_SHARED file mapping
// MADV_DONTNEED keeps the data (dirty pages stay dirty in the page cache)
// and the next access simply faults the page back in, so this is safe while
// Badger runs. It reports how many mappings it trimmed.
func trimMappings(dir string) int {
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
		if filepath.Dir(path) != abs || !trimmable(path) {
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
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), uintptr(end-start), syscall.MADV_DONTNEED); e == 0 {
			n++
		}
	}
	return n
}

// trimmable reports whether path names one of Badger's files that it maps
// shared: value-log files, memtable WALs and SSTables.
func trimmable(path string) bool {
	return strings.HasSuffix(path, ".vlog") || strings.HasSuffix(path, ".mem") || strings.HasSuffix(path, ".sst")
}
