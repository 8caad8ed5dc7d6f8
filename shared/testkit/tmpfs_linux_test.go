package testkit

import (
	"os"
	"path/filepath"
	"testing"
)

func TestTmpfs(t *testing.T) {
	dir := Tmpfs(t, "1m")
	if err := os.WriteFile(filepath.Join(dir, "big"), make([]byte, 2<<20), 0o600); err == nil {
		t.Fatal("wrote 2 MiB to a 1 MiB tmpfs")
	}
}
