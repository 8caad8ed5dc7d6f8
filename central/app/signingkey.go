package app

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/postern/postern/central/config"
	"github.com/postern/postern/shared/allowlist"
	"github.com/postern/postern/shared/configfile"
)

// signingKeySetting names the pinned public key in the store.
const signingKeySetting = "allowlist_public_key"

// ErrSigningKeyMismatch: this instance's allowlist key is not the one the
// store pinned when the first instance started.
var ErrSigningKeyMismatch = errors.New("allowlist signing key differs from the one every other instance uses")

// settingPinner is the store's PinSetting (sqlstore).
type settingPinner interface {
	PinSetting(ctx context.Context, name, value string) (string, error)
}

// KeyFingerprint is the SHA-256 of an allowlist public key, hex (what the
// store pins and the log shows).
func KeyFingerprint(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:])
}

// LoadSigningKey loads the allowlist signing key: allowlist.signing_key_file,
// which must exist (every instance loads the same file), or else
// <data_dir>/allowlist.key, made on first start.
func LoadSigningKey(cfg config.Config) (ed25519.PrivateKey, error) {
	if cfg.Allowlist.SigningKeyFile == "" {
		return allowlist.LoadOrCreateKey(filepath.Join(cfg.DataDir, KeyFile))
	}
	if _, err := os.Stat(cfg.Allowlist.SigningKeyFile); errors.Is(err, fs.ErrNotExist) {
		return nil, configfile.Errorf("allowlist.signing_key_file", "%s does not exist; copy the key every instance uses there, or create it once with `openssl genpkey -algorithm ed25519 -out %s` (mode 0600)",
			cfg.Allowlist.SigningKeyFile, cfg.Allowlist.SigningKeyFile)
	}
	k, err := allowlist.LoadOrCreateKey(cfg.Allowlist.SigningKeyFile)
	if err != nil {
		return nil, configfile.Errorf("allowlist.signing_key_file", "%v", err)
	}
	return k, nil
}

// PinSigningKey records key's public half in st at the first start and
// refuses (ErrSigningKeyMismatch) a key other than the recorded one, so
// that instances sharing a store can never sign with different keys. A
// store without settings (none today) is not checked.
func PinSigningKey(ctx context.Context, st any, key ed25519.PrivateKey) (fingerprint string, err error) {
	fp := KeyFingerprint(key.Public().(ed25519.PublicKey))
	p, ok := st.(settingPinner)
	if !ok {
		return fp, nil
	}
	pinned, err := p.PinSetting(ctx, signingKeySetting, fp)
	if err != nil {
		return "", err
	}
	if pinned != fp {
		return "", fmt.Errorf("%w: this instance's key has fingerprint %s, the database pinned %s at the first start; copy the first instance's key to this one (allowlist.signing_key_file) — see deploy/README.md, \"The signing key\"",
			ErrSigningKeyMismatch, fp, pinned)
	}
	return fp, nil
}
