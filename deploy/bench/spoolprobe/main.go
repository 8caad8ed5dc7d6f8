// Command spoolprobe times the edge spool's durable writes the way the
// intake issues them and the way a leasing queue runner would, to show
// where the edge's end-to-end rate goes (see deploy/bench/README.md, "What
// limits the edge"). It opens a fresh spool in a temporary folder under -dir and
// prints, for each pattern, the rate and how many Badger commits carried
// how many writes:
//
//   - put: N messages spooled by 20 concurrent writers (the SMTP intake;
//     -writers changes the number);
//   - sequential lease: lease record + an Update moving the next attempt
//     per message, one after the other in one goroutine (what an earlier
//     queue runner's dispatch did before every delivery);
//   - sequential finish: lease-record delete + Delete, one goroutine;
//   - parallel lease: the same lease pair from 16 goroutines at once;
//   - steady: the same writers spool while 8 deliverers remove what was spooled
//     (the edge under a sustained load: Puts and lazy Deletes share
//     commits, memtables fill and flush, the value log is written).
//
// Each line also gives the process's CPU time (user+system) and the bytes
// it made the kernel write to disk (/proc/self/io write_bytes), per
// message: figures less noisy than the rate on a shared machine. Count
// syncs per message with strace -f -c -e trace=msync,fsync,fdatasync.
//
// Usage:
//
//	go run ./deploy/bench/spoolprobe [-n 1000] [-size 10700] [-dir /tmp] [-seq=false]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/postern/postern/edge/spool"
)

func main() {
	n := flag.Int("n", 1000, "messages")
	size := flag.Int("size", 10700, "message size in bytes")
	parent := flag.String("dir", os.TempDir(), "parent folder of the temporary spool")
	seq := flag.Bool("seq", true, "run the sequential patterns (the finish pattern waits for lazy removals: slow)")
	writers := flag.Int("writers", 20, "concurrent writers of the put and steady patterns")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "spoolprobe:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "spoolprobe:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	putWriters = *writers
	if err := run(*n, *size, *parent, *seq); err != nil {
		fmt.Fprintln(os.Stderr, "spoolprobe:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// putWriters is how many goroutines spool at once (-writers).
var putWriters = 20

func run(n, size int, parent string, seq bool) error {
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
	lastCPU, lastIO := cpuTime(), writeBytes()
	report := func(what string, count int, start time.Time) {
		el := time.Since(start)
		st := sp.Stats()
		c, w := cpuTime(), writeBytes()
		fmt.Printf("%-38s %5d in %8.3fs = %6.0f/s   commits=%d writes=%d   cpu=%.0fus/msg disk=%.0fB/msg\n",
			what, count, el.Seconds(), float64(count)/el.Seconds(), st.Commits-last.Commits, st.Writes-last.Writes,
			float64((c-lastCPU).Microseconds())/float64(count), float64(w-lastIO)/float64(count))
		last, lastCPU, lastIO = st, c, w
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
	if err := parallel(putWriters, n, func(i int) error {
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
	report(fmt.Sprintf("put, %d writers", putWriters), n, start)

	if seq {
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
	}

	start = time.Now()
	rest := ids[half:]
	if err := parallel(16, len(rest), func(i int) error { return lease(rest[i]) }); err != nil {
		return err
	}
	report("16 parallel lease record + Lease", len(rest), start)

	start = time.Now()
	if err := steady(sp, n, body); err != nil {
		return err
	}
	report(fmt.Sprintf("steady: %d writers, 8 deliverers", putWriters), n, start)
	return nil
}

// steady spools n messages from putWriters writers while 8 deliverers Delete each
// one after it is spooled, as the edge does under a sustained load.
func steady(sp *spool.Spool, n int, body []byte) error {
	spooled := make(chan string, n)
	done := make(chan error, 1)
	go func() {
		done <- parallel(8, n, func(int) error {
			id := <-spooled
			if err := sp.Delete(id); err != nil {
				return fmt.Errorf("steady delete %s: %w", id, err)
			}
			return nil
		})
	}()
	err := parallel(putWriters, n, func(int) error {
		env := &spool.Envelope{From: "sender@example.edu", Recipients: []spool.Recipient{{Addr: "rcpt@example.edu"}},
			ReceivedAt: time.Now(), NextAttempt: time.Now()}
		if err := sp.Put(context.Background(), env, body); err != nil {
			return fmt.Errorf("steady put: %w", err)
		}
		spooled <- env.ID
		return nil
	})
	if err != nil {
		return err
	}
	return <-done
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// writeBytes is the bytes this process caused to be written to storage
// (/proc/self/io write_bytes; 0 where that is not available).
func writeBytes() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
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
