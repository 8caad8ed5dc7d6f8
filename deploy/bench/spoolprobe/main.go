// Command spoolprobe times the edge spool's durable writes the way the
// intake issues them and the way a leasing queue runner would, to show
// where the edge's end-to-end rate goes (see deploy/bench/README.md, "What
// limits the edge"). It opens a fresh spool in a temporary folder under -dir and
// prints, for each pattern, the rate and how many Badger commits carried
// how many writes:
//
//   - put: N messages spooled by 20 concurrent writers (the SMTP intake);
//   - sequential lease: lease record + an Update moving the next attempt
//     per message, one after the other in one goroutine (what an earlier
//     queue runner's dispatch did before every delivery);
//   - sequential finish: lease-record delete + Delete, one goroutine;
//   - parallel lease: the same lease pair from 16 goroutines at once.
//
// Usage:
//
//	go run ./deploy/bench/spoolprobe [-n 1000] [-size 10700] [-dir /tmp]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/postern/postern/edge/spool"
)

func main() {
	n := flag.Int("n", 1000, "messages")
	size := flag.Int("size", 10700, "message size in bytes")
	parent := flag.String("dir", os.TempDir(), "parent folder of the temporary spool")
	flag.Parse()
	if err := run(*n, *size, *parent); err != nil {
		fmt.Fprintln(os.Stderr, "spoolprobe:", err)
		os.Exit(1)
	}
}

func run(n, size int, parent string) error {
	dir, err := os.MkdirTemp(parent, "spoolprobe")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	sp, err := spool.Open(spool.Options{Dir: dir, ValueLogFileSize: 64 << 20, GCInterval: time.Hour})
	if err != nil {
		return fmt.Errorf("open spool: %w", err)
	}
	defer sp.Close()
	leases := sp.KV("lease/")
	body := make([]byte, size)
	ids := make([]string, n)
	half := n / 2

	last := sp.Stats()
	report := func(what string, count int, start time.Time) {
		el := time.Since(start)
		st := sp.Stats()
		fmt.Printf("%-38s %5d in %8.3fs = %6.0f/s   commits=%d writes=%d\n", what, count, el.Seconds(),
			float64(count)/el.Seconds(), st.Commits-last.Commits, st.Writes-last.Writes)
		last = st
	}
	lease := func(id string) error {
		until := time.Now().Add(time.Hour)
		if err := leases.Set(id, []byte(until.Format(time.RFC3339Nano))); err != nil {
			return fmt.Errorf("lease record %s: %w", id, err)
		}
		env, err := sp.Get(id)
		if err != nil {
			return fmt.Errorf("lease %s: %w", id, err)
		}
		env.NextAttempt = until
		if err := sp.Update(env); err != nil {
			return fmt.Errorf("lease %s: %w", id, err)
		}
		return nil
	}

	start := time.Now()
	if err := parallel(20, n, func(i int) error {
		env := &spool.Envelope{From: "sender@example.edu", Recipients: []spool.Recipient{{Addr: "rcpt@example.edu"}},
			ReceivedAt: time.Now(), NextAttempt: time.Now()}
		if err := sp.Put(context.Background(), env, body); err != nil {
			return fmt.Errorf("put: %w", err)
		}
		ids[i] = env.ID
		return nil
	}); err != nil {
		return err
	}
	report("put, 20 writers", n, start)

	start = time.Now()
	for _, id := range ids[:half] {
		if err := lease(id); err != nil {
			return err
		}
	}
	report("sequential lease record + Lease", half, start)

	start = time.Now()
	for _, id := range ids[:half] {
		if err := leases.Delete(id); err != nil {
			return fmt.Errorf("drop lease %s: %w", id, err)
		}
		if err := sp.Delete(id); err != nil {
			return fmt.Errorf("delete %s: %w", id, err)
		}
	}
	report("sequential lease delete + Delete", half, start)

	start = time.Now()
	rest := ids[half:]
	if err := parallel(16, len(rest), func(i int) error { return lease(rest[i]) }); err != nil {
		return err
	}
	report("16 parallel lease record + Lease", len(rest), start)
	return nil
}

// parallel runs fn(0..count-1) on workers goroutines and returns the first
// error.
func parallel(workers, count int, fn func(i int) error) error {
	jobs := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if err := fn(i); err != nil {
					errs <- err
					for range jobs { // drain so the feeder does not block
					}
					return
				}
			}
		}()
	}
	for i := range count {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(errs)
	return <-errs
}
