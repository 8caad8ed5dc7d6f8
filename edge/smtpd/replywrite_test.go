package smtpd

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"testing"
)

// writeLog is a net.Conn that records each write and has nothing to read.
type writeLog struct {
	net.Conn
	mu     sync.Mutex
	writes []string
	closed bool
}

func (w *writeLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

func (w *writeLog) Read([]byte) (int, error) { return 0, net.ErrClosed }
func (w *writeLog) Close() error             { w.closed = true; return nil }

func TestMultilineReplyOneWrite(t *testing.T) {
	wl := &writeLog{}
	gc := &gatedConn{Conn: wl, release: func() {}}
	ehlo := []string{"250-edge.example.edu\r\n", "250-PIPELINING\r\n", "250-SIZE 65536\r\n", "250 DSN\r\n"}
	for _, l := range ehlo {
		if n, err := gc.Write([]byte(l)); n != len(l) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", l, n, err)
		}
	}
	if len(wl.writes) != 1 || wl.writes[0] != strings.Join(ehlo, "") {
		t.Fatalf("EHLO reply went out as %q, want one write of all its lines", wl.writes)
	}

	// Single-line replies, partial lines and TLS records are written at once.
	wl.writes = nil
	for _, w := range []string{"250 2.0.0 Ok\r\n", "250-partial line without its end", "\x17\x03\x03\x00\x05250-x\r\n", "550-a\r\n550-b\r\n"} {
		gc.Write([]byte(w))
	}
	if len(wl.writes) != 4 {
		t.Fatalf("writes %q, want each written at once", wl.writes)
	}

	// A held line is sent before the connection is read.
	wl.writes = nil
	gc.Write([]byte("250-held\r\n"))
	if len(wl.writes) != 0 {
		t.Fatalf("continuation line written at once: %q", wl.writes)
	}
	gc.Read(make([]byte, 10))
	if len(wl.writes) != 1 || wl.writes[0] != "250-held\r\n" {
		t.Fatalf("Read did not send the held line first: %q", wl.writes)
	}

	// closeAfterWrite closes after the whole reply, not after a held line.
	wl.writes = nil
	gc.end(nil)
	gc.Write([]byte("421-one\r\n"))
	if wl.closed {
		t.Fatal("closed with the reply still held")
	}
	gc.Write([]byte("421 4.7.0 two\r\n"))
	if !wl.closed || len(wl.writes) != 1 || !bytes.HasPrefix([]byte(wl.writes[0]), []byte("421-one\r\n421 ")) {
		t.Fatalf("closed %v after writes %q", wl.closed, wl.writes)
	}
}
