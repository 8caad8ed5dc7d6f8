package smtpd

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/postern/postern/edge/policy"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/tlsinfo"
)

type backend struct{ s *Server }

// NewSession is called by go-smtp at HELO/EHLO (again after STARTTLS).
func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	s := b.s
	gc := underlying(c.Conn())
	if gc == nil {
		return nil, errors.New("smtpd: connection not from a gated listener")
	}
	sess := &session{
		srv:  s,
		conn: c,
		nc:   c.Conn(),
		gc:   gc,
		ip:   gc.ip,
		helo: c.Hostname(),
	}
	if st, ok := c.TLSConnectionState(); ok {
		sess.tls = &st
	}
	sess.log = s.log.With("client_ip", gc.ip.String())
	return sess, nil
}

type session struct {
	srv  *Server
	conn *smtp.Conn
	// nc is the connection as this session writes to it (TLS or not); it
	// is taken once here because go-smtp replaces the connection's
	// net.Conn at STARTTLS without a lock that a BDAT goroutine could use.
	nc    net.Conn
	gc    *gatedConn
	ip    netip.Addr
	helo  string
	tls   *tls.ConnectionState
	log   *slog.Logger // with client_ip (and client_name once known)
	named bool

	txn *policy.Txn

	// mu guards the open transaction (env, mlog, utf8, and committing or
	// aborting txn) against Data running in its own goroutine: under
	// BDAT, go-smtp calls Data from a goroutine that can outlive the
	// transaction (RSET while a chunked message is open), concurrently
	// with Reset, Mail and Rcpt on the connection's goroutine.
	mu   sync.Mutex
	env  *spool.Envelope
	mlog *slog.Logger // log with queue_id for the open transaction
	utf8 bool
	size int64 // SIZE declared at MAIL (0: none)
	// received is set when the open transaction's message was read to
	// its end (DATA, or BDAT LAST), whatever the outcome.
	received bool
	// storing is set while the message is being written to the spool.
	storing bool
}

// toSMTP converts a policy reply into go-smtp's error type.
func toSMTP(r *policy.Reply) *smtp.SMTPError {
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: r.Enhanced.SMTP(), Message: r.Text}
}

// refuse logs and reports r, counts it against the session's error limit
// and returns the error go-smtp writes as the reply. The reply that
// reaches smtp.max_errors is replaced by 421 and the connection is closed
// once it has been written.
func (s *session) refuse(log *slog.Logger, stage, arg string, r *policy.Reply) error {
	device := ""
	if s.txn != nil && s.txn.Registered {
		device = s.txn.Device.Name
	}
	s.srv.countRefused(r)
	log.Info("refused", "stage", stage, "arg", arg, "reply", r.Error())
	s.srv.report.refusal(device, s.ip.String(), r)
	st := &s.gc.state
	st.mu.Lock()
	st.errors++
	n := st.errors
	st.mu.Unlock()
	if r.Code == 421 {
		s.gc.closeAfterWrite.Store(true)
		return toSMTP(r)
	}
	if n >= s.srv.opts.SMTP.MaxErrors {
		s.gc.closeAfterWrite.Store(true)
		log.Warn("too many errors, closing connection", "errors", n)
		return toSMTP(policy.TooManyErrors())
	}
	return toSMTP(r)
}

// identity runs FCrDNS once per connection.
func (s *session) identity() policy.Identity {
	st := &s.gc.state
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.identified {
		ctx, cancel := context.WithTimeout(s.srv.ctx, s.srv.opts.SMTP.CommandTimeout)
		st.identity = s.srv.opts.DNS.Identify(ctx, s.ip)
		cancel()
		// A temporary failure is retried on the next transaction.
		st.identified = !st.identity.TempFail
	}
	if st.identity.Name != "" && !s.named {
		s.log = s.log.With("client_name", st.identity.Name)
		s.named = true
	}
	return st.identity
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if r := s.gc.endReply(); r != nil {
		return toSMTP(r)
	}
	if s.gc.closeAfterWrite.Load() {
		return toSMTP(policy.TooManyErrors())
	}
	s.abort()
	if time.Now().After(s.gc.sessionEnd) { // real time, like the network deadline
		s.gc.end(policy.SessionTooLong())
		return s.refuse(s.log, "MAIL", from, policy.SessionTooLong())
	}
	if n := s.transactions(); n >= s.srv.opts.SMTP.MaxTransactions {
		r := policy.TooManyTransactions(s.srv.opts.SMTP.MaxTransactions)
		s.gc.end(r)
		return s.refuse(s.log, "MAIL", from, r)
	}
	if s.spoolFull() {
		return s.refuse(s.log, "MAIL", from, policy.SpoolFull())
	}
	if opts != nil && len(opts.EnvelopeID) > maxENVID {
		return s.refuse(s.log, "MAIL", from, policy.DSNParamTooLong("ENVID", maxENVID))
	}
	if opts != nil && opts.RequireTLS && s.tls == nil {
		return s.refuse(s.log, "MAIL", from, requireTLSWithoutTLS())
	}
	var size int64
	if opts != nil && opts.Size > 0 {
		size = opts.Size
		// Refuse early what could not be reserved now; Data reserves.
		if !s.srv.budget.fits(s.reservation(size)) {
			return s.refuse(s.log, "MAIL", from, policy.InflightFull())
		}
	}
	id := s.identity()
	if s.txn == nil {
		s.txn = policy.NewTxn(s.ip, id)
	}
	s.txn.Identity = id
	qid := s.srv.opts.Spool.NewID()
	log := s.log.With("queue_id", qid)
	ctx, cancel := context.WithTimeout(s.srv.ctx, s.srv.opts.SMTP.CommandTimeout)
	defer cancel()
	check := func(domain string) policy.DomainStatus { return s.srv.opts.DNS.MailDomain(ctx, domain) }
	if r := s.srv.pol.Mail(s.txn, from, check); r != nil {
		if s.txn.Registered {
			log = log.With("device", s.txn.Device.Name)
		}
		if r.Code == 450 {
			s.srv.report.rateLimit(s.txn.Device.Name, s.ip.String(), from, r)
		}
		return s.refuse(log, "MAIL", from, r)
	}
	s.countTransaction()
	// The envelope names the device only for the device's own
	// transactions (a registered sender): NDRs of any other can never
	// count against the device.
	device := ""
	if s.txn.Registered && s.txn.Own {
		device = s.txn.Device.Name
	}
	now := s.srv.clock()
	env := &spool.Envelope{
		ID:          qid,
		From:        s.txn.Sender,
		ClientIP:    s.ip.String(),
		ClientName:  id.Name,
		Device:      device,
		Helo:        s.helo,
		ReceivedAt:  now,
		NextAttempt: now,
	}
	utf8 := false
	if opts != nil {
		env.DSNRet = string(opts.Return)
		env.DSNEnvID = opts.EnvelopeID
		env.RequireTLS = opts.RequireTLS
		utf8 = opts.UTF8
	}
	if s.tls != nil {
		env.TLS = tlsinfo.Describe(s.tls)
		s.noteTLS(device)
	}
	mlog := log.With("device", device)
	if s.txn.Registered && !s.txn.Own {
		mlog = mlog.With("client_device", s.txn.Device.Name)
	}
	s.mu.Lock()
	s.env, s.utf8, s.mlog, s.size, s.received, s.storing = env, utf8, mlog, size, false, false
	s.mu.Unlock()
	// Debug only: the "accepted" line sums the transaction up at info.
	s.mlog.Debug("mail from", "from", s.txn.Sender)
	return nil
}

func (s *session) transactions() int {
	st := &s.gc.state
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.transactions
}

func (s *session) countTransaction() {
	st := &s.gc.state
	st.mu.Lock()
	st.transactions++
	st.mu.Unlock()
}

// headerReserve is the room reserved for the Received header the edge
// adds in front of the message.
const headerReserve = 1 << 10

// undeclaredReserve is what a message without SIZE reserves when its data
// starts: its first read buffer. It grows its reservation as it arrives
// (readBody), and is refused with 452 4.3.1 when the budget has no more.
// Reserving the maximum size up front would let only budget/max_size
// such transfers run at once (ten with the defaults), and devices rarely
// declare SIZE.
const undeclaredReserve = 64 << 10

// undeclaredBuffer is the first buffer of a message without SIZE. Most
// such messages from devices are either small notices, which fit, or
// scans far larger than undeclaredReserve, which grow past it anyway: a
// smaller first buffer saves allocating and clearing 64 KiB per small
// message at the cost of one 16 KiB copy for a large one.
const undeclaredBuffer = 16 << 10

// reservation is the memory a message with a declared SIZE of declared
// bytes (0: none) reserves when its data starts.
func (s *session) reservation(declared int64) int64 {
	max := s.srv.opts.SMTP.MaxMessageSize
	switch {
	case declared <= 0:
		declared = min(max, undeclaredReserve)
	case declared > max:
		declared = max
	}
	return declared + headerReserve
}

// spoolFull reports whether the spool is already below its free-space
// reserve, so the transaction is refused (452 4.3.1) before the upload.
func (s *session) spoolFull() bool {
	sp, ok := s.srv.opts.Spool.(interface{ BelowReserve() bool })
	return ok && sp.BelowReserve()
}

// noteTLS reports the TLS version and cipher once per connection.
func (s *session) noteTLS(device string) {
	st := &s.gc.state
	st.mu.Lock()
	first := !st.tlsNoted
	st.tlsNoted = true
	st.mu.Unlock()
	if first {
		s.srv.report.tls(device, s.ip.String(), s.tls)
	}
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if r := s.gc.endReply(); r != nil {
		return toSMTP(r)
	}
	if s.gc.closeAfterWrite.Load() {
		return toSMTP(policy.TooManyErrors())
	}
	if s.env == nil {
		return toSMTP(policy.MailFirst())
	}
	if s.spoolFull() {
		return s.refuse(s.mlog, "RCPT", to, policy.SpoolFull())
	}
	if opts != nil && len(opts.OriginalRecipient) > maxORCPT {
		return s.refuse(s.mlog, "RCPT", to, policy.DSNParamTooLong("ORCPT", maxORCPT))
	}
	canon, dup, r := s.srv.pol.Rcpt(s.txn, to)
	if r != nil {
		if r.Code == 450 {
			s.srv.report.rateLimit(s.env.Device, s.ip.String(), s.env.From, r)
		}
		return s.refuse(s.mlog, "RCPT", to, r)
	}
	if dup {
		return nil
	}
	rc := spool.Recipient{Addr: canon, State: spool.Pending}
	if opts != nil {
		for _, n := range opts.Notify {
			rc.Notify = append(rc.Notify, string(n))
		}
		if opts.OriginalRecipient != "" {
			rc.ORCPT = string(opts.OriginalRecipientType) + ";" + opts.OriginalRecipient
		}
	}
	s.mu.Lock()
	s.env.Recipients = append(s.env.Recipients, rc)
	s.mu.Unlock()
	s.mlog.Debug("rcpt to", "rcpt", canon)
	return nil
}

func (s *session) Data(r io.Reader) (err error) {
	srv := s.srv
	// Under BDAT go-smtp calls Data in a goroutine of its own with the
	// chunks arriving on an *io.PipeReader, and Data can outlive the
	// transaction (RSET while a chunked message is open). Such a Data
	// always reads the chunks to their end before it returns, so that its
	// result is only ever collected by the BDAT LAST it belongs to.
	_, chunked := r.(*io.PipeReader)
	er := &endReader{r: r}
	var env *spool.Envelope
	defer func() {
		if chunked && !er.eof && er.err == nil {
			io.Copy(io.Discard, er)
		}
		s.mu.Lock()
		if env != nil && s.env == env && (!chunked || er.eof) {
			s.received = true
		}
		s.mu.Unlock()
	}()
	srv.mu.Lock()
	if srv.closed {
		srv.mu.Unlock()
		return toSMTP(policy.ShuttingDown())
	}
	srv.inflight.Add(1)
	srv.mu.Unlock()
	defer srv.inflight.Done()

	s.mu.Lock()
	env = s.env
	log, utf8, txn, declared := s.mlog, s.utf8, s.txn, s.size
	empty := env == nil || len(env.Recipients) == 0
	s.mu.Unlock()
	if empty {
		return toSMTP(policy.RcptFirst())
	}
	maxSize := srv.opts.SMTP.MaxMessageSize
	if chunked {
		// go-smtp sets a fresh command timeout for every BDAT command,
		// so a read deadline would not bound the whole transfer.
		t := time.AfterFunc(srv.opts.SMTP.DataTimeout, func() { s.chunkTimeout(env) })
		defer t.Stop()
	} else {
		s.gc.SetReadDeadline(time.Now().Add(srv.opts.SMTP.DataTimeout)) // real time: a network deadline
		// Data runs on the goroutine that reads the connection.
		s.gc.setReadAhead(true)
		defer s.gc.setReadAhead(false)
	}

	rcpt := ""
	if len(env.Recipients) == 1 {
		rcpt = env.Recipients[0].Addr
	}
	hdr := receivedHeader(receivedInfo{
		Helo:     s.helo,
		Name:     env.ClientName,
		IP:       s.ip,
		By:       srv.opts.Hostname,
		TLS:      s.tls,
		UTF8:     utf8,
		ID:       env.ID,
		For:      rcpt,
		Date:     srv.clock(),
		Protocol: "ESMTP",
	})
	res := &reservation{b: srv.budget, max: int64(len(hdr)) + maxSize + 1}
	want := s.reservation(declared)
	if !res.grow(want) {
		return s.refuse(log, "DATA", "", policy.InflightFull())
	}
	defer res.release()
	// With a declared SIZE the buffer is allocated once; without one it
	// starts at undeclaredBuffer and grows, within the reservation.
	initial := min(want, int64(len(hdr))+undeclaredBuffer)
	if declared > 0 {
		initial = min(want, int64(len(hdr))+declared+2)
	}
	buf := append(make([]byte, 0, initial), hdr...)
	data, bare, err := readBody(er, buf, maxSize, srv.opts.SMTP.MaxLineLength, res)
	if err != nil {
		var rep *policy.Reply
		var ne net.Error
		switch {
		case errors.Is(err, smtp.ErrDataTooLarge) || errors.Is(err, errTooBig):
			rep = policy.MessageTooBig(maxSize)
		case errors.Is(err, smtp.ErrTooLongLine):
			rep = policy.LineTooLong(srv.opts.SMTP.MaxLineLength)
		case errors.Is(err, errBudget):
			rep = policy.InflightFull()
		case errors.As(err, &ne) && ne.Timeout():
			rep = policy.DataTimeout()
		default:
			log.Info("data aborted", "err", err)
			return fmt.Errorf("reading message: %w", err)
		}
		return s.refuse(log, "DATA", "", rep)
	}
	body := data[len(hdr):]
	if bare {
		return s.refuse(log, "DATA", "", policy.BareNewline())
	}
	if rep := policy.CheckHeader(body); rep != nil {
		return s.refuse(log, "DATA", "", rep)
	}

	env.ReceivedAt = srv.clock()
	env.NextAttempt = env.ReceivedAt
	env.Size = int64(len(data))
	s.mu.Lock()
	if r := s.gc.endReply(); r != nil || s.gc.closeAfterWrite.Load() || s.env != env {
		// The connection is ending or the transaction was reset: the
		// reply might never reach the client, so do not store.
		s.mu.Unlock()
		if r == nil {
			r = policy.TooManyErrors()
		}
		return toSMTP(r)
	}
	s.storing = true
	s.mu.Unlock()
	if err := srv.opts.Spool.Put(srv.ctx, env, data); err != nil {
		log.Error("spool write failed", "err", err)
		rep := policy.SpoolError()
		if errors.Is(err, spool.ErrFull) {
			rep = policy.SpoolFull()
		}
		return s.refuse(log, "DATA", "", rep)
	}
	s.mu.Lock()
	if s.env == env { // else Reset already aborted txn (and may reuse it)
		srv.pol.Commit(txn)
		s.env = nil
	}
	s.mu.Unlock()
	srv.accepted.Add(1)
	if srv.opts.Metrics != nil {
		srv.opts.Metrics.IncReceived()
	}
	// One line per accepted message at info, with what "mail from" and
	// "rcpt to" say at debug.
	log.Info("accepted", "from", env.From, "to", joinRcpts(env.Recipients), "rcpts", len(env.Recipients), "size", len(data), "tls", env.TLS)
	id := env.ID
	return toSMTP(policy.Queued(id))
}

// chunkTimeout ends a chunked (BDAT) transfer that is still running after
// smtp.data_timeout: the client gets 421 4.4.2 and the connection closes.
// A message already being stored is left to finish.
func (s *session) chunkTimeout(env *spool.Envelope) {
	s.mu.Lock()
	if s.env != env || s.storing || s.received {
		s.mu.Unlock()
		return
	}
	log := s.mlog
	s.mu.Unlock()
	r := policy.DataTimeout()
	s.gc.end(r)
	log.Info("refused", "stage", "BDAT", "reply", r.Error())
	s.srv.refused.Add(1)
	s.srv.report.refusal(env.Device, s.ip.String(), r)
	s.nc.SetWriteDeadline(time.Now().Add(5 * time.Second)) // real time: a network deadline
	s.nc.Write([]byte(r.Error() + "\r\n"))
	s.gc.Close()
}

// endReader remembers how the stream ended.
type endReader struct {
	r   io.Reader
	eof bool
	err error
}

func (e *endReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	switch {
	case err == io.EOF:
		e.eof = true
	case err != nil:
		e.err = err
	}
	return n, err
}

// reservation is one message's share of the intake budget.
type reservation struct {
	b    *budget
	max  int64 // the most one message may hold
	held int64
}

// grow makes the reservation n bytes, or at most max; it never shrinks
// it. It reports false when the budget cannot give what is missing.
func (r *reservation) grow(n int64) bool {
	n = min(n, r.max)
	if n <= r.held {
		return true
	}
	if !r.b.reserve(n - r.held) {
		return false
	}
	r.held = n
	return true
}

func (r *reservation) release() {
	r.b.release(r.held)
	r.held = 0
}

// RFC 3461 §4.2 and §4.4: ORCPT and ENVID values (echoed into NDRs) are
// at most 500 and 100 characters.
const (
	maxORCPT = 500
	maxENVID = 100
)

// abort drops the open transaction (RSET, new MAIL, end of session).
func (s *session) abort() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.abortLocked()
}

func (s *session) abortLocked() {
	if s.txn != nil {
		s.srv.pol.Abort(s.txn)
	}
	s.env = nil
	s.mlog = nil
	s.utf8 = false
	s.size = 0
	s.received, s.storing = false, false
}

// Reset is go-smtp's RSET (and the reset at EHLO, STARTTLS and after a
// refused BDAT chunk). A transaction with recipients whose message was not
// read to its end may have a chunked message open, whose Data goroutine
// outlives the reset: such a reset ends the connection (see Data).
func (s *session) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.env != nil && len(s.env.Recipients) > 0 && !s.received {
		r := policy.ChunkingAbandoned()
		s.gc.end(r)
		if s.mlog != nil {
			s.mlog.Info("transaction abandoned, closing connection", "reply", r.Error())
		}
	}
	s.abortLocked()
}

func (s *session) Logout() error {
	s.Reset()
	return nil
}

// readMessage reads the dot-unstuffed message from go-smtp, checking line
// endings and line lengths as it goes, up to max bytes. go-smtp limits line
// length under DATA but not inside BDAT chunks, so the limit (maxLine
// octets including CRLF; 0 = none) is checked here for both.
func readMessage(r io.Reader, max int64, maxLine int) (body []byte, bare bool, err error) {
	return readBody(r, nil, max, maxLine, nil)
}

// readBody is readMessage appending to buf (which may hold a header
// already): the returned data is buf with the message after it. The
// buffer's capacity never exceeds what res holds (nil: no budget); when
// the message needs more, res is grown, and errBudget is returned if the
// budget cannot give it.
func readBody(r io.Reader, buf []byte, maxSize int64, maxLine int, res *reservation) (data []byte, bare bool, err error) {
	chk := &lineEndChecker{maxLine: maxLine}
	start := len(buf)
	limit := int64(start) + maxSize + 1 // one octet over the limit tells "too big"
	for {
		if len(buf) == cap(buf) {
			n := min(max(int64(cap(buf))*2, int64(start)+64<<10), limit)
			if n <= int64(len(buf)) {
				return nil, false, errTooBig
			}
			if res != nil {
				res.grow(n) // as far as the budget allows
				if n = min(n, res.held); n <= int64(len(buf)) {
					return nil, false, errBudget
				}
			}
			nb := make([]byte, len(buf), n)
			copy(nb, buf)
			buf = nb
		}
		n, rerr := r.Read(buf[len(buf):cap(buf)])
		chk.Write(buf[len(buf) : len(buf)+n])
		buf = buf[:len(buf)+n]
		if int64(len(buf)-start) > maxSize {
			return nil, false, errTooBig
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return nil, false, rerr
		}
	}
	if chk.long {
		return nil, false, smtp.ErrTooLongLine
	}
	return buf, chk.bad(), nil
}

// errBudget: the message outgrew its reservation and the budget had no
// more room.
var errBudget = errors.New("intake memory budget exhausted")

var errTooBig = errors.New("message too big")

// lineEndChecker finds bare CR and bare LF, and lines longer than maxLine
// octets including the line end (when maxLine > 0), in a byte stream
// written in arbitrary chunks.
type lineEndChecker struct {
	prevCR bool
	found  bool

	maxLine int
	cur     int // octets of the current line so far
	long    bool
}

func (c *lineEndChecker) Write(p []byte) (int, error) {
	n := len(p)
	// A line at a time: IndexByte finds the LF and the CRs of a line much
	// faster than a loop over its bytes.
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		seg := p // the bytes up to the next LF, or all when there is none
		if i >= 0 {
			seg = p[:i]
		}
		if len(seg) > 0 {
			if c.prevCR || bytes.IndexByte(seg[:len(seg)-1], '\r') >= 0 {
				c.found = true // CR not followed by LF
			}
			c.prevCR = seg[len(seg)-1] == '\r'
		}
		if c.maxLine > 0 {
			if c.cur += len(seg); c.cur > c.maxLine {
				c.long = true
			}
		}
		if i < 0 {
			break
		}
		if !c.prevCR {
			c.found = true // LF not preceded by CR
		}
		c.prevCR = false
		if c.maxLine > 0 {
			if c.cur++; c.cur > c.maxLine {
				c.long = true
			}
			c.cur = 0
		}
		p = p[i+1:]
	}
	return n, nil
}

// bad reports a bare line ending, including a CR at the very end.
func (c *lineEndChecker) bad() bool { return c.found || c.prevCR }

// joinRcpts lists recipient addresses for a log line.
func joinRcpts(rcpts []spool.Recipient) string {
	if len(rcpts) == 1 {
		return rcpts[0].Addr
	}
	var b strings.Builder
	for i, rc := range rcpts {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(rc.Addr)
	}
	return b.String()
}
