package queue

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern/postern/edge/delivery/deliverytest"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/testkit"
)

// faultySpool injects failures into a real spool.
type faultySpool struct {
	*spool.Spool
	recordFails atomic.Int32 // Records to fail from now on
	dataFails   atomic.Int32 // Data reads to fail from now on
	records     atomic.Int32 // Record calls
	datas       atomic.Int32 // Data calls
}

var errInjected = errors.New("injected spool failure")

func (f *faultySpool) Record(env *spool.Envelope, news ...spool.NewMessage) error {
	f.records.Add(1)
	if f.recordFails.Add(-1) >= 0 {
		return errInjected
	}
	return f.Spool.Record(env, news...)
}

func (f *faultySpool) Data(id string) ([]byte, error) {
	f.datas.Add(1)
	if f.dataFails.Add(-1) >= 0 {
		return nil, errInjected
	}
	return f.Spool.Data(id)
}

// copiesTo counts the messages a sink received for rcpt.
func copiesTo(s *deliverytest.Sink, rcpt string) int {
	n := 0
	for _, m := range s.Messages() {
		for _, to := range m.To {
			if to == rcpt {
				n++
			}
		}
	}
	return n
}

// TestRecordFailureNoRedelivery: the attempt's outcome cannot be written
// (the spool fails). The delivered recipient must not get a second copy:
// the outcome waits in memory and is written with backoff, no new
// delivery starts meanwhile, and once the spool takes writes again the
// outcome is recorded and only the deferred recipient is tried again.
func TestRecordFailureNoRedelivery(t *testing.T) {
	e := newEnv(t)
	var fs *faultySpool
	e.wrap = func(s *spool.Spool) Spool { fs = &faultySpool{Spool: s}; return fs }
	mx := e.sink("127.0.0.2", deliverytest.Behaviour{Rcpt: refuse("later", smtpErr(451, [3]int{4, 2, 1}, "try later"))})
	m := e.put("good@example.com", "later@example.com")
	e.start()
	fs.recordFails.Store(4)
	mx.Wait(t, 1, 5*time.Second)
	e.eventually("first record attempt", func() bool { return fs.records.Load() >= 1 })
	// Meanwhile a second message arrives: deliveries are paused.
	m2 := e.put("other@example.com")
	time.Sleep(200 * time.Millisecond)
	if n := len(mx.Messages()); n != 1 {
		t.Fatalf("MX got %d messages while outcome writes fail, want 1 (deliveries paused)", n)
	}
	recorded := func() bool {
		got, err := e.sp.Get(m.ID)
		return err == nil && got.Recipients[0].State == spool.Delivered
	}
	// Move the clock past each backoff (1s, 2s, 4s, 8s), in steps that
	// stay far below the 5m retry of the deferred recipient.
	for i := 0; i < 25 && !recorded(); i++ {
		e.clock.Advance(10 * time.Second)
		time.Sleep(40 * time.Millisecond)
	}
	e.eventually("outcome recorded", recorded)
	if n := fs.records.Load(); n < 5 {
		t.Fatalf("%d record attempts, want the 4 failures and a success", n)
	}
	got, _ := e.sp.Get(m.ID)
	if got.Recipients[1].State != spool.Pending || got.Attempts != 1 {
		t.Fatalf("recorded %+v", got)
	}
	mx.Wait(t, 2, 5*time.Second) // m2, once writes work again
	// The retry goes to the deferred recipient only.
	mx.SetBehaviour(deliverytest.Behaviour{})
	e.clock.Set(got.NextAttempt)
	e.eventually("retry delivered", func() bool { return copiesTo(mx, "later@example.com") == 1 })
	e.eventually("spool empty", func() bool { return e.attemptsOf(m.ID) == -1 && e.attemptsOf(m2.ID) == -1 })
	if n := copiesTo(mx, "good@example.com"); n != 1 {
		t.Fatalf("good@ got %d copies, want exactly 1", n)
	}
}

// TestReadFailureBacksOff: a message whose bytes cannot be read is not
// picked again at once (before, the runner retried it in a tight loop).
func TestReadFailureBacksOff(t *testing.T) {
	e := newEnv(t)
	var fs *faultySpool
	e.wrap = func(s *spool.Spool) Spool { fs = &faultySpool{Spool: s}; return fs }
	mx := e.sink("127.0.0.2", deliverytest.Behaviour{})
	e.start()
	fs.dataFails.Store(3)
	m := e.put("a@example.com")
	e.eventually("first read", func() bool { return fs.datas.Load() >= 1 })
	time.Sleep(300 * time.Millisecond)
	if n := fs.datas.Load(); n != 1 {
		t.Fatalf("%d reads in 300ms without the clock moving, want 1 (backoff)", n)
	}
	for i := 0; i < 40 && len(mx.Messages()) == 0; i++ {
		e.clock.Advance(5 * time.Second)
		time.Sleep(30 * time.Millisecond)
	}
	mx.Wait(t, 1, 5*time.Second)
	e.eventually("delivered and removed", func() bool { return e.attemptsOf(m.ID) == -1 })
	if n := fs.datas.Load(); n != 4 {
		t.Errorf("%d reads, want 3 failures and a success", n)
	}
}

// TestDiskFullNoDuplicates reproduces the full-disk storm: the spool on a
// small real file system, five messages each with one good and one 451
// recipient, the disk filled far below the reserve (new mail refused),
// then the MX comes up. Each good recipient must get exactly one copy
// and each message exactly one attempt until its retry is due: recording
// an outcome does not wait for the reserve.
func TestDiskFullNoDuplicates(t *testing.T) {
	small := testkit.Tmpfs(t, "48m")
	e := newEnv(t)
	e.sp.Close()
	e.dir = filepath.Join(small, "spool")
	e.minFree = 8 << 20
	e.openSpool()
	var ids []string
	for range 5 {
		ids = append(ids, e.put("good@example.com", "later@example.com").ID)
	}
	// Fill the file system until only 2 MiB are left, under half the
	// reserve: Puts and (before) envelope updates are refused.
	free := e.sp.Stats().DiskFree
	filler, err := os.Create(filepath.Join(small, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for left := free - 2<<20; left > 0; left -= int64(len(buf)) {
		if _, err := filler.Write(buf[:min(int64(len(buf)), left)]); err != nil {
			t.Fatal(err)
		}
	}
	filler.Close()
	t.Logf("disk filled: %d bytes free, reserve %d", e.sp.Stats().DiskFree, e.minFree)
	if err := e.sp.Put(context.Background(), &spool.Envelope{From: "x@example.edu", Recipients: []spool.Recipient{{Addr: "y@example.com"}},
		ReceivedAt: e.clock.Now(), NextAttempt: e.clock.Now().Add(time.Hour)}, []byte(body)); !errors.Is(err, spool.ErrFull) {
		t.Fatalf("Put on the full disk: %v, want ErrFull", err)
	}
	mx := e.sink("127.0.0.2", deliverytest.Behaviour{Rcpt: refuse("later", smtpErr(451, [3]int{4, 2, 1}, "try later"))})
	e.start()
	e.eventually("five copies", func() bool { return copiesTo(mx, "good@example.com") >= 5 })
	e.eventually("outcomes recorded", func() bool {
		for _, id := range ids {
			if e.attemptsOf(id) != 1 {
				return false
			}
		}
		return true
	})
	time.Sleep(300 * time.Millisecond)
	if n := copiesTo(mx, "good@example.com"); n != 5 {
		t.Fatalf("good@ got %d copies, want exactly 5 (one per message)", n)
	}
	if n := mx.Sessions(); n > 5 {
		t.Fatalf("%d sessions before any retry was due, want at most 5", n)
	}
	// The retry goes to the deferred recipient only.
	got, _ := e.sp.Get(ids[0])
	e.clock.Set(got.NextAttempt.Add(time.Minute))
	e.eventually("retries", func() bool {
		for _, id := range ids {
			if e.attemptsOf(id) != 2 {
				return false
			}
		}
		return true
	})
	if n := copiesTo(mx, "good@example.com"); n != 5 {
		t.Fatalf("good@ got %d copies after the retry, want 5", n)
	}
	if !strings.Contains(e.dump(), "later@example.com pending") {
		t.Errorf("spool: %s", e.dump())
	}
}
