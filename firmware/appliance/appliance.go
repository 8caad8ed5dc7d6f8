// Package appliance prepares the edge's configuration on the gokrazy
// appliance before postern-edge starts: it decides which configuration file
// the edge runs with, writes one at first boot when there is none, and
// redeems an enrolment token once.
//
// Guarantees:
//   - A configuration file already on the persistent partition is never
//     rewritten: an operator's edits survive every reboot and update.
//   - The first-boot file is written atomically (temp file, fsync, rename)
//     with mode 0600, because it holds the admin token.
//   - The admin token is generated on the device (crypto/rand); no secret
//     comes from the image or the repository.
//   - A missing or failing enrolment never stops the edge: it runs
//     standalone (affiliated-domain mail still flows) and enrolment is tried
//     again at the next start while the token is still there.
package appliance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/postern/postern/shared/atomicfile"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// File names inside the data folder on /perm.
const (
	// ConfigName is the edge configuration the appliance runs with.
	ConfigName = "edge.toml"
	// TokenName holds a one-time enrolment token from central's console.
	TokenName = "enroll-token"
	// CentralURLName holds central's base URL, for enrolment.
	CentralURLName = "central-url"
	// CentralCAName optionally holds the PEM CA that signed central's
	// certificate (default: the system roots).
	CentralCAName = "central-ca.pem"
	// EnrolmentName is written by `postern-edge enroll` (see edge/enroll).
	EnrolmentName = "enrolment.json"
)

// Enroller redeems token at central; caFile is empty for the system roots.
// The appliance runs `postern-edge enroll`; tests pass a function.
type Enroller func(ctx context.Context, configPath, centralURL, token, caFile string) error

// Options says where the appliance keeps its state.
type Options struct {
	// DataDir is the edge's data folder on the persistent partition, e.g.
	// /perm/postern-edge. It becomes the configuration's data_dir.
	DataDir string
	// SeedDir is a read-only folder baked into the image at build time
	// (e.g. /etc/postern). An edge.toml, enroll-token or central-url there
	// is used when DataDir has none.
	SeedDir string
	// AdminListen is the admin endpoint written into a generated
	// configuration. Empty means 0.0.0.0:9025 (the appliance has no local
	// shell, so the endpoint must be reachable from the LAN, with a token).
	AdminListen string
	// Enroll redeems an enrolment token; nil disables enrolment.
	Enroll Enroller
	// Log receives progress lines; nil discards them.
	Log *slog.Logger
}

// Result says what Prepare did.
type Result struct {
	// ConfigPath is the file postern-edge must run with.
	ConfigPath string
	// Created is true when Prepare wrote or copied the configuration now.
	Created bool
	// Enrolled is true when a token was redeemed now.
	Enrolled bool
	// EnrolErr is the enrolment failure, if any (the edge runs anyway).
	EnrolErr error
}

// Prepare makes sure DataDir holds a configuration and, when a token is
// present and the edge is not yet enrolled, enrols it. It returns an error
// only when the edge cannot run at all (no writable data folder).
func Prepare(ctx context.Context, o Options) (Result, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.DataDir == "" {
		return Result{}, errors.New("appliance: no data folder")
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return Result{}, fmt.Errorf("appliance: data folder (is /perm mounted?): %w", err)
	}
	res := Result{ConfigPath: filepath.Join(o.DataDir, ConfigName)}
	switch _, err := os.Stat(res.ConfigPath); {
	case err == nil:
		log.Info("using configuration", "path", res.ConfigPath)
	case errors.Is(err, fs.ErrNotExist):
		src, data, err := firstConfig(o)
		if err != nil {
			return res, err
		}
		if err := atomicfile.Write(res.ConfigPath, data, 0o600); err != nil {
			return res, fmt.Errorf("appliance: write first-boot configuration: %w", err)
		}
		res.Created = true
		log.Info("wrote first-boot configuration", "path", res.ConfigPath, "from", src)
	default:
		return res, fmt.Errorf("appliance: configuration: %w", err)
	}

	if o.Enroll == nil {
		return res, nil
	}
	if _, err := os.Stat(filepath.Join(o.DataDir, EnrolmentName)); err == nil {
		return res, nil // already enrolled
	}
	token, tokenPath := readFirst(TokenName, o.DataDir, o.SeedDir)
	if token == "" {
		log.Info("no enrolment token: running standalone")
		return res, nil
	}
	central, _ := readFirst(CentralURLName, o.DataDir, o.SeedDir)
	if central == "" {
		res.EnrolErr = fmt.Errorf("appliance: enrolment token %s present but no %s next to it", tokenPath, CentralURLName)
		log.Error("enrolment skipped", "err", res.EnrolErr)
		return res, nil
	}
	caFile := firstPath(CentralCAName, o.DataDir, o.SeedDir)
	if err := o.Enroll(ctx, res.ConfigPath, central, token, caFile); err != nil {
		res.EnrolErr = fmt.Errorf("appliance: enrol at %s: %w", central, err)
		log.Error("enrolment failed: running standalone, will retry at next start", "err", res.EnrolErr)
		return res, nil
	}
	res.Enrolled = true
	log.Info("enrolled", "central", central)
	// The token is single-use: drop it from /perm so it is not kept around.
	// A token baked into the read-only image cannot be removed; the
	// enrolment file makes it unused from now on.
	if filepath.Dir(tokenPath) == filepath.Clean(o.DataDir) {
		if err := os.Remove(tokenPath); err != nil {
			log.Warn("cannot remove used enrolment token", "path", tokenPath, "err", err)
		}
	}
	return res, nil
}

// firstConfig returns the configuration to write at first boot: the seed
// file baked into the image if there is one, else a generated default.
func firstConfig(o Options) (src string, data []byte, err error) {
	if o.SeedDir != "" {
		p := filepath.Join(o.SeedDir, ConfigName)
		b, err := os.ReadFile(p)
		if err == nil {
			return p, b, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", nil, fmt.Errorf("appliance: seed configuration: %w", err)
		}
	}
	token, err := NewToken()
	if err != nil {
		return "", nil, err
	}
	return "generated", []byte(DefaultConfig(o.DataDir, o.AdminListen, token)), nil
}

// NewToken returns a random admin token (32 hex digits).
func NewToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("appliance: admin token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// DefaultConfig is the configuration an appliance writes at first boot when
// the image carries none: production defaults (see deploy/edge.example.toml)
// with the data folder on /perm and the admin endpoint on the LAN behind a
// token.
func DefaultConfig(dataDir, adminListen, adminToken string) string {
	if adminListen == "" {
		adminListen = "0.0.0.0:9025"
	}
	return fmt.Sprintf(`# postern-edge configuration, written at first boot by postern-appliance.
# It is never overwritten: edit it to configure this edge (every key is
# documented in deploy/edge.example.toml). Enrolment with central fills the
# sync settings into enrolment.json next to this file.
data_dir = %q

[smtp]
listen = ["0.0.0.0:25"]
# The organisation's own domains (mail to them is accepted from any local
# client). Central's enrolment may also provide them.
affiliated_domains = []

[admin]
# /healthz, /readyz, /metrics and the queue tools. The appliance has no
# shell, so the endpoint listens on the LAN and requires this bearer token.
listen = %q
token = %q
`, dataDir, adminListen, adminToken)
}

// readFirst returns the trimmed first non-empty line of name in the first
// folder that has it, and that file's path.
func readFirst(name string, dirs ...string) (value, path string) {
	for _, d := range dirs {
		if d == "" {
			continue
		}
		p := filepath.Join(d, name)
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v := strings.TrimSpace(line); v != "" && !strings.HasPrefix(v, "#") {
				return v, p
			}
		}
	}
	return "", ""
}

// firstPath returns the path of name in the first folder that has it, or "".
func firstPath(name string, dirs ...string) string {
	for _, d := range dirs {
		if d == "" {
			continue
		}
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}
