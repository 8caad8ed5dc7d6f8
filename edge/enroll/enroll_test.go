package enroll

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/postern/postern/edge/config"
)

func state() State {
	st := State{EdgeID: "edge-1", MQTTURL: "tls://central.example.edu:8883", Username: "edge-1", Password: "pw",
		TopicPrefix: "org/v1", PublicKey: "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", CentralURL: "https://central.example.edu"}
	st.Config.HeartbeatInterval = "10s"
	st.Config.AffiliatedDomains = []string{"example.edu"}
	return st
}

func TestSaveLoadMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := Load(dir); !os.IsNotExist(unwrapAll(err)) {
		t.Fatalf("Load before enrolment: %v", err)
	}
	if err := Save(dir, state()); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v", fi.Mode().Perm(), err)
	}
	got, err := Load(dir)
	if err != nil || got.Password != "pw" {
		t.Fatalf("%+v %v", got, err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func TestValidate(t *testing.T) {
	for name, mut := range map[string]func(*State){
		"bad id":        func(s *State) { s.EdgeID = "A/B" },
		"no password":   func(s *State) { s.Password = "" },
		"bad key":       func(s *State) { s.PublicKey = "xx" },
		"bad mqtt url":  func(s *State) { s.MQTTURL = "nope" },
		"bad heartbeat": func(s *State) { s.Config.HeartbeatInterval = "soon" },
	} {
		s := state()
		mut(&s)
		if err := s.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestMergeConfigWins(t *testing.T) {
	c := config.Default(false)
	c.Sync.MQTTURL = "tcp://override:1883"
	state().Merge(&c)
	if !c.Sync.Enabled || c.Sync.EdgeID != "edge-1" || c.Sync.Password != "pw" || c.Sync.TopicPrefix != "org/v1" {
		t.Fatalf("not filled: %+v", c.Sync)
	}
	if c.Sync.MQTTURL != "tcp://override:1883" {
		t.Fatal("configuration value overridden by enrolment")
	}
	if c.Sync.HeartbeatInterval != 10*time.Second || len(c.SMTP.AffiliatedDomains) != 1 {
		t.Fatalf("initial config not applied: %v %v", c.Sync.HeartbeatInterval, c.SMTP.AffiliatedDomains)
	}
}

// TestCentralURLMustBeHTTPS: only https:// is accepted; http:// only with
// the explicit flag and only for a loopback address.
func TestCentralURLMustBeHTTPS(t *testing.T) {
	for _, c := range []struct {
		url   string
		allow bool
		ok    bool
	}{
		{"https://postern.example.edu", false, true},
		{"http://postern.example.edu", false, false},
		{"http://postern.example.edu", true, false},
		{"http://127.0.0.1:8480", false, false},
		{"http://127.0.0.1:8480", true, true},
		{"http://[::1]:8480", true, true},
		{"http://localhost:8480", true, true},
		{"ftp://postern.example.edu", true, false},
		{"postern.example.edu", true, false},
	} {
		err := CheckCentralURL(c.url, c.allow)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrInsecureURL)) {
			t.Errorf("CheckCentralURL(%q, %v) = %v, want ok=%v", c.url, c.allow, err, c.ok)
		}
	}
	if _, err := Enroll(context.Background(), nil, "http://postern.example.edu", "tok", false); !errors.Is(err, ErrInsecureURL) {
		t.Fatalf("Enroll over http: %v", err)
	}
	st := State{CAPEM: "not a certificate"}
	if _, err := st.TLSConfig(); err == nil {
		t.Fatal("a bad ca_pem was accepted")
	}
}
