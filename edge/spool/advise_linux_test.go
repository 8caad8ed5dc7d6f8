package spool

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// logMappings returns, for every mapping of a value-log or memtable-WAL
// file in dir, the file name and whether the mapping has MADV_RANDOM
// ("rr" in /proc/self/smaps VmFlags).
func logMappings(t *testing.T, dir string) map[string][]bool {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("no smaps: %v", err)
	}
	defer f.Close()
	out := map[string][]bool{}
	cur := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fs := strings.Fields(line)
		if len(fs) >= 6 && strings.Contains(fs[0], "-") && !strings.HasSuffix(fs[0], ":") {
			cur = ""
			p := strings.Join(fs[5:], " ")
			if filepath.Dir(p) == abs && (strings.HasSuffix(p, ".vlog") || strings.HasSuffix(p, ".mem")) {
				cur = filepath.Base(p)
			}
			continue
		}
		if cur != "" && strings.HasPrefix(line, "VmFlags:") {
			out[cur] = append(out[cur], strings.Contains(" "+line[len("VmFlags:"):]+" ", " rr "))
			cur = ""
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkAdvised checks that the WAL mappings and those of the newest
// value-log file are MADV_RANDOM and those of older value-log files are
// not.
func checkAdvised(t *testing.T, dir, when string) {
	t.Helper()
	maps := logMappings(t, dir)
	if len(maps) == 0 {
		t.Fatalf("%s: no value-log or WAL mapping found", when)
	}
	newest := ""
	for name := range maps {
		if strings.HasSuffix(name, ".vlog") && name > newest {
			newest = name
		}
	}
	for name, rr := range maps {
		want := !strings.HasSuffix(name, ".vlog") || name == newest
		for _, got := range rr {
			if got != want {
				t.Errorf("%s: mapping of %s: MADV_RANDOM %v, want %v", when, name, got, want)
			}
		}
	}
}

// The WAL mappings and the newest value-log file's are MADV_RANDOM after
// Open, and so is a value-log file Badger creates later, once adviseEvery
// bytes were committed after it appeared; the file it replaced as the
// newest has the normal advice again.
func TestLogMappingsAdvised(t *testing.T) {
	s, dir := newTestSpool(t) // 1 MiB value-log files
	checkAdvised(t, dir, "after Open")

	vlogs := func() int {
		m, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
		return len(m)
	}
	before := vlogs()
	data := body(100<<10, 1)
	put := func() {
		t.Helper()
		if err := s.Put(context.Background(), testEnv(t0), data); err != nil {
			t.Fatalf("Put: %v", err)
		}
	}
	for i := 0; vlogs() == before; i++ {
		if i > 100 {
			t.Fatalf("no new value-log file after %d puts of %d bytes", i, len(data))
		}
		put()
	}
	for range adviseEvery/len(data) + 1 {
		put()
	}
	checkAdvised(t, dir, "after a value-log file was added")
	vlogMaps := 0
	for name := range logMappings(t, dir) {
		if strings.HasSuffix(name, ".vlog") {
			vlogMaps++
		}
	}
	if vlogMaps < 2 {
		t.Errorf("%d value-log files mapped, want the old and the new one", vlogMaps)
	}
}
