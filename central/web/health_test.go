package web_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/postern/postern/central/store/sqlite"
	"github.com/postern/postern/central/web"
)

func get(t *testing.T, h http.HandlerFunc, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h(rec, httptest.NewRequest(http.MethodGet, path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

// /readyz follows a real store and the broker link: ready only while both
// are up; /healthz stays 200 throughout.
func TestReadiness(t *testing.T) {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), sqlite.FileName), nil)
	if err != nil {
		t.Fatal(err)
	}
	var linked atomic.Bool
	h := web.Health{
		Store:  func(ctx context.Context) error { _, err := st.AllowlistVersion(ctx); return err },
		Broker: linked.Load,
	}
	check := func(wantCode int, wantBody string) {
		t.Helper()
		if code, body := get(t, h.Healthz, "/healthz"); code != http.StatusOK {
			t.Errorf("/healthz %d %q", code, body)
		}
		code, body := get(t, h.Readyz, "/readyz")
		if code != wantCode || !strings.Contains(body, wantBody) {
			t.Errorf("/readyz %d %q, want %d with %q", code, body, wantCode, wantBody)
		}
	}
	check(http.StatusServiceUnavailable, "broker: not connected")
	linked.Store(true)
	check(http.StatusOK, "store: ok\nbroker: ok")
	st.Close()
	check(http.StatusServiceUnavailable, "store: unreachable")
	linked.Store(false)
	check(http.StatusServiceUnavailable, "store: unreachable\nbroker: not connected")
}
