package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/postern/postern/shared/configfile"
)

func TestExampleMatchesDefaults(t *testing.T) {
	c := Default(false)
	if err := configfile.Load("../../deploy/central.example.toml", &c); err != nil {
		t.Fatal(err)
	}
	if want := Default(false); fmt.Sprintf("%+v", c) != fmt.Sprintf("%+v", want) { // nil and empty lists print alike
		t.Errorf("deploy/central.example.toml differs from Default(false):\n got %+v\nwant %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("example does not validate: %v", err)
	}
	dev := Default(true)
	if err := dev.Validate(); err != nil {
		t.Errorf("dev defaults do not validate: %v", err)
	}
}

func TestBadValuesNameTheKey(t *testing.T) {
	cases := []struct{ toml, key string }{
		{"nope = 1", "nope"},
		{"[http]\nlisten = \"x\"", "http.listen"},
		{"[http]\nbase_url = \"ftp://x\"", "http.base_url"},
		{"[http]\nidentity_header = \"X-User\"", "http.trusted_proxies"},
		{"[database]\nurl = \"mysql://x\"", "database.url"},
		{"[database]\nleader_interval = \"10ms\"", "database.leader_interval"},
		{"[mqtt]\nshared_group = \"a/b\"", "mqtt.shared_group"},
		{"[mqtt]\nlisten = \"\"\nurl = \"\"", "mqtt.listen"},
		{"[mqtt]\nurl = \"http://x:1\"", "mqtt.url"},
		{"[allowlist]\nvalid_for = \"1m\"", "allowlist.valid_for"},
		{"[policy]\ndefault_messages_per_hour = 0", "policy.default_messages_per_hour"},
		{"[login]\nfree_attempts = 0", "login.free_attempts"},
		{"[login]\nbackoff = \"1h\"", "login.backoff"},
		{"[login]\nlock_after = 2", "login.lock_after"},
		{"[login]\nlock_duration = \"1s\"", "login.lock_duration"},
		{"[login]\nmax_concurrent_hashes = 0", "login.max_concurrent_hashes"},
		{"[register]\nsubmissions_per_hour = 0", "register.submissions_per_hour"},
		{"[register]\ndns_checks_per_hour = -1", "register.dns_checks_per_hour"},
		{"[register]\nmax_pending_per_contact = 0", "register.max_pending_per_contact"},
		{"[register]\nmax_pending_per_address = 0", "register.max_pending_per_address"},
		{"[register]\nconfirmation_lifetime = \"1m\"", "register.confirmation_lifetime"},
		{"[api]\ntoken_lifetime = \"9000h\"", "api.token_lifetime"},
		{"[api]\nmax_token_lifetime = \"1m\"", "api.max_token_lifetime"},
		{"[edges]\nauto_suspensions_per_hour = -1", "edges.auto_suspensions_per_hour"},
		{"[edges]\nmax_event_bytes = 10", "edges.max_event_bytes"},
		{"[events]\nretention = \"48h\"", "events.retention"},
		{"[mqtt]\ntls_cert = \"x.pem\"", "mqtt.tls_cert"},
		{"[mqtt]\ndynsec_username = \"c-dynsec\"\ndynsec_password = \"x\"", "mqtt.dynsec_username"},
		{"[mqtt]\nlisten = \"\"\nurl = \"tcp://127.0.0.1:1883\"\ndynsec_username = \"c-dynsec\"", "mqtt.dynsec_password"},
		{"[mqtt]\nlisten = \"\"\nurl = \"tcp://127.0.0.1:1883\"\nusername = \"c\"\ndynsec_username = \"c\"\ndynsec_password = \"x\"", "mqtt.dynsec_username"},
		{"[mail]\nstaff_notify = [\"not an address\"]", "mail.staff_notify[0]"},
		{"[http]\ndisplay_time_zone = \"Mars/Olympus\"", "http.display_time_zone"},
	}
	for _, tc := range cases {
		t.Run(tc.key, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.toml")
			os.WriteFile(path, []byte(tc.toml), 0o600)
			_, err := Load(path, true)
			var ce *configfile.Error
			if !errors.As(err, &ce) || ce.Key != tc.key {
				t.Fatalf("Load(%q) = %v, want error naming %q", tc.toml, err, tc.key)
			}
		})
	}
}

func TestOwnerNoticesAndTimeZone(t *testing.T) {
	c := Default(false)
	if c.Mail.OwnerNotices() {
		t.Error("owner notices on without a smarthost")
	}
	c.Mail.Smarthost = "127.0.0.1:25"
	if !c.Mail.OwnerNotices() {
		t.Error("owner notices off by default with a smarthost")
	}
	off := false
	c.Mail.NotifyOwners = &off
	if c.Mail.OwnerNotices() {
		t.Error("mail.notify_owners = false ignored")
	}
	if c.HTTP.Location() != time.UTC {
		t.Errorf("default display zone %v", c.HTTP.Location())
	}
	c.HTTP.DisplayTimeZone = "Europe/Berlin"
	if c.HTTP.Location().String() != "Europe/Berlin" {
		t.Errorf("display zone %v", c.HTTP.Location())
	}
}
