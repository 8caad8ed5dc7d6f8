package auth

import (
	"net/http/httptest"
	"strings"
	"testing"
)

var cheap = Params{Memory: 64, Time: 1, Threads: 1}

func TestPassword(t *testing.T) {
	h, err := HashPasswordWith(cheap, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("hash %q", h)
	}
	h2, _ := HashPasswordWith(cheap, "correct horse")
	if h == h2 {
		t.Error("same hash twice: salt not random")
	}
	cases := []struct {
		hash, pw string
		ok       bool
	}{
		{h, "correct horse", true},
		{h, "correct horse ", false},
		{h, "", false},
		{"", "correct horse", false},
		{"$argon2i$v=19$m=64,t=1,p=1$AAAA$AAAA", "x", false},
		{strings.Replace(h, "m=64", "m=99999999", 1), "correct horse", false},
		{strings.Replace(h, "$v=19$", "$v=18$", 1), "correct horse", false},
		{h[:len(h)-2], "correct horse", false},
	}
	for i, c := range cases {
		if got := CheckPassword(c.hash, c.pw); got != c.ok {
			t.Errorf("case %d: got %v want %v", i, got, c.ok)
		}
	}
	if _, err := HashPassword(""); err == nil {
		t.Error("empty password hashed")
	}
	def, err := HashPassword("pw")
	if err != nil || !CheckPassword(def, "pw") {
		t.Errorf("default params: %v", err)
	}
}

func TestToken(t *testing.T) {
	a, ha := NewToken()
	b, _ := NewToken()
	if a == b || len(a) != 43 || HashToken(a) != ha || len(ha) != 64 {
		t.Errorf("tokens %q %q %q", a, b, ha)
	}
	if !Equal(a, a) || Equal(a, b) || Equal(a, a[:10]) {
		t.Error("Equal")
	}
}

func FuzzCheckPassword(f *testing.F) {
	h, _ := HashPasswordWith(cheap, "x")
	f.Add(h, "x")
	f.Add("$argon2id$v=19$m=1,t=1,p=1$$", "")
	f.Fuzz(func(t *testing.T, hash, pw string) {
		if strings.Contains(hash, "m=") && len(hash) > 200 {
			return
		}
		CheckPassword(hash, pw) // must not panic
	})
}

func TestProxy(t *testing.T) {
	p, err := NewProxy("X-Remote-User", []string{"10.0.0.1", "192.168.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		remote, header, user string
		ok, untrusted        bool
	}{
		{"10.0.0.1:5555", "alice", "alice", true, false},
		{"192.168.0.77:1", "bob", "bob", true, false},
		{"[::ffff:10.0.0.1]:1", "carol", "carol", true, false},
		{"10.0.0.2:5555", "alice", "", false, true},
		{"10.0.0.1:5555", "", "", false, false},
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.remote
		if c.header != "" {
			r.Header.Set("X-Remote-User", c.header)
		}
		u, ok, un := p.Identity(r)
		if u != c.user || ok != c.ok || un != c.untrusted {
			t.Errorf("%s %q: got %q %v %v", c.remote, c.header, u, ok, un)
		}
	}
	if _, err := NewProxy("X", []string{"nope"}); err == nil {
		t.Error("bad proxy accepted")
	}
	var none *Proxy
	if _, ok, _ := none.Identity(httptest.NewRequest("GET", "/", nil)); ok {
		t.Error("nil proxy trusted")
	}
}
