package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/central/cli"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/central/store/sqlite"
	"github.com/postern/postern/shared/dnstest"
)

func setup(t *testing.T) (run func(stdin string, args ...string) (int, string, string)) {
	run, _ = setupDir(t)
	return run
}

// setupDir is setup that also returns data_dir.
func setupDir(t *testing.T) (run func(stdin string, args ...string) (int, string, string), dataDir string) {
	d := dnstest.Start(t)
	d.AddA("scanner.dept.example.edu", "10.1.2.3")
	d.AddPTR("10.1.2.3", "scanner.dept.example.edu")
	d.AddMX("dept.example.edu", 10, "mx.dept.example.edu")
	d.AddA("mx.dept.example.edu", "10.9.9.9")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "central.toml")
	body := fmt.Sprintf("data_dir = %q\n[http]\nlisten = \"127.0.0.1:0\"\nbase_url = \"https://central.example.edu\"\n[mqtt]\nlisten = \"127.0.0.1:0\"\n[dns]\nresolvers = [%q]\ntimeout = \"1s\"\n",
		filepath.Join(dir, "data"), d.Addr)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(stdin string, args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		// -config goes after the NAME too: flags may come anywhere.
		code := cli.Main(append(args, "-config", cfg), strings.NewReader(stdin), &out, &errb)
		return code, out.String(), errb.String()
	}, filepath.Join(dir, "data")
}

func TestCLI(t *testing.T) {
	run := setup(t)
	steps := []struct {
		stdin string
		args  []string
		code  int
		out   string // substring of stdout (or stderr when code != 0)
	}{
		{"", []string{"user", "add", "admin"}, 0, "staff user admin added; password: "},
		{"", []string{"user", "add", "admin"}, 1, "already exists"},
		{"short\n", []string{"user", "add", "bob", "-password-stdin"}, 1, "at least 10 characters"},
		{"a-long-password\n", []string{"user", "add", "bob", "-password-stdin"}, 0, "staff user bob added\n"},
		{"", []string{"user", "add", "bad name"}, 1, "without spaces"},
		{"", []string{"user", "list"}, 0, "admin"},
		{"", []string{"user", "token", "admin", "-label", "ci"}, 0, ""},
		{"", []string{"user", "token", "nobody"}, 1, "not found"},
		{"", []string{"device", "register", "-name", "scanner.dept.example.edu", "-owner", "Ada", "-contact", "ada@dept.example.edu"}, 1, "-sender: give at least one"},
		{"", []string{"device", "register", "-name", "scanner.dept.example.edu", "-owner", "Ada", "-contact", "ada@dept.example.edu", "-sender", "scanner@dept.example.edu", "-department", "Physics"}, 0,
			"confirmation link for scanner@dept.example.edu (mail.smarthost is not set): https://central.example.edu/confirm?token="},
		{"", []string{"device", "list"}, 0, "scanner.dept.example.edu  pending"},
		{"", []string{"device", "list", "-status", "active"}, 0, "NAME"},
		{"", []string{"device", "list", "-status", "bogus"}, 1, "unknown status"},
		{"", []string{"device", "show", "scanner.dept.example.edu"}, 0, "forward lookup matches"},
		{"", []string{"device", "show", "scanner.dept.example.edu", "-json"}, 0, `"Name": "scanner.dept.example.edu"`},
		{"", []string{"device", "show", "none.example.edu"}, 1, "not found"},
		{"", []string{"device", "approve", "scanner.dept.example.edu"}, 1, "not every sender address is confirmed"},
		{"", []string{"device", "approve", "scanner.dept.example.edu", "-force", "-reason", "checked"}, 0, "scanner.dept.example.edu: active"},
		{"", []string{"device", "suspend", "scanner.dept.example.edu"}, 1, "a reason is required"},
		{"", []string{"device", "suspend", "scanner.dept.example.edu", "-reason", "bounces"}, 0, "suspended"},
		{"", []string{"device", "reinstate", "SCANNER.dept.example.edu."}, 0, "active"},
		{"", []string{"device", "deny", "scanner.dept.example.edu", "-reason", "x"}, 1, "not allowed"},
		{"", []string{"device", "renew", "scanner.dept.example.edu"}, 0, "active"},
		{"", []string{"device", "revoke", "scanner.dept.example.edu", "-reason", "retired"}, 0, "revoked"},
		{"", []string{"device", "show", "scanner.dept.example.edu"}, 0, "cli"},
		{"", []string{"edge", "add", "bldg-12", "-site", "North"}, 0, "postern-edge enroll -central https://central.example.edu -token "},
		{"", []string{"edge", "add", "Bad"}, 1, "only a-z"},
		{"", []string{"edge", "list"}, 0, "bldg-12  not enrolled"},
		{"", []string{"device", "approve"}, 2, "exactly one NAME"},
		{"", []string{"device", "frob", "x"}, 2, "unknown command"},
		{"", []string{"device", "list", "extra"}, 2, "unexpected argument"},
	}
	for _, s := range steps {
		code, out, errOut := run(s.stdin, s.args...)
		got := out
		if s.code != 0 {
			got = errOut
		}
		if code != s.code || !strings.Contains(got, s.out) {
			t.Errorf("%v: exit %d, want %d; stdout %q stderr %q (want %q)", s.args, code, s.code, out, errOut, s.out)
		}
	}
}

// TestCLIRequests: staff list, confirm and dismiss suspension requests
// filed by an edge; a decided request cannot be decided again.
func TestCLIRequests(t *testing.T) {
	run, dataDir := setupDir(t)
	steps := [][]string{
		{"device", "register", "-name", "scanner.dept.example.edu", "-owner", "Ada", "-contact", "ada@dept.example.edu", "-sender", "scanner@dept.example.edu"},
		{"device", "approve", "scanner.dept.example.edu", "-force", "-reason", "checked"},
		{"edge", "add", "bldg-12"},
	}
	for _, s := range steps {
		if code, out, errOut := run("", s...); code != 0 {
			t.Fatalf("%v: exit %d %s %s", s, code, out, errOut)
		}
	}
	// The edge reports the device without having relayed for it: a request.
	code, out, _ := run("", "request", "list")
	if code != 0 || strings.Contains(out, "scanner") {
		t.Fatalf("request list before any report: %d %q", code, out)
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(dataDir, sqlite.FileName), nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := st.SuspendByEdge(context.Background(), store.EdgeSuspension{Edge: "bldg-12", Device: "scanner.dept.example.edu",
		Reason: "suspended by edge bldg-12: NDR to scanner@dept.example.edu undeliverable", Cap: 3})
	if err != nil || res.Outcome != store.EdgeRequested {
		t.Fatalf("SuspendByEdge: %+v %v", res, err)
	}
	st.Close()
	id := fmt.Sprint(res.Request.ID)
	for _, s := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"request", "list"}, 0, "open   scanner.dept.example.edu  bldg-12"},
		{[]string{"request", "confirm", "x"}, 1, "not a request id"},
		{[]string{"request", "confirm", "999"}, 1, "not found"},
		{[]string{"request", "confirm", id, "-reason", "bounces checked"}, 0, "confirmed: scanner.dept.example.edu (edge bldg-12)"},
		{[]string{"request", "dismiss", id}, 1, "not allowed"},
		{[]string{"device", "show", "scanner.dept.example.edu"}, 0, "suspended"},
		{[]string{"request", "list", "-all"}, 0, "confirmed"},
		{[]string{"edge", "revoke", "bldg-12"}, 1, "a reason is required"},
		{[]string{"edge", "revoke", "bldg-12", "-reason", "stolen"}, 0, "edge bldg-12 revoked"},
		{[]string{"edge", "revoke", "bldg-12", "-reason", "again"}, 1, "not found"},
		{[]string{"edge", "add", "postern-central"}, 1, "central's own MQTT client id"},
	} {
		code, out, errOut := run("", s.args...)
		got := out
		if s.code != 0 {
			got = errOut
		}
		if code != s.code || !strings.Contains(got, s.out) {
			t.Errorf("%v: exit %d, want %d; stdout %q stderr %q (want %q)", s.args, code, s.code, out, errOut, s.out)
		}
	}
}

// TestCLITokenScopes: a token made on the command line is read-only and
// expires after api.token_lifetime unless asked otherwise, within
// api.max_token_lifetime.
func TestCLITokenScopes(t *testing.T) {
	run, dataDir := setupDir(t)
	if code, out, errOut := run("", "user", "add", "admin"); code != 0 {
		t.Fatalf("user add: %d %s %s", code, out, errOut)
	}
	for _, s := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"user", "token", "admin", "-label", "reader"}, 0, "read-only"},
		{[]string{"user", "token", "admin", "-label", "writer", "-scope", "read-write", "-lifetime", "48h"}, 0, "read-write"},
		{[]string{"user", "token", "admin", "-scope", "admin"}, 1, "scope: must be"},
		{[]string{"user", "token", "admin", "-lifetime", "9000h"}, 1, "expiry: must be from 1 hour to 365 days"},
	} {
		code, out, errOut := run("", s.args...)
		if code != s.code || !strings.Contains(errOut, s.out) {
			t.Errorf("%v: exit %d, want %d; stdout %q stderr %q (want %q)", s.args, code, s.code, out, errOut, s.out)
		}
		if code == 0 && len(strings.TrimSpace(out)) < 32 {
			t.Errorf("%v: no token on stdout: %q", s.args, out)
		}
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(dataDir, sqlite.FileName), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	toks, err := st.ListAPITokens(context.Background(), "admin")
	if err != nil || len(toks) != 2 {
		t.Fatalf("tokens: %+v %v", toks, err)
	}
	for _, tk := range toks {
		life := tk.ExpiresAt.Sub(tk.CreatedAt)
		switch tk.Label {
		case "reader":
			if tk.Scope != store.ReadOnly || life != 90*24*time.Hour {
				t.Errorf("reader token: scope %q lifetime %s", tk.Scope, life)
			}
		case "writer":
			if tk.Scope != store.ReadWrite || life != 48*time.Hour {
				t.Errorf("writer token: scope %q lifetime %s", tk.Scope, life)
			}
		default:
			t.Errorf("unexpected token %+v", tk)
		}
	}
}
