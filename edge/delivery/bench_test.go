package delivery

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// fastSink is a minimal SMTP server for benchmarks: it answers every
// command at once and reads a message a line at a time, so that what a
// benchmark measures is mostly the client.
func fastSink(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReaderSize(c, 64<<10)
				c.Write([]byte("220 sink ESMTP\r\n"))
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						return
					}
					cmd := strings.ToUpper(string(bytes.TrimSpace(line)))
					switch {
					case strings.HasPrefix(cmd, "EHLO"):
						c.Write([]byte("250-sink\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n"))
					case cmd == "DATA":
						c.Write([]byte("354 go ahead\r\n"))
						for {
							l, err := br.ReadSlice('\n')
							if err != nil {
								return
							}
							if string(l) == ".\r\n" {
								break
							}
						}
						c.Write([]byte("250 2.0.0 ok\r\n"))
					case cmd == "QUIT":
						c.Write([]byte("221 bye\r\n"))
						return
					default:
						c.Write([]byte("250 ok\r\n"))
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// BenchmarkDeliver delivers a 10 KB message (78-octet lines, some
// starting with a dot) to a loopback smarthost over reused connections,
// the edge's steady state.
func BenchmarkDeliver(b *testing.B) {
	addr := fastSink(b)
	c, err := New(Options{Hostname: "edge.example.edu", Smarthost: addr, ConnectTimeout: time.Second, CommandTimeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var sb strings.Builder
	sb.WriteString("From: scanner@example.edu\r\nTo: a@example.com\r\nSubject: scan\r\n\r\n")
	for i := 0; sb.Len() < 10<<10; i++ {
		if i%20 == 0 {
			sb.WriteString(".")
		}
		sb.WriteString("012345678901234567890123456789012345678901234567890123456789012345678901234\r\n")
	}
	j := &Job{QueueID: "Q1", From: "scanner@example.edu", Domain: "example.com", Rcpts: []Rcpt{{Addr: "a@example.com"}}, Data: []byte(sb.String())}
	ctx := context.Background()
	b.SetBytes(int64(len(j.Data)))
	b.ReportAllocs()
	start := cpuTime(b)
	for b.Loop() {
		out := c.Deliver(ctx, j)
		if out.Results[0].Status != Delivered {
			b.Fatalf("not delivered: %+v", out)
		}
	}
	// CPU time of the process (client and sink) per message: less noisy
	// than wall time on a shared machine.
	b.ReportMetric(float64((cpuTime(b)-start).Microseconds())/float64(b.N), "cpu-µs/op")
}
