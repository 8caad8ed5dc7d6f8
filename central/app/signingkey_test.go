package app_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/postern/postern/central/app"
	"github.com/postern/postern/central/config"
	"github.com/postern/postern/central/store/sqlite"
	"github.com/postern/postern/shared/allowlist"
	"github.com/postern/postern/shared/configfile"
)

// The first key is pinned in the store; the same key again is accepted, a
// different one refused with both fingerprints; a configured key file that
// does not exist is a config error naming the key, never a fresh key.
func TestSigningKeyPinned(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "central.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	cfg := config.Default(false)
	cfg.DataDir = filepath.Join(dir, "one")
	os.MkdirAll(cfg.DataDir, 0o700)
	k1, err := app.LoadSigningKey(cfg)
	if err != nil {
		t.Fatal(err)
	}
	fp1, err := app.PinSigningKey(ctx, st, k1)
	if err != nil {
		t.Fatalf("first key: %v", err)
	}
	// A second instance with the first one's key copied to its file.
	shared := filepath.Join(dir, "shared.key")
	b, _ := os.ReadFile(filepath.Join(cfg.DataDir, app.KeyFile))
	os.WriteFile(shared, b, 0o600)
	cfg2 := config.Default(false)
	cfg2.DataDir = filepath.Join(dir, "two")
	cfg2.Allowlist.SigningKeyFile = shared
	k2, err := app.LoadSigningKey(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	if fp, err := app.PinSigningKey(ctx, st, k2); err != nil || fp != fp1 {
		t.Fatalf("same key: %s %v, want %s", fp, err, fp1)
	}
	// An instance that made its own key.
	k3, err := allowlist.LoadOrCreateKey(filepath.Join(dir, "own.key"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = app.PinSigningKey(ctx, st, k3)
	if !errors.Is(err, app.ErrSigningKeyMismatch) {
		t.Fatalf("different key: %v, want ErrSigningKeyMismatch", err)
	}
	t.Logf("refusal: %v", err)
	// A missing signing_key_file is not created.
	cfg2.Allowlist.SigningKeyFile = filepath.Join(dir, "missing.key")
	_, err = app.LoadSigningKey(cfg2)
	var ce *configfile.Error
	if !errors.As(err, &ce) || ce.Key != "allowlist.signing_key_file" {
		t.Fatalf("missing key file: %v, want a config error naming allowlist.signing_key_file", err)
	}
	if _, err := os.Stat(cfg2.Allowlist.SigningKeyFile); err == nil {
		t.Fatal("missing signing_key_file was created")
	}
}
