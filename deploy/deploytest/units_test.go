package deploytest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestSystemdUnits verifies the shipped units offline with systemd-analyze
// (as CI does after installing the packages, here without installing) and
// holds their exposure score to "OK" or better. The binaries' paths are
// pointed at an executable that exists, since verify checks that.
func TestSystemdUnits(t *testing.T) {
	sa := lookBin(t, "systemd-analyze")
	exe, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	score := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)
	tests := []struct {
		unit, bin string
		// must lists the hardening directives the unit has to carry.
		must []string
	}{
		{"postern-edge.service", "/usr/bin/postern-edge", []string{
			"User=postern-edge", "ProtectSystem=strict", "ReadWritePaths=/var/lib/postern-edge",
			"NoNewPrivileges=yes", "AmbientCapabilities=CAP_NET_BIND_SERVICE",
			"CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "Restart=on-failure",
		}},
		{"postern-central.service", "/usr/bin/postern-central", []string{
			"User=postern-central", "ProtectSystem=strict", "ReadWritePaths=/var/lib/postern-central",
			"NoNewPrivileges=yes", "CapabilityBoundingSet=\n", "Restart=on-failure",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.unit, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("..", "systemd", tc.unit))
			if err != nil {
				t.Fatal(err)
			}
			text := string(b)
			for _, d := range tc.must {
				if !strings.Contains(text, d) {
					t.Errorf("%s lacks %q", tc.unit, strings.TrimSpace(d))
				}
			}
			p := filepath.Join(t.TempDir(), tc.unit)
			if err := os.WriteFile(p, []byte(strings.ReplaceAll(text, tc.bin, exe)), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(sa, "verify", p).CombinedOutput()
			if err != nil || len(out) > 0 {
				t.Fatalf("systemd-analyze verify %s: %v\n%s", tc.unit, err, out)
			}
			out, _ = exec.Command(sa, "security", "--offline=true", p).CombinedOutput()
			m := score.FindSubmatch(out)
			if m == nil {
				t.Fatalf("no exposure score in:\n%s", out)
			}
			s, _ := strconv.ParseFloat(string(m[1]), 64)
			if s > 3.0 {
				t.Errorf("%s exposure %.1f, want <= 3.0:\n%s", tc.unit, s, out)
			}
			t.Logf("%s: exposure %.1f", tc.unit, s)
		})
	}
}
