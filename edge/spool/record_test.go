package spool

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/postern/postern/shared/testkit"
)

// TestRecordUpdateWithReport: Record rewrites the original and spools the
// report in one step; both are visible afterwards, with counters right.
func TestRecordUpdateWithReport(t *testing.T) {
	s, _ := newTestSpool(t)
	orig := testEnv(t0, "a@example.org", "b@example.org")
	id := mustPut(t, s, orig, []byte("original"))
	orig.Recipients[0].State = Failed
	orig.NextAttempt = t0.Add(time.Hour)
	ndr := &Envelope{Recipients: []Recipient{{Addr: "scanner@example.edu"}}, Bounce: true, ReceivedAt: t0, NextAttempt: t0}
	if err := s.Record(orig, NewMessage{Env: ndr, Data: []byte("report")}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(id)
	if err != nil || got.Recipients[0].State != Failed || !got.NextAttempt.Equal(t0.Add(time.Hour)) || got.Size != int64(len("original")) {
		t.Fatalf("original after Record: %+v %v", got, err)
	}
	if d, err := s.Data(ndr.ID); err != nil || string(d) != "report" {
		t.Fatalf("report data %q %v", d, err)
	}
	if due, _ := s.Due(t0, 0); len(due) != 1 || due[0].ID != ndr.ID {
		t.Fatalf("due after Record: %v", due)
	}
	if st := s.Stats(); st.Messages != 2 || st.Bytes != int64(len("original")+len("report")) {
		t.Fatalf("stats %+v", st)
	}
}

// TestRecordRemovesFinishedMessage: when every recipient is final the
// original goes, in the same transaction as its report.
func TestRecordRemovesFinishedMessage(t *testing.T) {
	s, _ := newTestSpool(t)
	orig := testEnv(t0, "a@example.org")
	id := mustPut(t, s, orig, body(3<<20, 1)) // chunked body
	orig.Recipients[0].State = Failed
	ndr := &Envelope{Recipients: []Recipient{{Addr: "scanner@example.edu"}}, Bounce: true, ReceivedAt: t0, NextAttempt: t0}
	if err := s.Record(orig, NewMessage{Env: ndr, Data: []byte("report")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("original still there: %v", err)
	}
	if _, err := s.Data(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("original bytes still there: %v", err)
	}
	if st := s.Stats(); st.Messages != 1 || st.Bytes != int64(len("report")) {
		t.Fatalf("stats %+v", st)
	}
}

// TestRecordAllOrNothing: a Record that fails (the original is gone, or a
// report id is taken) writes nothing at all.
func TestRecordAllOrNothing(t *testing.T) {
	s, _ := newTestSpool(t)
	ghost := testEnv(t0)
	ghost.ID = s.NewID()
	rep := &Envelope{Recipients: []Recipient{{Addr: "x@example.edu"}}, ReceivedAt: t0, NextAttempt: t0}
	if err := s.Record(ghost, NewMessage{Env: rep, Data: []byte("r")}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Record of a missing message = %v", err)
	}
	if _, err := s.Get(rep.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("report spooled although the outcome failed: %v", err)
	}
	orig := testEnv(t0)
	id := mustPut(t, s, orig, []byte("o"))
	taken := mustPut(t, s, testEnv(t0), []byte("t"))
	orig.Recipients[0].State = Failed
	if err := s.Record(orig, NewMessage{Env: &Envelope{ID: taken, ReceivedAt: t0}, Data: []byte("r")}); !errors.Is(err, ErrExists) {
		t.Fatalf("Record with a taken report id = %v", err)
	}
	if got, err := s.Get(id); err != nil || got.Recipients[0].State != Pending {
		t.Fatalf("outcome written although its report was not: %+v %v", got, err)
	}
}

// TestRecordOnFullDisk fills a real file system: a Put is refused, yet
// recording outcomes (update, removal) still works; a report that does
// not fit is refused with ErrFull and nothing is written.
func TestRecordOnFullDisk(t *testing.T) {
	dir := testkit.Tmpfs(t, "16m")
	opts := testOptions(filepath.Join(dir, "spool"))
	opts.MinFree = 4 << 20
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ids []string
	for i := range 400 {
		env := testEnv(t0, "a@example.org", "b@example.org")
		if err := s.Put(context.Background(), env, body(100<<10, uint64(i))); err != nil {
			if !errors.Is(err, ErrFull) {
				t.Fatal(err)
			}
			break
		}
		ids = append(ids, env.ID)
	}
	free := s.Stats().DiskFree
	t.Logf("%d messages spooled, %d bytes free, reserve %d", len(ids), free, opts.MinFree)
	if free >= opts.MinFree+100<<10 {
		t.Fatalf("disk not filled to the reserve: %d free", free)
	}
	// Outcomes are recorded regardless of the reserve.
	for _, id := range ids[:20] {
		env, err := s.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		env.Recipients[0].State = Delivered
		env.NextAttempt = t0.Add(time.Hour)
		if err := s.Record(env); err != nil {
			t.Fatalf("recording an outcome below the reserve: %v", err)
		}
		if err := s.Update(env); err != nil {
			t.Fatalf("update below the reserve: %v", err)
		}
	}
	// A report larger than what is left of half the reserve is refused,
	// all or nothing.
	env, _ := s.Get(ids[20])
	env.Recipients[0].State = Failed
	big := body(int(free), 7)
	err = s.Record(env, NewMessage{Env: &Envelope{Recipients: []Recipient{{Addr: "x@example.edu"}}, ReceivedAt: t0}, Data: big})
	if !errors.Is(err, ErrFull) {
		t.Fatalf("oversized report: %v, want ErrFull", err)
	}
	if got, _ := s.Get(ids[20]); got.Recipients[0].State != Pending {
		t.Fatal("outcome written although its report was refused")
	}
	// Finishing a message frees space.
	env.Recipients[1].State = Delivered
	if err := s.Record(env); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids[21:] {
		d, err := s.Data(id)
		if err != nil || !bytes.Equal(d, body(100<<10, uint64(i+21))) {
			t.Fatalf("message %s damaged: %v", id, err)
		}
	}
}
