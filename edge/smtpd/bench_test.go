package smtpd

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/edge/config"
	"github.com/postern/postern/shared/testkit"
)

// BenchmarkIntakeMemory sends 20 maximum-size (25 MiB) messages at once,
// from 20 clients, to an intake with a real spool, and reports the
// process's peak resident set (VmHWM, reset at the start of each run) and
// the most message memory reserved at once. A client refused with 452
// 4.3.1 retries, as an MTA would, until every message is stored. With the
// default budget (256 MiB) the reservations never pass the budget; with a
// budget big enough for all 20 the peak shows what the budget saves. The
// memory_limit variants set the Go runtime's soft limit as the edge does
// at start (memory_limit, default budget + 128 MiB).
//
// The peak resident set is the process's highest, so run each variant in
// a process of its own:
//
//	go test -run '^$' -bench 'IntakeMemory/budget=256MiB,memory_limit$' -benchtime 1x ./edge/smtpd/
func BenchmarkIntakeMemory(b *testing.B) {
	for _, bc := range []struct {
		name   string
		budget int64
		limit  bool
	}{
		{"budget=128MiB", 128 << 20, false},
		{"budget=256MiB", 256 << 20, false},
		{"budget=256MiB,memory_limit", 256 << 20, true}, // the defaults
		{"budget=unbounded", 2 << 30, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if bc.limit {
				limit := config.DefaultMemoryLimit(bc.budget)
				old := debug.SetMemoryLimit(limit)
				defer debug.SetMemoryLimit(old)
				b.ReportMetric(float64(limit)/(1<<20), "memory-limit-MiB")
			}
			benchIntake(b, bc.budget)
		})
	}
}

func benchIntake(b *testing.B, budget int64) {
	const (
		clients = 20
		size    = 25 << 20
	)
	e := startEdge(b, edgeOpts{cfg: func(c *configT) {
		relaxed(c)
		c.SMTP.MaxMessageSize = size + 64<<10
		c.SMTP.MaxInflightBytes = budget
		c.SMTP.DataTimeout = 5 * time.Minute
		c.SMTP.CommandTimeout = 5 * time.Minute
	}})
	// The clients write the message from one 64 KiB block of lines, so
	// the figure is the intake's memory, not the clients'.
	p := benchPayload{
		head:  "From: scanner@example.edu\r\nSubject: bench\r\n\r\n",
		block: strings.Repeat(strings.Repeat("0123456789abcdef", 4)+"\r\n", 993), // 66 octets a line
	}
	p.blocks = (size - 100) / len(p.block)
	bodyLen := len(p.head) + p.blocks*len(p.block)
	b.SetBytes(int64(clients * bodyLen))
	b.ResetTimer()
	for range b.N {
		resetPeakRSS()
		var wg sync.WaitGroup
		var mu sync.Mutex
		retries := 0
		errs := make(chan error, clients)
		stop := make(chan struct{})
		var maxAnon, maxFile, maxHeap int64
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				maxAnon, maxFile = max(maxAnon, testkit.ProcStatusKiB(0, "RssAnon")<<10), max(maxFile, testkit.ProcStatusKiB(0, "RssFile")<<10)
				maxHeap = max(maxHeap, int64(ms.HeapInuse))
			}
		}()
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					r, err := benchSend(e.addr, 40+i, bodyLen, &p)
					if err != nil {
						errs <- err
						return
					}
					if strings.HasPrefix(r, "250") {
						return
					}
					if !strings.HasPrefix(r, "452 4.3.1") {
						errs <- fmt.Errorf("client %d: %q", i, r)
						return
					}
					mu.Lock()
					retries++
					mu.Unlock()
					time.Sleep(200 * time.Millisecond)
				}
			}()
		}
		wg.Wait()
		close(stop)
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		b.ReportMetric(float64(peakRSS())/(1<<20), "peak-rss-MiB")
		b.ReportMetric(float64(e.srv.budget.maxUse())/(1<<20), "peak-reserved-MiB")
		b.ReportMetric(float64(retries), "452-retries")
		b.ReportMetric(float64(maxAnon)/(1<<20), "max-anon-MiB")
		b.ReportMetric(float64(maxFile)/(1<<20), "max-file-MiB")
		b.ReportMetric(float64(maxHeap)/(1<<20), "max-heap-MiB")
	}
}

// benchSend delivers one message from 127.0.0.<src> and returns the final
// reply (or the refusal).
func benchSend(addr string, src, size int, payload *benchPayload) (string, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(src))}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Minute))
	r := bufio.NewReader(conn)
	read := func() string {
		var last string
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return "EOF"
			}
			last = l
			if len(l) < 4 || l[3] != '-' {
				return strings.TrimRight(last, "\r\n")
			}
		}
	}
	cmd := func(s string) string {
		fmt.Fprintf(conn, "%s\r\n", s)
		return read()
	}
	read()
	cmd("EHLO bench.example.edu")
	if rep := cmd(fmt.Sprintf("MAIL FROM:<a@example.edu> SIZE=%d", size)); !strings.HasPrefix(rep, "250") {
		return rep, nil
	}
	if rep := cmd("RCPT TO:<x@example.edu>"); !strings.HasPrefix(rep, "250") {
		return rep, nil
	}
	if rep := cmd("DATA"); !strings.HasPrefix(rep, "354") {
		return rep, nil
	}
	if err := payload.write(conn); err != nil {
		return "", err
	}
	rep := read()
	cmd("QUIT")
	return rep, nil
}

// benchPayload is a message of a header and blocks copies of block,
// written with its terminating dot.
type benchPayload struct {
	head, block string
	blocks      int
}

func (p *benchPayload) write(w io.Writer) error {
	if _, err := io.WriteString(w, p.head); err != nil {
		return err
	}
	for range p.blocks {
		if _, err := io.WriteString(w, p.block); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, ".\r\n")
	return err
}

// peakRSS returns VmHWM of this process in bytes (negative if unknown).
func peakRSS() int64 { return testkit.ProcStatusKiB(0, "VmHWM") << 10 }

// resetPeakRSS resets VmHWM to the current resident set (Linux: writing
// 5 to clear_refs).
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }
