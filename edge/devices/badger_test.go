package devices

import (
	"testing"

	"github.com/postern/postern/edge/config"
	"github.com/postern/postern/edge/spool"
)

// TestSuspensionInBadger: a suspension written through the real spool
// bucket survives closing and reopening the Badger database.
func TestSuspensionInBadger(t *testing.T) {
	dir := t.TempDir()
	open := func() *spool.Spool {
		sp, err := spool.Open(spool.Options{Dir: dir, ValueLogFileSize: 1 << 20, GCInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		return sp
	}
	static := []config.Device{{Name: "scanner.example.edu"}}
	sp := open()
	r, err := New(static, sp.KV("susp/"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Suspend("scanner.example.edu", "NDR undeliverable"); err != nil {
		t.Fatal(err)
	}
	sp.Close()

	sp = open()
	defer sp.Close()
	r, err = New(static, sp.KV("susp/"), nil)
	if err != nil {
		t.Fatal(err)
	}
	d, ok := r.Lookup("scanner.example.edu")
	if !ok || d.Active() || d.Reason != "NDR undeliverable" {
		t.Fatalf("after reopen: %+v %v", d, ok)
	}
}
