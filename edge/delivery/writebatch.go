package delivery

import (
	"bytes"
	"io"
	"net"
	"sync"
	"time"
)

// Write coalescing.
//
// go-smtp's client writes through net/textproto, whose 4 KiB bufio.Writer
// turns one message into a write system call per 4 KiB, plus one per
// command. SMTP without pipelining is strictly request and response: the
// client writes, then waits for a reply. batchConn exploits that: it keeps
// what the client writes in a buffer and sends it when the client next
// reads (everything written must be on the wire before the client waits
// for a reply, so every Read flushes first) or when the buffer is full.
// A command is still one write; a message and its terminating dot become
// one write per batchSize bytes instead of one per 4 KiB.
//
// batchConn sits directly under the go-smtp client, above boundedConn and
// above crypto/tls when the connection did STARTTLS: the TLS layer then
// gets one large write instead of several small ones (fewer, fuller
// records). The STARTTLS command itself is written and its reply read on
// the raw connection by startTLS, after the EHLO reply was read through
// the plaintext batchConn, which left it empty.
//
// Close does not flush: what is still buffered then is a command whose
// reply nobody waits for, and a flush could block a Close that is meant
// to unblock a stuck connection (the context's AfterFunc).

// batchSize is the most a batchConn holds before it writes.
const batchSize = 64 << 10

// batchConn buffers writes until the next Read or until batchSize bytes
// are pending. The SMTP client uses it from one goroutine at a time (a
// cached connection passes from one Deliver to the next through the
// cache); mu keeps the buffer consistent should that ever change. The
// context's AfterFunc closes the connection under it, never the buffer.
type batchConn struct {
	net.Conn
	mu  sync.Mutex
	pb  *[]byte // from batchPool while buf is in use
	buf []byte
	err error // the first failed write; every later call returns it
	// stall bounds each write to the connection (0: no deadline of ours).
	stall time.Duration
}

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, batchSize); return &b }}

// batched wraps c. With stall > 0 every write to the connection must
// complete within stall (a write deadline set before it), so a server
// that stops reading while the message is sent ends the attempt after
// stall, not only at the attempt's own timeout. go-smtp sets deadlines
// around each command and its reply, but none while the message body is
// written, and every write of the client goes through this wrapper, so
// this deadline is the one that counts for writes. RFC 5321 4.5.3.2
// suggests 3 minutes for a data block.
func batched(c net.Conn, stall time.Duration) *batchConn {
	return &batchConn{Conn: c, stall: stall}
}

// Write buffers p, writing out what is pending first when p does not fit.
// A p of at least batchSize bytes goes straight to the connection after
// the pending bytes.
func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if len(b.buf)+len(p) > batchSize {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) >= batchSize {
			b.deadline()
			n, err := b.Conn.Write(p)
			if err != nil {
				b.err = err
			}
			return n, err
		}
	}
	if b.pb == nil {
		b.pb = batchPool.Get().(*[]byte)
		b.buf = (*b.pb)[:0]
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// Read sends what is pending, then reads.
func (b *batchConn) Read(p []byte) (int, error) {
	if err := b.Flush(); err != nil {
		return 0, err
	}
	return b.Conn.Read(p)
}

// Flush writes out what is pending. The buffer goes back to the pool:
// an idle connection in the cache holds none.
func (b *batchConn) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

func (b *batchConn) flushLocked() error {
	if b.err != nil {
		return b.err
	}
	if b.pb == nil {
		return nil
	}
	var err error
	if len(b.buf) > 0 {
		b.deadline()
		_, err = b.Conn.Write(b.buf)
	}
	*b.pb = b.buf[:0]
	batchPool.Put(b.pb)
	b.pb, b.buf = nil, nil
	if err != nil {
		b.err = err
	}
	return err
}

// deadline gives the next write to the connection stall to complete.
func (b *batchConn) deadline() {
	if b.stall > 0 {
		_ = b.Conn.SetWriteDeadline(time.Now().Add(b.stall))
	}
}

// pending reports how many bytes wait for the next flush (tests).
func (b *batchConn) pending() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.buf)
}

// Dot-stuffing.
//
// textproto's DotWriter, the only way go-smtp's DataCommand writes a
// message, handles one byte per call into a bufio.Writer. A spooled
// message whose line ends are all CRLF (intake refuses bare CR and bare
// LF, RFC 5321 §2.3.8) needs nothing but a dot before every line that
// starts with one: writeStuffed writes such a message, but for its final
// CRLF, straight to the batchConn under the client, a run of lines at a
// time. The final CRLF then goes through the DataCommand, whose
// DotWriter starts at the beginning of a line (nothing to stuff in
// "\r\n"), ends at the beginning of a line, and so closes with exactly
// ".\r\n". The wire bytes are the same as with the DotWriter alone; a
// message that is not CRLF-clean takes the DotWriter path, which also
// turns a bare LF into CRLF.
//
// Ordering: go-smtp flushes its bufio.Writer after the DATA command, and
// the DotWriter holds nothing before its first Write, so the bytes
// written here come before the DotWriter's on the wire.

var (
	crlf    = []byte("\r\n")
	lfDot   = []byte("\n.")
	justDot = []byte(".")
)

// stuffable reports whether data can take writeStuffed: it ends with
// CRLF and every CR and every LF in it is part of a CRLF pair.
func stuffable(data []byte) bool {
	if !bytes.HasSuffix(data, crlf) {
		return false
	}
	lf := bytes.Count(data, crlf[1:])
	return bytes.Count(data, crlf[:1]) == lf && bytes.Count(data, crlf) == lf
}

// writeStuffed writes data but for its final CRLF to w with a dot before
// every line starting with one, and returns that final CRLF, which the
// caller writes through the DotWriter. data must be stuffable.
func writeStuffed(w io.Writer, data []byte) (tail []byte, err error) {
	body := data[:len(data)-2]
	if len(body) > 0 && body[0] == '.' {
		if _, err := w.Write(justDot); err != nil {
			return nil, err
		}
	}
	for {
		i := bytes.Index(body, lfDot)
		if i < 0 {
			break
		}
		// body[:i+2] ends with the line's dot; the extra one follows.
		if _, err := w.Write(body[:i+2]); err != nil {
			return nil, err
		}
		if _, err := w.Write(justDot); err != nil {
			return nil, err
		}
		body = body[i+2:]
	}
	if len(body) > 0 {
		if _, err := w.Write(body); err != nil {
			return nil, err
		}
	}
	return data[len(data)-2:], nil
}
