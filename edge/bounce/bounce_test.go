package bounce

import (
	"strings"
	"testing"

	"github.com/postern/postern/edge/config"
	"github.com/postern/postern/edge/devices"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/address"
	"github.com/postern/postern/shared/smtpstatus"
)

func rules(t *testing.T) (*Rules, *devices.Table) {
	t.Helper()
	tab, err := devices.New([]config.Device{
		{Name: "scan.example.edu", Senders: []string{"Scan@Example.EDU", "scans@example.net"}},
		{Name: "old.example.edu", Senders: []string{"old@example.net"}},
		{Name: "any.example.edu"}, // no sender list
	}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tab.Suspend("old.example.edu", "test"); err != nil {
		t.Fatal(err)
	}
	dl, err := address.NewDomainList([]string{"example.edu", ".example.edu"})
	if err != nil {
		t.Fatal(err)
	}
	return &Rules{Affiliated: dl, Devices: tab}, tab
}

func TestReportDecision(t *testing.T) {
	r, _ := rules(t)
	for _, c := range []struct {
		env    spool.Envelope
		send   bool
		device string
	}{
		{spool.Envelope{From: "x@example.edu"}, true, ""},     // affiliated, no device
		{spool.Envelope{From: "x@lab.example.edu"}, true, ""}, // affiliated subdomain
		{spool.Envelope{From: "scan@example.edu", Device: "scan.example.edu"}, true, "scan.example.edu"},
		{spool.Envelope{From: "SCAN@example.edu", Device: "SCAN.example.edu."}, true, "scan.example.edu"},
		{spool.Envelope{From: "scans@example.net", Device: "scan.example.edu"}, true, "scan.example.edu"},
		{spool.Envelope{From: "victim@example.net"}, false, ""},
		{spool.Envelope{From: "victim@example.net", Device: "scan.example.edu"}, false, ""},
		{spool.Envelope{From: "victim@example.net", Device: "any.example.edu"}, false, ""}, // no list: no outside reports
		{spool.Envelope{From: "old@example.net", Device: "old.example.edu"}, false, ""},    // suspended
		{spool.Envelope{From: "scans@example.net", Device: "ghost.example.edu"}, false, ""},
		{spool.Envelope{From: "x@evilexample.edu"}, false, ""},
		{spool.Envelope{From: "x@example.edu", Bounce: true}, false, ""},
		{spool.Envelope{From: ""}, false, ""},
	} {
		d := r.Report(&c.env)
		if d.Send != c.send || d.Device != c.device || (!d.Send && d.Why == "") {
			t.Errorf("Report(from %q device %q bounce %v) = %+v, want send %v device %q", c.env.From, c.env.Device, c.env.Bounce, d, c.send, c.device)
		}
	}
	var zero Rules
	if d := zero.Report(&spool.Envelope{From: "x@example.edu", Device: "scan.example.edu"}); d.Send {
		t.Error("zero Rules sent a report")
	}
}

func TestUndeliverableVerdict(t *testing.T) {
	r, _ := rules(t)
	rep := func(forDev string) *spool.Envelope { return &spool.Envelope{Bounce: true, BounceFor: forDev} }
	rc := func(addr string, code int, enh smtpstatus.Code) *spool.Recipient {
		return &spool.Recipient{Addr: addr, Code: code, EnhancedCode: enh, Reply: strings.Repeat("no such user ", 500)}
	}
	for _, c := range []struct {
		name    string
		rep     *spool.Envelope
		rc      *spool.Recipient
		expired bool
		suspend bool
	}{
		{"address refused", rep("scan.example.edu"), rc("scan@example.edu", 550, "5.1.1"), false, true},
		{"outside registered sender refused", rep("scan.example.edu"), rc("scans@example.net", 550, "5.1.10"), false, true},
		{"expired", rep("scan.example.edu"), rc("scan@example.edu", 451, "4.4.1"), true, false},
		{"mailbox full", rep("scan.example.edu"), rc("scan@example.edu", 552, "5.2.2"), false, false},
		{"policy", rep("scan.example.edu"), rc("scan@example.edu", 550, "5.7.1"), false, false},
		{"not for a device", rep(""), rc("scan@example.edu", 550, "5.1.1"), false, false},
		{"address not in the list", rep("scan.example.edu"), rc("other@example.edu", 550, "5.1.1"), false, false},
		{"device gone", rep("ghost.example.edu"), rc("scan@example.edu", 550, "5.1.1"), false, false},
	} {
		v := r.Undeliverable(c.rep, c.rc, c.expired)
		if v.Suspend != c.suspend || (!v.Suspend && v.Why == "") {
			t.Errorf("%s: %+v", c.name, v)
		}
		if len(v.Reason) > MaxReplyText {
			t.Errorf("%s: reason of %d bytes", c.name, len(v.Reason))
		}
	}
}

func TestAddressRefused(t *testing.T) {
	yes := [][2]any{{550, "5.1.1"}, {551, "5.1.6"}, {553, "5.1.3"}, {556, "5.1.10"}, {550, "5.1.2"}, {550, "5.2.1"}, {554, "5.1.1"}}
	no := [][2]any{{552, "5.1.1"}, {552, "5.2.2"}, {552, "5.3.4"}, {550, "5.7.1"}, {554, "5.7.0"}, {550, "5.0.0"},
		{550, "5.1.0"}, {550, "5.1.8"}, {451, "4.1.1"}, {550, ""}, {552, "5.2.3"}}
	for _, c := range yes {
		if !AddressRefused(c[0].(int), smtpstatus.Code(c[1].(string))) {
			t.Errorf("%d %s should suspend", c[0], c[1])
		}
	}
	for _, c := range no {
		if AddressRefused(c[0].(int), smtpstatus.Code(c[1].(string))) {
			t.Errorf("%d %s should not suspend", c[0], c[1])
		}
	}
}
