package spool

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/shared/testkit"
)

func TestAutoMinFree(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct{ total, vlog, want int64 }{
		{0, 64 * mib, 2*memTableSize + 32*mib},       // size unknown: 2 memtables + half a value-log file
		{3 << 30, 64 * mib, 2*memTableSize + 32*mib}, // an SD card's /perm
		{128 * mib, 64 * mib, 32 * mib},              // small: a quarter of the volume
		{32 * mib, 64 * mib, 8 * mib},
		{16 * mib, 1 * mib, max(4*mib, memTableSize)},
		{memTableSize, 1 * mib, memTableSize}, // never below one memtable
	} {
		if got := AutoMinFree(tc.total, tc.vlog); got != tc.want {
			t.Errorf("AutoMinFree(%d MiB, %d MiB) = %d MiB, want %d MiB", tc.total/mib, tc.vlog/mib, got/mib, tc.want/mib)
		}
	}
}

// A 32 MiB volume with the default reserve and value-log size takes mail
// (the reserve is scaled to the volume) and start-up warns that the volume
// is small for the reserve.
func TestSmallVolumeDefaultReserve(t *testing.T) {
	dir := testkit.Tmpfs(t, "32m")
	var logs bytes.Buffer
	s, err := Open(Options{Dir: filepath.Join(dir, "spool"), GCInterval: -1,
		Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.MinFree(); got != 8<<20 {
		t.Errorf("reserve on a 32 MiB volume = %d, want 8 MiB", got)
	}
	if !strings.Contains(logs.String(), "volume is small for the free-space reserve") {
		t.Errorf("no start-up warning about the small volume:\n%s", logs.String())
	}
	for i := range 20 {
		if err := s.Put(context.Background(), testEnv(t0), body(100<<10, uint64(i))); err != nil {
			t.Fatalf("Put %d on a 32 MiB volume: %v", i, err)
		}
	}
	if s.BelowReserve() {
		t.Error("BelowReserve with 2 MiB of mail on 32 MiB")
	}
}

// Free space below the reserve: BelowReserve says so (the intake answers
// 452 at MAIL) and Puts fail; once the mail is deleted, value-log GC runs
// on its own — long before the hour-long GC interval — and Puts succeed
// again, without anyone calling GC.
func TestReclaimOnDemand(t *testing.T) {
	dir := testkit.Tmpfs(t, "24m")
	opts := testOptions(filepath.Join(dir, "spool"))
	opts.GCInterval = time.Hour
	opts.MinFree = 4 << 20
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ids []string
	for i := range 60 {
		ids = append(ids, mustPut(t, s, testEnv(t0), body(100<<10, uint64(i))))
	}
	// Something else fills the volume to 1 MiB below the reserve.
	free, err := freeBytes(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, free-opts.MinFree+1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if !s.BelowReserve() {
		t.Fatal("BelowReserve false with free space 1 MiB under the reserve")
	}
	if err := s.Put(context.Background(), testEnv(t0), body(10<<10, 99)); !errors.Is(err, ErrFull) {
		t.Fatalf("Put below the reserve: %v, want ErrFull", err)
	}
	before := s.Stats().VlogBytes
	for _, id := range ids {
		if err := s.Delete(id); err != nil {
			t.Fatalf("delete below the reserve: %v", err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.BelowReserve() {
		if time.Now().After(deadline) {
			t.Fatalf("space of deleted mail not reclaimed within 30 s (GC interval 1h): vlog %d -> %d bytes, free %d",
				before, s.Stats().VlogBytes, s.Stats().DiskFree)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := s.Put(context.Background(), testEnv(t0), body(100<<10, 100)); err != nil {
		t.Fatalf("Put after the space came back: %v", err)
	}
	t.Logf("value log %d -> %d bytes; free %d, reserve %d", before, s.Stats().VlogBytes, s.Stats().DiskFree, s.MinFree())
}
