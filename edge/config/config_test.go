package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postern/postern/shared/configfile"
)

// The example file in deploy/ is the reference documentation: decoding it
// must give exactly the code defaults, so the two cannot drift apart.
func TestExampleMatchesDefaults(t *testing.T) {
	c := Default(false)
	c.Hostname = "x" // the example leaves hostname commented out
	if err := configfile.Load("../../deploy/edge.example.toml", &c); err != nil {
		t.Fatal(err)
	}
	want := Default(false)
	want.Hostname = "x"
	if fmt.Sprintf("%+v", c) != fmt.Sprintf("%+v", want) { // nil and empty lists print alike
		t.Errorf("deploy/edge.example.toml differs from Default(false):\n got %+v\nwant %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("example does not validate: %v", err)
	}
}

func TestDevDefaultsValidate(t *testing.T) {
	c := Default(true)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.SMTP.Listen[0] != "127.0.0.1:2525" {
		t.Errorf("dev listen = %v", c.SMTP.Listen)
	}
}

func TestBadValuesNameTheKey(t *testing.T) {
	cases := []struct{ toml, key string }{
		{"bogus = 1", "bogus"},
		{"[smtp]\nlisten_addr = []", "smtp.listen_addr"},
		{"[smtp]\nlisten = [\"nonsense\"]", "smtp.listen[0]"},
		{"[smtp]\nlocal_networks = [\"0.0.0.0/0\"]", "smtp.local_networks[0]"},
		{"[smtp]\nlocal_networks = [\"10.0.0.0/33\"]", "smtp.local_networks[0]"},
		{"[smtp]\ntls_min_version = \"1.4\"", "smtp.tls_min_version"},
		{"[smtp]\nmax_line_length = 500", "smtp.max_line_length"},
		{"[smtp]\naffiliated_domains = [\"exa mple.edu\"]", "smtp.affiliated_domains[0]"},
		{"[smtp]\ntls_cert = \"a.pem\"", "smtp.tls_cert"},
		{"[smtp]\nmax_inflight_bytes = 1024", "smtp.max_inflight_bytes"},
		{"memory_limit = 268435456", "memory_limit"},
		{"memory_limit = 1073741824\n[smtp]\nmax_inflight_bytes = 1048576000", "memory_limit"},
		{"[smtp]\nipv6_prefix_length = 16", "smtp.ipv6_prefix_length"},
		{"[smtp]\nmax_session_duration = \"1s\"", "smtp.max_session_duration"},
		{"[smtp]\nmax_transactions_per_session = 0", "smtp.max_transactions_per_session"},
		{"[log]\nformat = \"xml\"", "log.format"},
		{"[dns]\nresolvers = [\"not-an-ip\"]", "dns.resolvers[0]"},
		{"[dns]\nserve_stale = \"-1s\"", "dns.serve_stale"},
		{"[spool]\nmin_free = 1024", "spool.min_free"},
		{"[policy]\nmessages_per_hour = 0", "policy.messages_per_hour"},
		{"[[devices]]\nname = \"a..b\"", "devices[0].name"},
		{"[[devices]]\nname = \"a.example.edu\"\nstatus = \"gone\"", "devices[0].status"},
		{"[[devices]]\nname = \"a.example.edu\"\nsenders = [\"not an address\"]", "devices[0].senders[0]"},
		{"[[devices]]\nname = \"a.example.edu\"\n[[devices]]\nname = \"A.example.edu.\"", "devices[1].name"},
		{"[delivery]\ntls = \"maybe\"", "delivery.tls"},
		{"[delivery]\nretry_max = \"1s\"", "delivery.retry_max"},
		{"[delivery]\nsmarthost_username = \"u\"", "delivery.smarthost_username"},
		{"[dns]\nvalidating_resolvers = [\"unbound\"]", "dns.validating_resolvers[0]"},
		{"[[delivery.tls_policy]]\ndomain = \"a..b\"\nmode = \"may\"", "delivery.tls_policy[0].domain"},
		{"[[delivery.tls_policy]]\ndomain = \"example.com\"\nmode = \"secure\"", "delivery.tls_policy[0].mode"},
		{"[[delivery.tls_policy]]\ndomain = \"example.com\"\nmode = \"dane\"", "delivery.tls_policy[0].mode"},
		{"[[delivery.tls_policy]]\ndomain = \"example.com\"\nmode = \"verify\"\nmx = [\"mx..example.com\"]", "delivery.tls_policy[0].mx[0]"},
		{"[[delivery.tls_policy]]\ndomain = \"example.com\"\nmode = \"may\"\n[[delivery.tls_policy]]\ndomain = \"Example.com.\"\nmode = \"verify\"", "delivery.tls_policy[1].domain"},
		{"[spool]\nvalue_log_file_size = 10", "spool.value_log_file_size"},
		{"[admin]\nlisten = \"0.0.0.0:9025\"", "admin.token"},
		{"[sync]\nmqtt_url = \"ftp://x:1\"", "sync.mqtt_url"},
		{"[sync]\ntopic_prefix = \"a/#\"", "sync.topic_prefix"},
	}
	for _, tc := range cases {
		t.Run(tc.key, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "edge.toml")
			if err := os.WriteFile(path, []byte(tc.toml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path, true)
			var ce *configfile.Error
			if !errors.As(err, &ce) {
				t.Fatalf("Load(%q) = %v, want a *configfile.Error", tc.toml, err)
			}
			if ce.Key != tc.key {
				t.Errorf("error names key %q, want %q (%v)", ce.Key, tc.key, err)
			}
			if !strings.Contains(err.Error(), tc.key) {
				t.Errorf("message %q does not contain the key", err)
			}
		})
	}
}

func TestSyntaxErrorHasPosition(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edge.toml")
	os.WriteFile(path, []byte("[smtp\nlisten = 1"), 0o600)
	_, err := Load(path, false)
	if err == nil || !strings.Contains(err.Error(), "line ") {
		t.Fatalf("want a positioned syntax error, got %v", err)
	}
}

func TestTLSPolicyLoads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edge.toml")
	toml := "[dns]\nresolvers = [\"127.0.0.1\"]\nvalidating_resolvers = [\"127.0.0.1:53\"]\n" +
		"[[delivery.tls_policy]]\ndomain = \"example.com\"\nmode = \"dane\"\n" +
		"[[delivery.tls_policy]]\ndomain = \".example.org\"\nmode = \"verify\"\nmx = [\"*.mail.example.org\"]\n"
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Delivery.TLSPolicy) != 2 || c.Delivery.TLSPolicy[1].MX[0] != "*.mail.example.org" || c.Delivery.TLSPolicy[0].Mode != "dane" {
		t.Errorf("tls_policy = %+v", c.Delivery.TLSPolicy)
	}
	if !c.Delivery.MTASTS {
		t.Error("delivery.mta_sts is off by default")
	}
}

// memory_limit follows the intake budget unless the file sets it; 0 is off.
func TestMemoryLimitDefault(t *testing.T) {
	if got, want := Default(false).MemoryLimit, int64(256<<20+96<<20); got != want {
		t.Errorf("Default memory_limit = %d, want %d", got, want)
	}
	for _, tc := range []struct {
		toml string
		want int64
	}{
		{"", 352 << 20},
		{"[smtp]\nmax_inflight_bytes = 536870912", 608 << 20},
		{"memory_limit = 0\n[smtp]\nmax_inflight_bytes = 536870912", 0},
		{"memory_limit = 734003200\n[smtp]\nmax_inflight_bytes = 536870912", 700 << 20},
	} {
		path := filepath.Join(t.TempDir(), "edge.toml")
		if err := os.WriteFile(path, []byte(tc.toml), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path, true)
		if err != nil {
			t.Fatalf("Load(%q): %v", tc.toml, err)
		}
		if c.MemoryLimit != tc.want {
			t.Errorf("Load(%q): memory_limit = %d, want %d", tc.toml, c.MemoryLimit, tc.want)
		}
	}
}
