package config

import (
	"strings"
	"testing"
)

func TestRealHostname(t *testing.T) {
	for h, want := range map[string]bool{
		"edge1.example.edu": true, "mail.uni.ac.uk.": true,
		"localhost": false, "edge.localhost": false, "pi": false, "edge.local": false, "edge.test": false,
		"host.internal": false, "192.0.2.1": false, "x.home.arpa": false, "": false,
	} {
		if got := RealHostname(h); got != want {
			t.Errorf("RealHostname(%q) = %v, want %v", h, got, want)
		}
	}
}

// TLS reports are on by default only for an edge with a real host name
// whose postmaster is affiliated; "on" with an outside sender is refused
// by key.
func TestTLSRPTDefaults(t *testing.T) {
	c := Default(false)
	c.Hostname = "edge1.example.edu"
	if _, on := c.TLSRPTFrom(); on {
		t.Error("on without affiliated domains")
	}
	c.SMTP.AffiliatedDomains = []string{"example.edu", ".example.edu"}
	if from, on := c.TLSRPTFrom(); !on || from != "postmaster@edge1.example.edu" {
		t.Errorf("TLSRPTFrom = %q, %v", from, on)
	}
	c.Hostname = "edge.localhost"
	if _, on := c.TLSRPTFrom(); on {
		t.Error("on for a localhost name")
	}
	if d := Default(true); func() bool { _, on := d.TLSRPTFrom(); return on }() {
		t.Error("on in a dev run")
	}
	c.Delivery.TLSRPT.Mode = "on"
	c.Delivery.TLSRPT.From = "reports@elsewhere.example.com"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "delivery.tlsrpt.from") {
		t.Errorf("outside sender accepted: %v", err)
	}
	c.Delivery.TLSRPT.From = "tlsrpt@example.edu"
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
	if from, on := c.TLSRPTFrom(); !on || from != "tlsrpt@example.edu" {
		t.Errorf("mode on: %q, %v", from, on)
	}
	c.Delivery.TLSRPT.Mode = "sometimes"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "delivery.tlsrpt.mode") {
		t.Errorf("bad mode: %v", err)
	}
}
