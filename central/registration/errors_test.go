package registration

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/postern/postern/central/store"
	"github.com/postern/postern/central/store/sqlite"
)

// TestActErrorsAreTyped: every refusal of Act is a typed error (no text
// matching) with one HTTP status, which the web console and the API share
// through HTTPStatus.
func TestActErrorsAreTyped(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "c.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if err := st.CreateDevice(ctx, store.Device{Name: "a.example.edu", Owner: "o", ContactEmail: "o@example.edu",
		Senders: []store.Sender{{Address: "s@example.edu"}}}, "owner"); err != nil {
		t.Fatal(err)
	}
	s := &Service{Store: st, Period: 24 * time.Hour}
	long := fmt.Sprintf("%01001d", 0)
	cases := []struct {
		name   string
		device string
		action Action
		reason string
		is     error
		status int
	}{
		{"unknown action", "a.example.edu", "frob", "x", ErrUnknownAction, http.StatusNotFound},
		{"expire is not a staff action", "a.example.edu", store.ActExpire, "x", ErrUnknownAction, http.StatusNotFound},
		{"unknown device", "b.example.edu", Deny, "x", store.ErrNotFound, http.StatusNotFound},
		{"unconfirmed sender", "a.example.edu", Approve, "", ErrUnconfirmed, http.StatusConflict},
		{"reason required", "a.example.edu", Suspend, "", ErrReasonRequired, http.StatusUnprocessableEntity},
		{"reason too long", "a.example.edu", Deny, long, ErrReasonTooLong, http.StatusUnprocessableEntity},
		{"not from pending", "a.example.edu", Reinstate, "", store.ErrTransition, http.StatusConflict},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := s.Act(ctx, c.device, c.action, "staff:a", c.reason, false)
			if !errors.Is(err, c.is) {
				t.Fatalf("Act: %v, want %v", err, c.is)
			}
			if got := HTTPStatus(err); got != c.status {
				t.Fatalf("HTTPStatus(%v) = %d, want %d", err, got, c.status)
			}
		})
	}
	var te *store.TransitionError
	err = s.Act(ctx, "a.example.edu", Reinstate, "staff:a", "", false)
	if !errors.As(err, &te) || te.From != store.Pending || te.Action != Reinstate {
		t.Fatalf("transition error: %#v", err)
	}
	if HTTPStatus(errors.New("disk on fire")) != http.StatusInternalServerError {
		t.Fatal("an unknown error is not a 500")
	}
}

// TestLifecycleTable: the table is the only place transitions are
// decided; spot-check it through store.Next.
func TestLifecycleTable(t *testing.T) {
	for _, c := range []struct {
		a    Action
		from store.Status
		to   store.Status
		noop bool
		ok   bool
	}{
		{Approve, store.Pending, store.Active, false, true},
		{Approve, store.Revoked, "", false, false},
		{Suspend, store.Active, store.Suspended, false, true},
		{Suspend, store.Suspended, store.Suspended, true, true},
		{Suspend, store.Pending, "", false, false},
		{Reinstate, store.Suspended, store.Active, false, true},
		{Revoke, store.Expired, store.Revoked, false, true},
		{Renew, store.Expired, store.Active, false, true},
		{store.ActExpire, store.Active, store.Expired, false, true},
	} {
		to, noop, err := store.Next(c.a, "d", c.from)
		if (err == nil) != c.ok || to != c.to || noop != c.noop {
			t.Errorf("Next(%s, %s) = %s %v %v", c.a, c.from, to, noop, err)
		}
	}
}
