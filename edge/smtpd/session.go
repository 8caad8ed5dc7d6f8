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
	srv   *Server
	conn  *smtp.Conn
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
	s.srv.refused.Add(1)
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
	if s.gc.closeAfterWrite.Load() {
		return toSMTP(policy.TooManyErrors())
	}
	s.abort()
	if opts != nil && len(opts.EnvelopeID) > maxENVID {
		return s.refuse(s.log, "MAIL", from, policy.DSNParamTooLong("ENVID", maxENVID))
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
	device := ""
	if s.txn.Registered {
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
		utf8 = opts.UTF8
	}
	if s.tls != nil {
		env.TLS = tlsinfo.Describe(s.tls)
		s.noteTLS(device)
	}
	s.mu.Lock()
	s.env, s.utf8, s.mlog = env, utf8, log.With("device", device)
	s.mu.Unlock()
	s.mlog.Info("mail from", "from", s.txn.Sender)
	return nil
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
	if s.gc.closeAfterWrite.Load() {
		return toSMTP(policy.TooManyErrors())
	}
	if s.env == nil {
		return toSMTP(policy.MailFirst())
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
	s.mlog.Info("rcpt to", "rcpt", canon)
	return nil
}

func (s *session) Data(r io.Reader) error {
	srv := s.srv
	srv.mu.Lock()
	if srv.closed {
		srv.mu.Unlock()
		return toSMTP(policy.ShuttingDown())
	}
	srv.inflight.Add(1)
	srv.mu.Unlock()
	defer srv.inflight.Done()

	s.mu.Lock()
	env, log, utf8, txn := s.env, s.mlog, s.utf8, s.txn
	empty := env == nil || len(env.Recipients) == 0
	s.mu.Unlock()
	if empty {
		return toSMTP(policy.RcptFirst())
	}
	s.conn.Conn().SetReadDeadline(time.Now().Add(srv.opts.SMTP.DataTimeout)) // real time: a network deadline

	body, bare, err := readMessage(r, srv.opts.SMTP.MaxMessageSize, srv.opts.SMTP.MaxLineLength)
	if err != nil {
		var rep *policy.Reply
		var ne net.Error
		switch {
		case errors.Is(err, smtp.ErrDataTooLarge) || errors.Is(err, errTooBig):
			rep = policy.MessageTooBig(srv.opts.SMTP.MaxMessageSize)
		case errors.Is(err, smtp.ErrTooLongLine):
			rep = policy.LineTooLong(srv.opts.SMTP.MaxLineLength)
		case errors.As(err, &ne) && ne.Timeout():
			rep = policy.DataTimeout()
		default:
			log.Info("data aborted", "err", err)
			if errors.Is(err, smtp.ErrDataReset) {
				// A chunked (BDAT) message was abandoned. go-smtp may
				// deliver this call's result as the reply to the
				// connection's next BDAT transaction (its result
				// channel is read from the connection at send time):
				// end the connection so that no later transaction can
				// be answered with another one's result.
				s.gc.closeAfterWrite.Store(true)
			}
			return fmt.Errorf("reading message: %w", err)
		}
		return s.refuse(log, "DATA", "", rep)
	}
	if bare {
		return s.refuse(log, "DATA", "", policy.BareNewline())
	}
	if rep := policy.CheckHeader(body); rep != nil {
		return s.refuse(log, "DATA", "", rep)
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
	data := make([]byte, 0, len(hdr)+len(body))
	data = append(append(data, hdr...), body...)

	env.ReceivedAt = srv.clock()
	env.NextAttempt = env.ReceivedAt
	env.Size = int64(len(data))
	if s.gc.closeAfterWrite.Load() {
		// The connection is ending (see ErrDataReset above): the reply
		// might never reach the client, so do not store.
		return toSMTP(policy.TooManyErrors())
	}
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
	log.Info("accepted", "from", env.From, "rcpts", len(env.Recipients), "size", len(data), "tls", env.TLS)
	id := env.ID
	return toSMTP(policy.Queued(id))
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
	if s.txn != nil {
		s.srv.pol.Abort(s.txn)
	}
	s.env = nil
	s.mlog = nil
	s.utf8 = false
}

func (s *session) Reset() { s.abort() }

func (s *session) Logout() error {
	s.abort()
	return nil
}

// readMessage reads the dot-unstuffed message from go-smtp, checking line
// endings and line lengths as it goes, up to max bytes. go-smtp limits line
// length under DATA but not inside BDAT chunks, so the limit (maxLine
// octets including CRLF; 0 = none) is checked here for both.
func readMessage(r io.Reader, max int64, maxLine int) (body []byte, bare bool, err error) {
	var buf bytes.Buffer
	chk := &lineEndChecker{maxLine: maxLine}
	lr := &io.LimitedReader{R: r, N: max + 1}
	_, err = io.Copy(io.MultiWriter(&buf, chk), lr)
	if err != nil {
		return nil, false, err
	}
	if int64(buf.Len()) > max {
		return nil, false, errTooBig
	}
	if chk.long {
		return nil, false, smtp.ErrTooLongLine
	}
	return buf.Bytes(), chk.bad(), nil
}

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
	for _, b := range p {
		if c.maxLine > 0 {
			if c.cur++; c.cur > c.maxLine {
				c.long = true
			}
			if b == '\n' {
				c.cur = 0
			}
		}
		switch {
		case c.prevCR && b != '\n':
			c.found = true // CR not followed by LF
		case !c.prevCR && b == '\n':
			c.found = true // LF not preceded by CR
		}
		c.prevCR = b == '\r'
	}
	return len(p), nil
}

// bad reports a bare line ending, including a CR at the very end.
func (c *lineEndChecker) bad() bool { return c.found || c.prevCR }
