package appliance

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/postern/postern/edge/config"
)

type call struct{ config, central, token, ca string }

func TestPrepare(t *testing.T) {
	type files map[string]string
	tests := []struct {
		name      string
		data      files // in DataDir before Prepare
		seed      files // in SeedDir
		enrollErr error
		// want
		created   bool
		calls     []call // enrolment attempts (config path is relative to DataDir)
		enrolled  bool
		enrolErr  bool
		tokenKept bool // DataDir/enroll-token still there afterwards
		config    string
	}{
		{
			name:    "existing config is used untouched",
			data:    files{ConfigName: "# mine\n"},
			seed:    files{ConfigName: "# seed\n"},
			config:  "# mine\n",
			created: false,
		},
		{
			name:    "seed config is copied at first boot",
			seed:    files{ConfigName: "# seed\n"},
			config:  "# seed\n",
			created: true,
		},
		{
			name:    "no config anywhere: generated",
			created: true,
		},
		{
			name:     "token and central URL: enrolled once, token removed",
			data:     files{ConfigName: "# mine\n", TokenName: "tok-123\n", CentralURLName: "https://central.example.edu\n"},
			calls:    []call{{ConfigName, "https://central.example.edu", "tok-123", ""}},
			enrolled: true,
			config:   "# mine\n",
		},
		{
			name:      "enrolment fails: edge still runs, token kept for the next start",
			data:      files{ConfigName: "# mine\n", TokenName: "tok-123", CentralURLName: "https://central.example.edu"},
			enrollErr: errors.New("central unreachable"),
			calls:     []call{{ConfigName, "https://central.example.edu", "tok-123", ""}},
			enrolErr:  true,
			tokenKept: true,
			config:    "# mine\n",
		},
		{
			name:      "token without central URL: not attempted",
			data:      files{ConfigName: "# mine\n", TokenName: "tok-123"},
			enrolErr:  true,
			tokenKept: true,
			config:    "# mine\n",
		},
		{
			name:      "already enrolled: token ignored",
			data:      files{ConfigName: "# mine\n", TokenName: "tok-123", CentralURLName: "https://c", EnrolmentName: "{}"},
			tokenKept: true,
			config:    "# mine\n",
		},
		{
			name:     "token baked into the image, comments skipped",
			seed:     files{ConfigName: "# seed\n", TokenName: "# from the console\ntok-seed\n", CentralURLName: "https://central.example.edu", CentralCAName: "PEM"},
			created:  true,
			calls:    []call{{ConfigName, "https://central.example.edu", "tok-seed", "etc/" + CentralCAName}},
			enrolled: true,
			config:   "# seed\n",
		},
		{
			name:    "no token: standalone",
			data:    files{ConfigName: "# mine\n"},
			config:  "# mine\n",
			created: false,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			data, seed := filepath.Join(root, "perm", "postern-edge"), filepath.Join(root, "etc")
			write := func(dir string, fs files) {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				for n, c := range fs {
					if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			if tc.data != nil {
				write(data, tc.data)
			}
			write(seed, tc.seed)
			var calls []call
			res, err := Prepare(context.Background(), Options{
				DataDir: data, SeedDir: seed,
				Enroll: func(_ context.Context, cfg, central, token, ca string) error {
					if ca != "" {
						ca = filepath.Base(filepath.Dir(ca)) + "/" + filepath.Base(ca)
					}
					calls = append(calls, call{filepath.Base(cfg), central, token, ca})
					return tc.enrollErr
				},
			})
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			if res.ConfigPath != filepath.Join(data, ConfigName) {
				t.Errorf("ConfigPath = %s", res.ConfigPath)
			}
			if res.Created != tc.created || res.Enrolled != tc.enrolled || (res.EnrolErr != nil) != tc.enrolErr {
				t.Errorf("result = %+v; want created %v enrolled %v enrolErr %v", res, tc.created, tc.enrolled, tc.enrolErr)
			}
			if len(calls) != len(tc.calls) || (len(calls) > 0 && calls[0] != tc.calls[0]) {
				t.Errorf("enrol calls = %v, want %v", calls, tc.calls)
			}
			_, serr := os.Stat(filepath.Join(data, TokenName))
			if tc.data[TokenName] != "" && (serr == nil) != tc.tokenKept {
				t.Errorf("token kept = %v, want %v", serr == nil, tc.tokenKept)
			}
			if tc.seed[TokenName] != "" {
				if _, err := os.Stat(filepath.Join(seed, TokenName)); err != nil {
					t.Errorf("seed token removed: %v", err)
				}
			}
			got, err := os.ReadFile(res.ConfigPath)
			if err != nil {
				t.Fatal(err)
			}
			if tc.config != "" && string(got) != tc.config {
				t.Errorf("config = %q, want %q", got, tc.config)
			}
			if res.Created {
				st, err := os.Stat(res.ConfigPath)
				if err != nil {
					t.Fatal(err)
				}
				if st.Mode().Perm() != 0o600 {
					t.Errorf("first-boot config mode %v, want 0600", st.Mode().Perm())
				}
			}
		})
	}
}

// TestDefaultConfigLoads holds the generated first-boot configuration to
// the edge's own validation: a fresh appliance must start.
func TestDefaultConfigLoads(t *testing.T) {
	dir := t.TempDir()
	res, err := Prepare(context.Background(), Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(res.ConfigPath, false)
	if err != nil {
		t.Fatalf("generated configuration does not load: %v", err)
	}
	if cfg.DataDir != dir {
		t.Errorf("data_dir = %q, want %q", cfg.DataDir, dir)
	}
	if cfg.Admin.Listen != "0.0.0.0:9025" || !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(cfg.Admin.Token) {
		t.Errorf("admin = %+v, want 0.0.0.0:9025 with a 32-hex-digit token", cfg.Admin)
	}
	// Two appliances never share a token.
	other := t.TempDir()
	res2, err := Prepare(context.Background(), Options{DataDir: other})
	if err != nil {
		t.Fatal(err)
	}
	cfg2, err := config.Load(res2.ConfigPath, false)
	if err != nil {
		t.Fatal(err)
	}
	if cfg2.Admin.Token == cfg.Admin.Token {
		t.Errorf("two first boots generated the same admin token")
	}
}

func TestPrepareNoDataDir(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// A data folder below a regular file cannot be created (/perm missing).
	if _, err := Prepare(context.Background(), Options{DataDir: filepath.Join(f, "postern-edge")}); err == nil {
		t.Fatal("Prepare succeeded without a usable data folder")
	}
}
