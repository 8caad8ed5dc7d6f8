package broker

import (
	"net"
	"sync"
	"time"
)

// bufferedPipe returns the two ends of an in-process connection like
// net.Pipe, except that what the server end writes is buffered without
// bound until the client end reads it. With net.Pipe both directions are
// synchronous, and central's client and the broker can block each other
// for good: the broker writing deliveries to central while central's
// client, busy writing an acknowledgement or a publish, cannot read them,
// and the broker's reader waiting on its own write lock to acknowledge
// that publish. The broker bounds what it queues for a client
// (MaximumClientWritesPending), so the buffer is bounded too.
func bufferedPipe() (client, server net.Conn) {
	toPumpW, toPumpR := net.Pipe()     // broker -> pump
	toClientW, toClientR := net.Pipe() // pump -> central
	toServerW, toServerR := net.Pipe() // central -> broker
	p := &pump{in: toPumpR, out: toClientW}
	p.cond = sync.NewCond(&p.mu)
	go p.read()
	go p.write()
	all := []net.Conn{toPumpW, toPumpR, toClientW, toClientR, toServerW, toServerR}
	closeAll := func() error {
		for _, c := range all {
			c.Close()
		}
		return nil
	}
	client = &splitConn{r: toClientR, w: toServerW, close: closeAll}
	server = &splitConn{r: toServerR, w: toPumpW, close: closeAll}
	return client, server
}

// splitConn reads from one pipe and writes to another.
type splitConn struct {
	r, w  net.Conn
	once  sync.Once
	close func() error
}

func (c *splitConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *splitConn) Write(b []byte) (int, error) { return c.w.Write(b) }
func (c *splitConn) Close() error {
	c.once.Do(func() { _ = c.close() })
	return nil
}
func (c *splitConn) LocalAddr() net.Addr                { return c.r.LocalAddr() }
func (c *splitConn) RemoteAddr() net.Addr               { return c.r.RemoteAddr() }
func (c *splitConn) SetDeadline(t time.Time) error      { c.r.SetDeadline(t); return c.w.SetDeadline(t) }
func (c *splitConn) SetReadDeadline(t time.Time) error  { return c.r.SetReadDeadline(t) }
func (c *splitConn) SetWriteDeadline(t time.Time) error { return c.w.SetWriteDeadline(t) }

// pump moves bytes from in to out through an unbounded buffer.
type pump struct {
	in, out net.Conn
	mu      sync.Mutex
	cond    *sync.Cond
	buf     [][]byte
	closed  bool
}

func (p *pump) read() {
	for {
		b := make([]byte, 32<<10)
		n, err := p.in.Read(b)
		p.mu.Lock()
		if n > 0 {
			p.buf = append(p.buf, b[:n])
		}
		if err != nil {
			p.closed = true
		}
		p.cond.Signal()
		p.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (p *pump) write() {
	for {
		p.mu.Lock()
		for len(p.buf) == 0 && !p.closed {
			p.cond.Wait()
		}
		if len(p.buf) == 0 {
			p.mu.Unlock()
			p.out.Close()
			return
		}
		b := p.buf[0]
		p.buf[0] = nil
		p.buf = p.buf[1:]
		p.mu.Unlock()
		if _, err := p.out.Write(b); err != nil {
			p.in.Close()
			return
		}
	}
}
