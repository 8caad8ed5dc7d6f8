package fcrdns_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/central/fcrdns"
	"github.com/postern/postern/shared/dnstest"
	"github.com/postern/postern/shared/resolver"
)

func TestCheck(t *testing.T) {
	srv := dnstest.Start(t)
	srv.AddA("scanner.dept.example.edu", "10.1.2.3")
	srv.AddPTR("10.1.2.3", "scanner.dept.example.edu")
	srv.AddA("copier.dept.example.edu", "10.1.2.9") // wrong forward
	srv.AddPTR("10.1.2.4", "copier.dept.example.edu")
	srv.AddA("fw.dept.example.edu", "10.1.2.5")
	srv.AddPTR("10.1.2.5", "fw.dept.example.edu")
	srv.AddA("noptr.dept.example.edu", "10.1.2.6")
	r, err := resolver.New(resolver.Options{Servers: []string{srv.Addr}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, host string
		ips        []string
		ok         bool
		want       string
	}{
		{"match", "scanner.dept.example.edu", []string{"10.1.2.3"}, true, "reverse DNS of 10.1.2.3 is scanner.dept.example.edu; forward lookup matches"},
		{"match by forward lookup", "Scanner.Dept.Example.Edu.", nil, true, "forward lookup matches"},
		{"forward mismatch", "copier.dept.example.edu", []string{"10.1.2.4"}, false, "copier.dept.example.edu resolves to 10.1.2.9, not 10.1.2.4"},
		{"other name", "scanner.dept.example.edu", []string{"10.1.2.5"}, false, "reverse DNS of 10.1.2.5 is fw.dept.example.edu (forward lookup matches), not scanner.dept.example.edu: register fw.dept.example.edu instead"},
		{"no ptr", "noptr.dept.example.edu", nil, false, "10.1.2.6 has no reverse DNS (PTR) record"},
		{"no address", "nothing.example.edu", nil, false, "has no address"},
		{"one of two fails", "scanner.dept.example.edu", []string{"10.1.2.3", "10.1.2.6"}, false, "10.1.2.6 has no reverse DNS"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var ips []netip.Addr
			for _, s := range c.ips {
				ips = append(ips, netip.MustParseAddr(s))
			}
			res := fcrdns.Check(context.Background(), r, c.host, ips)
			if res.OK != c.ok || !strings.Contains(res.Summary(), c.want) {
				t.Errorf("got ok=%v %q, want ok=%v containing %q", res.OK, res.Summary(), c.ok, c.want)
			}
		})
	}
}

func TestTemporary(t *testing.T) {
	srv := dnstest.Start(t)
	srv.Drop("3.2.1.10.in-addr.arpa")
	r, err := resolver.New(resolver.Options{Servers: []string{srv.Addr}, Timeout: 200 * time.Millisecond, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	res := fcrdns.Check(context.Background(), r, "scanner.example.edu", []netip.Addr{netip.MustParseAddr("10.1.2.3")})
	if res.OK || !res.Temporary || !strings.Contains(res.Summary(), "temporarily") {
		t.Errorf("got %+v", res)
	}
}
