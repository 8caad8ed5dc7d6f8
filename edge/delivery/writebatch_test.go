package delivery

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// dotEncoded is what textproto's DotWriter alone makes of data: the
// reference for the stuffing fast path.
func dotEncoded(t testing.TB, data []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	tw := textproto.NewWriter(bufio.NewWriter(&out))
	dw := tw.DotWriter()
	if _, err := dw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := dw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// fastEncoded is what writeData puts on the wire: writeStuffed into a
// batchConn, then the tail through a DotWriter over the same connection.
func fastEncoded(t testing.TB, data []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	rec := &recordConn{w: &out}
	bc := batched(rec, 0)
	tw := textproto.NewWriter(bufio.NewWriter(bc))
	dw := tw.DotWriter()
	if err := writeData(dw, bc, data); err != nil {
		t.Fatal(err)
	}
	if err := dw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bc.Flush(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// recordConn is a net.Conn that appends what is written to w and counts
// the writes.
type recordConn struct {
	net.Conn
	w      *bytes.Buffer
	writes int
}

func (r *recordConn) Write(p []byte) (int, error) { r.writes++; return r.w.Write(p) }

func stuffingCases() [][]byte {
	big := strings.Repeat("x", batchSize-3) + "\r\n" // a line ending just before a batch boundary
	cases := []string{
		"",
		"\r\n",
		".\r\n",
		"..\r\n",
		".",
		"a",
		"a\r\n",
		"a\r\n.\r\n",
		"a\r\n.\r\nb\r\n",
		".\r\n.\r\n.\r\n",
		"\r\n.\r\n",
		"\r\n\r\n",
		".a\r\n..b\r\n...c\r\n",
		"no final line end\r\n.x",
		"bare\nLF\r\n.dot\r\n",
		"bare\rCR\r\n.dot\r\n",
		"trailing CR\r",
		"trailing LF\n",
		"\r\r\n.\r\n",
		"\n.\n",
		big + ".dot at a batch boundary\r\n",
		big + big + "." + big + ".\r\n",
		strings.Repeat(".\r\n", 3*batchSize/3),
		strings.Repeat("line\r\n.", 40000) + "\r\n",
	}
	out := make([][]byte, len(cases))
	for i, c := range cases {
		out[i] = []byte(c)
	}
	return out
}

func TestStuffingMatchesDotWriter(t *testing.T) {
	for i, data := range stuffingCases() {
		want := dotEncoded(t, data)
		got := fastEncoded(t, data)
		if !bytes.Equal(got, want) {
			t.Errorf("case %d (%q...): stuffed differs from DotWriter:\n got %q\nwant %q", i, head(data), head(got), head(want))
		}
	}
}

func TestStuffable(t *testing.T) {
	for _, c := range []struct {
		in   string
		want bool
	}{
		{"", false}, {"\r\n", true}, {"a\r\nb\r\n", true}, {"a\r\nb", false},
		{"a\nb\r\n", false}, {"a\rb\r\n", false}, {"a\r\r\n", false}, {"a\r\n\n", false},
	} {
		if got := stuffable([]byte(c.in)); got != c.want {
			t.Errorf("stuffable(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

func FuzzStuffing(f *testing.F) {
	for _, c := range stuffingCases() {
		if len(c) < 4096 {
			f.Add(c)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if want, got := dotEncoded(t, data), fastEncoded(t, data); !bytes.Equal(got, want) {
			t.Fatalf("%q: got %q, want %q", data, got, want)
		}
	})
}

func head(b []byte) []byte {
	if len(b) > 60 {
		return b[:60]
	}
	return b
}

// strictPeer is a TCP SMTP server that answers a command only once it has
// read the command's whole line, and records each message exactly as it
// came over the wire (dot-stuffed, with the terminating ".\r\n"). A client
// that held back any byte of a command while waiting for its reply would
// never be answered: its read deadline ends the test with an error.
type strictPeer struct {
	ln   net.Listener
	mu   sync.Mutex
	msgs [][]byte
	cmds []string
	wg   sync.WaitGroup
	done chan struct{} // closed when the first connection ends
	once sync.Once
}

func startStrictPeer(t *testing.T) *strictPeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &strictPeer{ln: ln, done: make(chan struct{})}
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.serve(c)
				p.once.Do(func() { close(p.done) })
			}()
		}
	}()
	return p
}

func (p *strictPeer) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	reply := func(s string) bool { _, err := c.Write([]byte(s + "\r\n")); return err == nil }
	if !reply("220 strict ESMTP") {
		return
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil || !strings.HasSuffix(line, "\r\n") {
			return
		}
		if br.Buffered() > 0 {
			// The client does not pipeline: nothing may follow a command
			// before its reply.
			reply("554 pipelined input")
			return
		}
		cmd := strings.ToUpper(strings.TrimSuffix(line, "\r\n"))
		p.mu.Lock()
		p.cmds = append(p.cmds, cmd)
		p.mu.Unlock()
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			reply("250-strict\r\n250-8BITMIME\r\n250 SIZE 100000000")
		case strings.HasPrefix(cmd, "DATA"):
			reply("354 go ahead")
			var msg []byte
			for !bytes.HasSuffix(msg, []byte("\r\n.\r\n")) {
				b, err := br.ReadByte()
				if err != nil {
					return
				}
				msg = append(msg, b)
			}
			if br.Buffered() > 0 {
				reply("554 input after the final dot")
				return
			}
			p.mu.Lock()
			p.msgs = append(p.msgs, msg)
			p.mu.Unlock()
			reply("250 2.0.0 ok")
		case strings.HasPrefix(cmd, "QUIT"):
			reply("221 bye")
			return
		default:
			reply("250 ok")
		}
	}
}

// countConn counts the writes that reach the connection.
type countConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
}

func (c *countConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func TestBatchConnNeverHoldsACommand(t *testing.T) {
	p := startStrictPeer(t)
	nc, err := net.Dial("tcp", p.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cc := &countConn{Conn: nc}
	bw := batched(bounded(cc), 0)
	sc := smtp.NewClient(bw)
	sc.CommandTimeout = 10 * time.Second
	sc.SubmissionTimeout = 10 * time.Second
	defer sc.Close()
	if err := sc.Hello("edge.example.edu"); err != nil {
		t.Fatal(err)
	}
	msgs := stuffingCases()
	for i, data := range msgs {
		if err := sc.Mail("a@example.edu", nil); err != nil {
			t.Fatalf("message %d: MAIL: %v", i, err)
		}
		if err := sc.Rcpt("b@example.com", nil); err != nil {
			t.Fatalf("message %d: RCPT: %v", i, err)
		}
		cc.mu.Lock()
		before := cc.writes
		cc.mu.Unlock()
		w, err := sc.Data()
		if err != nil {
			t.Fatalf("message %d: DATA: %v", i, err)
		}
		if err := writeData(w, bw, data); err != nil {
			t.Fatalf("message %d: write: %v", i, err)
		}
		if _, err := w.CloseWithResponse(); err != nil {
			t.Fatalf("message %d: final reply: %v", i, err)
		}
		cc.mu.Lock()
		writes := cc.writes - before
		cc.mu.Unlock()
		// DATA is one write; the message and its dot one per batchSize
		// bytes (plus one for what a full batch leaves).
		wire := len(dotEncoded(t, data))
		if limit := 1 + 1 + wire/batchSize + 1; writes > limit {
			t.Errorf("message %d (%d bytes on the wire): %d writes, want at most %d", i, wire, writes, limit)
		}
		if n := bw.pending(); n != 0 {
			t.Errorf("message %d: %d bytes still pending after the reply", i, n)
		}
	}
	if err := sc.Quit(); err != nil {
		t.Fatal(err)
	}
	<-p.done // the peer returns after QUIT
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.msgs) != len(msgs) {
		t.Fatalf("peer got %d messages, want %d (commands: %q)", len(p.msgs), len(msgs), p.cmds)
	}
	for i, data := range msgs {
		if want := dotEncoded(t, data); !bytes.Equal(p.msgs[i], want) {
			t.Errorf("message %d on the wire: got %q..., want %q...", i, head(p.msgs[i]), head(want))
		}
	}
}

// failConn fails every write.
type failConn struct{ net.Conn }

var errBroken = errors.New("broken pipe")

func (failConn) Write([]byte) (int, error) { return 0, errBroken }
func (failConn) Read([]byte) (int, error)  { return 0, fmt.Errorf("read after a failed write") }

func TestBatchConnWriteErrorSurfacesAtRead(t *testing.T) {
	bc := batched(failConn{}, 0)
	if _, err := bc.Write([]byte("MAIL FROM:<a@example.edu>\r\n")); err != nil {
		t.Fatalf("buffered write failed: %v", err)
	}
	if _, err := bc.Read(make([]byte, 10)); !errors.Is(err, errBroken) {
		t.Fatalf("Read after a failed flush: %v, want the write error", err)
	}
	if _, err := bc.Write([]byte("x")); !errors.Is(err, errBroken) {
		t.Fatalf("Write after a failed flush: %v, want the write error", err)
	}
}

// discardConn is a connection that takes every write.
type discardConn struct {
	net.Conn
	writes int
}

func (d *discardConn) Write(p []byte) (int, error) { d.writes++; return len(p), nil }

// BenchmarkDataWrite writes a 10 KB message of 78-octet lines, some
// starting with a dot, the way go-smtp's DataCommand does (a DotWriter
// over textproto's 4 KiB bufio.Writer) straight to the connection, and
// through writeData over a batchConn; writes/op counts what reaches the
// connection.
func BenchmarkDataWrite(b *testing.B) {
	line := "012345678901234567890123456789012345678901234567890123456789012345678901234\r\n"
	var sb strings.Builder
	for i := 0; sb.Len() < 10<<10; i++ {
		if i%20 == 0 {
			sb.WriteString(".")
		}
		sb.WriteString(line)
	}
	data := []byte(sb.String())
	b.Run("dotwriter", func(b *testing.B) {
		dc := &discardConn{}
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			dw := textproto.NewWriter(bufio.NewWriter(dc)).DotWriter()
			dw.Write(data)
			dw.Close()
		}
		b.ReportMetric(float64(dc.writes)/float64(b.N), "writes/op")
	})
	b.Run("stuffed", func(b *testing.B) {
		dc := &discardConn{}
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			bc := batched(dc, 0)
			dw := textproto.NewWriter(bufio.NewWriter(bc)).DotWriter()
			writeData(dw, bc, data)
			dw.Close()
			bc.Flush()
		}
		b.ReportMetric(float64(dc.writes)/float64(b.N), "writes/op")
	})
}
