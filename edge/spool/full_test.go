package spool

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/postern/postern/shared/testkit"
)

// TestDiskFull fills a real 16 MiB file system: Put must start failing
// with ErrFull (the intake's 452 4.3.1) while the process and the mail
// already spooled stay intact, and deleting mail makes room again.
func TestDiskFull(t *testing.T) {
	dir := testkit.Tmpfs(t, "16m")
	opts := testOptions(filepath.Join(dir, "spool"))
	opts.MinFree = 3 << 20
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	bodies := map[string][]byte{}
	var full error
	for i := range 400 {
		env := testEnv(t0)
		b := body(100<<10, uint64(i))
		if err := s.Put(context.Background(), env, b); err != nil {
			full = err
			break
		}
		bodies[env.ID] = b
	}
	if !errors.Is(full, ErrFull) {
		t.Fatalf("filling the disk ended with %v, want ErrFull", full)
	}
	st := s.Stats()
	t.Logf("ErrFull after %d messages (%d bytes free): %v", len(bodies), st.DiskFree, full)
	if len(bodies) < 50 {
		t.Fatalf("only %d messages fit on 16 MiB", len(bodies))
	}
	// Small writes keep working inside the reserve; deletes always do.
	if err := s.KV("susp/").Set("dev1", []byte("suspended")); err != nil {
		t.Fatalf("bucket write in the reserve: %v", err)
	}
	for id, b := range bodies {
		d, err := s.Data(id)
		if err != nil || !bytes.Equal(d, b) {
			t.Fatalf("message %s damaged when the disk filled: %v", id, err)
		}
	}
	for id := range bodies {
		if err := s.Delete(id); err != nil {
			t.Fatalf("delete on a full disk: %v", err)
		}
	}
	if err := s.GC(); err != nil {
		t.Fatal(err)
	}
	t.Logf("after delete+GC: %d bytes free", s.Stats().DiskFree)
	if err := s.Put(context.Background(), testEnv(t0), body(100<<10, 1)); err != nil {
		t.Fatalf("Put after space came back: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
