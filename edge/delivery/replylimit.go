package delivery

import (
	"bytes"
	"errors"
	"net"
	"sync/atomic"

	"github.com/postern/postern/shared/oneline"
)

// Bounds on what a remote server can make the client read and keep.
//
// go-smtp reads replies with net/textproto, which collects a reply's
// lines (and a line's bytes) without limit: a hostile or broken server
// answering with endless continuation lines would grow the edge's memory
// and, through the stored reply, every NDR, history entry, suspension
// reason and event built from it. The connection the SMTP client reads
// from is therefore bounded: between two writes of the client (one
// command and its reply, or the greeting) at most MaxReplyBytes bytes and
// MaxReplyLines lines are read; past that the read fails, which ends the
// connection as a temporary failure. The text that is kept is cut to
// MaxReplyText.
const (
	// MaxReplyBytes bounds one reply (all of its lines), in bytes.
	MaxReplyBytes = 16 << 10
	// MaxReplyLines bounds the lines of one reply.
	MaxReplyLines = 256
	// MaxReplyText bounds the reply text kept per recipient and in
	// summaries (bytes, on one line).
	MaxReplyText = 1024
)

// errReplyTooLong ends a connection whose server sent more than a reply
// may hold.
var errReplyTooLong = errors.New("reply from the server exceeds 16 KiB or 256 lines")

// boundedConn counts what is read since the client last wrote.
type boundedConn struct {
	net.Conn
	read  atomic.Int64
	lines atomic.Int64
}

func bounded(c net.Conn) *boundedConn { return &boundedConn{Conn: c} }

func (b *boundedConn) Write(p []byte) (int, error) {
	b.read.Store(0)
	b.lines.Store(0)
	return b.Conn.Write(p)
}

func (b *boundedConn) Read(p []byte) (int, error) {
	left := MaxReplyBytes - b.read.Load()
	if left <= 0 || b.lines.Load() > MaxReplyLines {
		return 0, errReplyTooLong
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := b.Conn.Read(p)
	b.read.Add(int64(n))
	if b.lines.Add(int64(bytes.Count(p[:n], []byte{'\n'}))) > MaxReplyLines && err == nil {
		err = errReplyTooLong
	}
	return n, err
}

// ReplyText returns s on one line, cut to at most MaxReplyText bytes on a
// character boundary ("..." marks the cut).
func ReplyText(s string) string {
	s = oneline.Fold(s)
	if len(s) <= MaxReplyText {
		return s
	}
	cut := MaxReplyText - 3
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "..."
}
