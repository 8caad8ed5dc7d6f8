package app_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/central/app"
	"github.com/postern/postern/central/cli"
	"github.com/postern/postern/central/config"
	"github.com/postern/postern/shared/dnstest"
	"github.com/postern/postern/shared/testkit"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestServeWithCLI runs the whole central service (SQLite, embedded
// broker, sync, web, API) and drives it with the CLI at the same time, as
// an operator would: the CLI's changes reach the running service's
// publisher through the version watcher.
func TestServeWithCLI(t *testing.T) {
	d := dnstest.Start(t)
	d.AddA("scanner.dept.example.edu", "10.1.2.3")
	d.AddPTR("10.1.2.3", "scanner.dept.example.edu")
	d.AddMX("dept.example.edu", 10, "mx.dept.example.edu")
	d.AddA("mx.dept.example.edu", "10.9.9.9")
	dir := t.TempDir()
	httpAddr, mqttAddr := testkit.FreeAddr(t, ""), testkit.FreeAddr(t, "")
	cfgFile := filepath.Join(dir, "central.toml")
	os.WriteFile(cfgFile, []byte(fmt.Sprintf("data_dir = %q\n[http]\nlisten = %q\nbase_url = \"http://%s\"\n[mqtt]\nlisten = %q\n[dns]\nresolvers = [%q]\ntimeout = \"1s\"\n",
		filepath.Join(dir, "data"), httpAddr, httpAddr, mqttAddr, d.Addr)), 0o600)
	cfg, err := config.Load(cfgFile, false)
	if err != nil {
		t.Fatal(err)
	}
	app.VersionPoll = 100 * time.Millisecond
	logs := &syncBuf{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Serve(ctx, cfg, slog.New(slog.NewTextHandler(logs, nil))) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("serve did not stop")
		}
	}()
	base := "http://" + httpAddr
	var resp *http.Response
	for i := 0; i < 100; i++ {
		if resp, err = http.Get(base + "/"); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("central did not come up: %v\n%s", err, logs)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "Postern device registration") {
		t.Fatalf("home page: %d", resp.StatusCode)
	}

	cliRun := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := cli.Main(append(args, "-config", cfgFile), strings.NewReader(""), &out, &errb); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errb.String())
		}
		return out.String()
	}
	cliRun("user", "add", "admin")
	token := strings.TrimSpace(cliRun("user", "token", "admin"))
	cliRun("device", "register", "-name", "scanner.dept.example.edu", "-owner", "Ada", "-contact", "ada@dept.example.edu", "-sender", "scanner@dept.example.edu")
	cliRun("device", "approve", "scanner.dept.example.edu", "-force")

	// The API of the running service sees the CLI's change…
	req, _ := http.NewRequest("GET", base+"/api/v1/allowlist", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"version": 2`) || !strings.Contains(string(b), "scanner.dept.example.edu") {
		t.Fatalf("allowlist: %d %s", resp.StatusCode, b)
	}
	// …and the publisher republishes it (version watcher).
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), `msg="allowlist published" component=sync version=2`) {
		if time.Now().After(deadline) {
			t.Fatalf("version 2 never published:\n%s", logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The load balancer's probes: alive, and ready once the store answers
	// and the broker link is up.
	for _, path := range []string{"/healthz", "/readyz"} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.Get(base + path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// The sync endpoints are mounted next to the API.
	resp, err = http.Get(base + "/api/v1/sync/allowlist")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("snapshot fetch without edge credentials: %d", resp.StatusCode)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", app.KeyFile)); err != nil {
		t.Errorf("signing key not in data_dir: %v", err)
	}
}
