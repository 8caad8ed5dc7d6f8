package e2e

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/shared/testkit"
)

func readyz(t *testing.T, admin string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDiskReserveThroughBinary runs the edge binary with its data folder on
// a 24 MiB tmpfs and the default reserve: start-up logs the reserve, which
// is scaled to the small volume so mail is taken; /readyz shows it; when
// something else fills the volume below the reserve the edge answers 452
// 4.3.1 at MAIL (before any upload) and /readyz fails; once space is freed
// both recover.
func TestDiskReserveThroughBinary(t *testing.T) {
	// The default reserve for the test's 8 MiB value-log files (two
	// memtables and half a value-log file, 8 MiB) is more than a quarter
	// of this volume, so it is scaled down to that quarter.
	dir := testkit.Tmpfs(t, "24m")
	d := zone(t)
	e := newEdge(t, d.Addr, devices)
	cfg, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), "data_dir = "+quote(filepath.Join(e.dir, "data")), "data_dir = "+quote(filepath.Join(dir, "data")), 1))
	if err := os.WriteFile(e.cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	e.start()

	mail := func() string {
		t.Helper()
		c, err := dial(t, e.smtp, 20)
		if err != nil {
			t.Fatal(err)
		}
		defer c.conn.Close()
		if err := c.hello(); err != nil {
			t.Fatal(err)
		}
		r, err := c.transaction("someone@example.edu", []string{"x@example.edu"}, msg("reserve"))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := mail(); !strings.HasPrefix(r, "250") {
		t.Fatalf("on a 24 MiB volume with the default reserve: %q", r)
	}
	if code, body := readyz(t, e.admin); code != 200 || !strings.Contains(body, "spool: ok (free ") || !strings.Contains(body, "reserve 6.0 MiB") {
		t.Fatalf("readyz: %d %q (want the reserve, a quarter of 24 MiB)", code, body)
	}
	if !strings.Contains(e.logText(), "free-space reserve") {
		t.Errorf("start-up does not log the reserve:\n%s", e.logText())
	}

	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, free-3<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := dial(t, e.smtp, 20)
	if err != nil {
		t.Fatal(err)
	}
	c.hello()
	if r, _ := c.cmd("MAIL FROM:<someone@example.edu>"); !strings.HasPrefix(r, "452 4.3.1") {
		t.Fatalf("MAIL below the reserve: %q, want 452 4.3.1", r)
	}
	c.conn.Close()
	if code, body := readyz(t, e.admin); code != 503 || !strings.Contains(body, "below the reserve") {
		t.Fatalf("readyz below the reserve: %d %q", code, body)
	}

	os.Remove(filler)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := mail()
		if strings.HasPrefix(r, "250") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused after the space came back: %q", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body := readyz(t, e.admin); code != 200 {
		t.Fatalf("readyz after the space came back: %d %q", code, body)
	}
	e.stop()
}

func quote(s string) string { return `"` + s + `"` }
