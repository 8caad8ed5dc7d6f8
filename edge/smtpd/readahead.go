package smtpd

import "sync"

// Read-ahead under DATA.
//
// go-smtp reads a connection through a 4 KiB bufio.Reader, so a message
// that has already arrived is still fetched from the kernel 4 KiB per
// read system call. While a message is read (DATA, not BDAT), gatedConn
// reads up to readAheadSize bytes per system call into a buffer of its own
// and hands them to go-smtp from there. Bytes read ahead are no different
// from bytes waiting in the kernel's socket buffer: whoever reads the
// connection next gets them in order, whether that is go-smtp's reader
// (the next command of a pipelining client) or, after STARTTLS, the TLS
// handshake, exactly as it would have read them from the kernel. go-smtp
// still parses every byte (the end of data, bare CR and LF, line limits).
// The buffer goes back to a pool as soon as it is drained, so an idle
// connection holds none.

// readAheadSize is the most one read system call fetches under DATA.
const readAheadSize = 32 << 10

var readAheadPool = sync.Pool{New: func() any { b := make([]byte, readAheadSize); return &b }}

// readAhead is the state of gatedConn's read-ahead. It is only touched by
// the goroutine that reads the connection (go-smtp's, which also runs
// Data for DATA); ahead is switched by Data on that same goroutine.
type readAhead struct {
	ahead  bool
	buf    *[]byte // from readAheadPool while rest holds bytes
	rest   []byte  // read ahead, not yet handed out
	resErr error   // the error that came with rest, returned once it is drained
}

// Read sends the reply lines Write holds, if any, then hands out what was
// read ahead before reading the connection again.
func (c *gatedConn) Read(p []byte) (int, error) {
	if err := c.flushPending(); err != nil {
		return 0, err
	}
	ra := &c.ra
	if len(ra.rest) > 0 {
		n := copy(p, ra.rest)
		ra.rest = ra.rest[n:]
		if len(ra.rest) == 0 {
			ra.release()
		}
		return n, nil
	}
	if err := ra.resErr; err != nil {
		ra.resErr = nil
		return 0, err
	}
	if !ra.ahead || len(p) >= readAheadSize {
		return c.Conn.Read(p)
	}
	if ra.buf == nil {
		ra.buf = readAheadPool.Get().(*[]byte)
	}
	n, err := c.Conn.Read(*ra.buf)
	m := copy(p, (*ra.buf)[:n])
	if m < n {
		ra.rest = (*ra.buf)[m:n]
		ra.resErr = err
		return m, nil
	}
	ra.release()
	return m, err
}

// setReadAhead switches the read-ahead on (Data, for DATA) or off (when
// Data returns; what was read ahead is still handed out first).
func (c *gatedConn) setReadAhead(on bool) {
	c.ra.ahead = on
	if !on && len(c.ra.rest) == 0 {
		c.ra.release()
	}
}

func (ra *readAhead) release() {
	if ra.buf != nil {
		readAheadPool.Put(ra.buf)
		ra.buf, ra.rest = nil, nil
	}
}
