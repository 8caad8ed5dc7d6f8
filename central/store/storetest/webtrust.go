package storetest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/central/store"
)

func testTokens(t *testing.T, s store.Store, _ func() store.Store) {
	must(t, s.CreateUser(ctx, store.User{Name: "alice"}))
	must(t, s.CreateUser(ctx, store.User{Name: "bob"}))
	exp := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	hashA := strings.Repeat("a", 64)
	must(t, s.CreateAPIToken(ctx, store.APIToken{Hash: hashA, User: "alice", Label: "ci", Scope: store.ReadOnly, ExpiresAt: exp}))
	must(t, s.CreateAPIToken(ctx, store.APIToken{Hash: strings.Repeat("b", 64), User: "bob", Label: "ops"}))
	if err := s.CreateAPIToken(ctx, store.APIToken{Hash: strings.Repeat("c", 64), User: "bob", Scope: "admin"}); err == nil {
		t.Error("unknown scope accepted")
	}
	tok, err := s.APIToken(ctx, hashA)
	must(t, err)
	if tok.ID != hashA[:16] || tok.Scope != store.ReadOnly || !tok.ExpiresAt.Equal(exp) || tok.User != "alice" {
		t.Errorf("token: %+v", tok)
	}
	if tok, _ := s.APIToken(ctx, strings.Repeat("b", 64)); tok.Scope != store.ReadWrite || !tok.ExpiresAt.IsZero() {
		t.Errorf("default scope and expiry: %+v", tok)
	}
	all, err := s.ListAPITokens(ctx, "")
	must(t, err)
	if len(all) != 2 || all[0].Hash != "" || all[1].Hash != "" {
		t.Errorf("list: %+v", all)
	}
	if mine, _ := s.ListAPITokens(ctx, "alice"); len(mine) != 1 || mine[0].Label != "ci" {
		t.Errorf("list alice: %+v", mine)
	}
	rev, err := s.RevokeAPIToken(ctx, hashA[:16], "staff:bob")
	must(t, err)
	if rev.User != "alice" || rev.Hash != "" {
		t.Errorf("revoked: %+v", rev)
	}
	if _, err := s.APIToken(ctx, hashA); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("revoked token still found: %v", err)
	}
	if _, err := s.RevokeAPIToken(ctx, hashA[:16], "staff:bob"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("revoke twice: %v", err)
	}
	as, _ := s.ListAudit(ctx, store.AuditFilter{})
	if len(as) == 0 || as[0].Action != "revoke-api-token" || as[0].Actor != "staff:bob" || !strings.Contains(as[0].Reason, "alice") {
		t.Errorf("audit: %+v", as)
	}
}

func testPasswordChange(t *testing.T, s store.Store, _ func() store.Store) {
	must(t, s.CreateUser(ctx, store.User{Name: "alice", PasswordHash: "old"}))
	must(t, s.CreateUser(ctx, store.User{Name: "bob", PasswordHash: "b"}))
	now := time.Now()
	for _, id := range []string{"a1", "a2", "a3"} {
		must(t, s.CreateSession(ctx, store.Session{IDHash: id, User: "alice", ExpiresAt: now.Add(time.Hour)}))
	}
	must(t, s.CreateSession(ctx, store.Session{IDHash: "b1", User: "bob", ExpiresAt: now.Add(time.Hour)}))
	must(t, s.ChangeUserPassword(ctx, "alice", "new", "a2", "staff:alice"))
	if u, _ := s.User(ctx, "alice"); u.PasswordHash != "new" {
		t.Errorf("password not changed: %+v", u)
	}
	for id, want := range map[string]bool{"a1": false, "a2": true, "a3": false, "b1": true} {
		_, err := s.Session(ctx, id, now)
		if (err == nil) != want {
			t.Errorf("session %s alive=%v, want %v", id, err == nil, want)
		}
	}
	must(t, s.ChangeUserPassword(ctx, "alice", "newer", "", "cli"))
	if _, err := s.Session(ctx, "a2", now); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("keep \"\" left a session: %v", err)
	}
	if err := s.ChangeUserPassword(ctx, "carol", "x", "", "cli"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown user: %v", err)
	}
}

func testSenderByToken(t *testing.T, s store.Store, _ func() store.Store) {
	must(t, s.CreateDevice(ctx, dev("t.example.edu", "scan@example.edu"), "owner"))
	sent := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	must(t, s.SetSenderConfirmation(ctx, "t.example.edu", "scan@example.edu", "h1", sent))
	d, sn, err := s.SenderByToken(ctx, "h1")
	must(t, err)
	if d != "t.example.edu" || sn.Address != "scan@example.edu" || !sn.ConfirmSentAt.Equal(sent) || sn.Confirmed() {
		t.Errorf("by token: %s %+v", d, sn)
	}
	for _, h := range []string{"", "h2"} {
		if _, _, err := s.SenderByToken(ctx, h); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("token %q: %v", h, err)
		}
	}
}

func testPendingCounts(t *testing.T, s store.Store, _ func() store.Store) {
	for i, name := range []string{"p1.example.edu", "p2.example.edu", "p3.example.edu"} {
		d := dev(name, "scan@example.edu")
		if i == 2 {
			d.ContactEmail = "bob@example.edu"
		}
		must(t, s.CreateDevice(ctx, d, "owner"))
		ip := "192.0.2.1"
		if i == 1 {
			ip = "192.0.2.2"
		}
		must(t, s.RecordRequester(ctx, name, ip))
	}
	if err := s.RecordRequester(ctx, "p1.example.edu", "192.0.2.9"); !errors.Is(err, store.ErrExists) {
		t.Errorf("second requester: %v", err)
	}
	c, err := s.CountPending(ctx, "ADA@example.edu", "192.0.2.1")
	must(t, err)
	if c.ByContact != 2 || c.ByClientIP != 2 {
		t.Errorf("counts %+v, want 2 and 2", c)
	}
	// Only pending requests count.
	must(t, s.DenyDevice(ctx, "p1.example.edu", "staff:x", "no"))
	if c, _ := s.CountPending(ctx, "ada@example.edu", "192.0.2.1"); c.ByContact != 1 || c.ByClientIP != 1 {
		t.Errorf("after deny %+v, want 1 and 1", c)
	}
}
