package testkit

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/shared/clock"
)

var _ clock.Clock = (*Clock)(nil)

func TestFreeAddr(t *testing.T) {
	a := FreeAddr(t, "127.0.0.250")
	if !strings.HasPrefix(a, "127.0.0.250:") || strings.HasSuffix(a, ":0") {
		t.Errorf("FreeAddr = %q", a)
	}
	if p := FreePort(t); p <= 0 || p > 65535 {
		t.Errorf("FreePort = %d", p)
	}
}

func TestClock(t *testing.T) {
	c := NewClock()
	t0 := c.Now()
	timer, _ := c.Timer(time.Minute)
	tick, stopTick := c.Ticker(10 * time.Second)
	c.Advance(5 * time.Second)
	select {
	case <-timer:
		t.Fatal("timer fired early")
	case <-tick:
		t.Fatal("ticker fired early")
	default:
	}
	c.Advance(5 * time.Second)
	if got := <-tick; !got.Equal(t0.Add(10 * time.Second)) {
		t.Errorf("tick at %v", got)
	}
	c.Advance(50 * time.Second)
	<-timer
	<-tick
	stopTick()
	c.Advance(time.Hour)
	select {
	case <-tick:
		t.Fatal("stopped ticker fired")
	default:
	}
	if _, stop := c.Timer(time.Second); !stop() {
		t.Error("stop of an armed timer reported false")
	}
}

// TestNotInProduction: no command links testkit.
func TestNotInProduction(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", "github.com/postern/postern/edge/cmd/...",
		"github.com/postern/postern/central/cmd/...", "github.com/postern/postern/firmware/cmd/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "github.com/postern/postern/shared/testkit" || strings.HasSuffix(p, "test") && strings.HasPrefix(p, "github.com/postern/postern/") {
			t.Errorf("a command depends on %s", p)
		}
	}
}

func TestProcStatusKiB(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc:", err)
	}
	rss := ProcStatusKiB(0, "VmRSS")
	if rss <= 0 {
		t.Fatalf("VmRSS of this process: %d KiB", rss)
	}
	if own := ProcStatusKiB(os.Getpid(), "VmRSS"); own <= 0 {
		t.Fatalf("VmRSS by pid: %d KiB", own)
	}
	if v := ProcStatusKiB(0, "NoSuchField"); v != -1 {
		t.Fatalf("unknown field: %d, want -1", v)
	}
}
