package admin

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func start(t *testing.T, listen, token string) *Server {
	t.Helper()
	s := New(listen, token, nil)
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func get(t *testing.T, c *http.Client, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHealthReadyAndMount(t *testing.T) {
	s := start(t, "127.0.0.1:0", "")
	base := "http://" + s.Addr().String()
	var spoolErr error
	s.AddCheck("spool", func() error { return spoolErr })
	s.Handle("GET /metrics", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "m 1\n") }))
	c := http.DefaultClient
	if code, body := get(t, c, base+"/healthz", ""); code != 200 || body != "ok\n" {
		t.Fatalf("healthz %d %q", code, body)
	}
	if code, body := get(t, c, base+"/readyz", ""); code != 200 || !strings.Contains(body, "spool: ok") {
		t.Fatalf("readyz %d %q", code, body)
	}
	spoolErr = errors.New("closed")
	if code, body := get(t, c, base+"/readyz", ""); code != 503 || !strings.Contains(body, "spool: closed") {
		t.Fatalf("readyz not failing: %d %q", code, body)
	}
	if code, body := get(t, c, base+"/metrics", ""); code != 200 || body != "m 1\n" {
		t.Fatalf("mounted handler %d %q", code, body)
	}
	spoolErr = nil
	var diskErr error
	s.AddStatus("disk", func() (string, error) { return "free 10 MiB, reserve 8 MiB", diskErr })
	if code, body := get(t, c, base+"/readyz", ""); code != 200 || !strings.Contains(body, "disk: ok (free 10 MiB, reserve 8 MiB)\n") {
		t.Fatalf("readyz with a status detail: %d %q", code, body)
	}
	diskErr = errors.New("free space below the reserve")
	if code, body := get(t, c, base+"/readyz", ""); code != 503 || !strings.Contains(body, "disk: free space below the reserve\n") {
		t.Fatalf("readyz with a failing status: %d %q", code, body)
	}
}

// TestTokenForNonLoopback: a client from a non-loopback address needs the
// token. The listener is on 127.0.0.1, so the "remote" client is simulated
// by calling ServeHTTP with a non-loopback RemoteAddr.
func TestTokenForNonLoopback(t *testing.T) {
	s := New("0.0.0.0:9025", "0123456789abcdef", nil)
	for _, tc := range []struct {
		remote, auth string
		want         int
	}{
		{"192.0.2.1:5555", "", 401},
		{"192.0.2.1:5555", "Bearer wrong", 401},
		{"192.0.2.1:5555", "Bearer 0123456789abcdef", 200},
		{"127.0.0.1:5555", "", 200},
		{"[::1]:5555", "", 200},
	} {
		req, _ := http.NewRequest("GET", "/healthz", nil)
		req.RemoteAddr = tc.remote
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		w := &recorder{h: http.Header{}}
		s.ServeHTTP(w, req)
		if w.code != tc.want {
			t.Errorf("%s %q: %d, want %d", tc.remote, tc.auth, w.code, tc.want)
		}
	}
}

type recorder struct {
	h    http.Header
	code int
}

func (r *recorder) Header() http.Header { return r.h }
func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = 200
	}
	return len(b), nil
}
func (r *recorder) WriteHeader(c int) { r.code = c }

func TestUnixSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	start(t, "unix:"+path, "")
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "unix", path)
	}}}
	if code, _ := get(t, c, "http://edge/healthz", ""); code != 200 {
		t.Fatalf("unix socket healthz %d", code)
	}
}

// TestProfiling: /debug/pprof/ exists only once enabled, serves a real
// heap profile, and asks a non-loopback client for the token like every
// other admin path.
func TestProfiling(t *testing.T) {
	s := start(t, "127.0.0.1:0", "0123456789abcdef")
	base := "http://" + s.Addr().String()
	if code, _ := get(t, http.DefaultClient, base+"/debug/pprof/heap?debug=1", ""); code != 404 {
		t.Fatalf("pprof served before EnableProfiling: %d", code)
	}
	s.EnableProfiling()
	code, body := get(t, http.DefaultClient, base+"/debug/pprof/heap?debug=1", "")
	if code != 200 || !strings.Contains(body, "heap profile:") {
		t.Fatalf("heap profile: %d %.80q", code, body)
	}
	if code, body := get(t, http.DefaultClient, base+"/debug/pprof/", ""); code != 200 || !strings.Contains(body, "allocs") {
		t.Fatalf("pprof index: %d %.80q", code, body)
	}
	for _, auth := range []string{"", "Bearer wrong"} {
		req, _ := http.NewRequest("GET", "/debug/pprof/heap", nil)
		req.RemoteAddr = "192.0.2.1:5555"
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		w := &recorder{h: http.Header{}}
		s.ServeHTTP(w, req)
		if w.code != 401 {
			t.Errorf("non-loopback %q got %d for a profile, want 401", auth, w.code)
		}
	}
}
