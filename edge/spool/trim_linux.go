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
	n := 0
	for _, m := range sharedMappings(dir, trimmable) {
		if m.advise(syscall.MADV_DONTNEED) {
			n++
		}
	}
	return n
}

// mapping is one of this process's shared file mappings of a spool file.
type mapping struct {
	start, end uintptr
	name       string // the file's base name
}

// advise applies madvise advice to the whole mapping and reports success.
func (m mapping) advise(advice int) bool {
	_, _, e := syscall.Syscall(syscall.SYS_MADVISE, m.start, m.end-m.start, uintptr(advice))
	return e == 0
}

// sharedMappings lists this process's shared mappings (/proc/self/maps)
// of the files in dir whose path want accepts. It returns nothing when
// the table cannot be read: callers only give the kernel hints.
func sharedMappings(dir string, want func(path string) bool) []mapping {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return nil
	}
	defer f.Close()
	var maps []mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 7f10...-7f10... rw-s 00000000 fe:00 9987789   /path/000001.vlog
		fs := strings.Fields(sc.Text())
		if len(fs) < 6 || len(fs[1]) < 4 || fs[1][3] != 's' {
			continue
		}
		path := strings.Join(fs[5:], " ")
		if filepath.Dir(path) != abs || !want(path) {
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
		maps = append(maps, mapping{uintptr(start), uintptr(end), filepath.Base(path)})
	}
	return maps
}

// trimmable reports whether path names one of Badger's files that it maps
// shared: value-log files, memtable WALs and SSTables.
func trimmable(path string) bool {
	return strings.HasSuffix(path, ".vlog") || strings.HasSuffix(path, ".mem") || strings.HasSuffix(path, ".sst")
}
