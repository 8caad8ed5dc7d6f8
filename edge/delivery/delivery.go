// Package delivery is the edge's outbound SMTP client: it takes one
// message for one destination domain and tries to hand it, with all of its
// recipients for that domain, to the domain's mail servers (or to the
// configured smarthost), and reports a result per recipient.
//
// What it guarantees:
//   - Routing follows RFC 5321 §5 and RFC 7505: MX hosts in preference
//     order, a random order among equal preferences, the domain itself as
//     an implicit MX when it has no MX records, each host's addresses in
//     turn. A null MX or a domain that does not exist is a permanent
//     failure; a DNS failure (SERVFAIL, timeout) is a temporary one.
//   - One SMTP transaction per call, carrying every recipient; a refused
//     RCPT fails only that recipient (4xx temporary, 5xx permanent).
//   - A connection lost during or after DATA, before the final reply, is a
//     temporary failure: the message is retried (a duplicate is possible,
//     a loss is not).
//   - A connection whose transaction ended cleanly is kept for a moment
//     (Options.ConnIdle) and reused for the next message to the same
//     server under the same TLS requirement (a new connection takes over
//     if the reused one turns out closed before the message was sent).
//   - STARTTLS is used whenever the server offers it; a TLSPolicy decides
//     per domain and host whether TLS is required and how the certificate
//     is verified (edge/tlspolicy: per-domain overrides, DANE, MTA-STS).
//     A required TLS that cannot be had defers the attempt, never falls
//     back to plaintext. Whether TLS was used, and how it was verified,
//     is part of the Outcome.
//
// Deliver does no queue bookkeeping: the queue runner decides what a
// result means for the spool (retry, NDR, delete).
package delivery

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"net/textproto"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/postern/postern/shared/loopback"
	"github.com/postern/postern/shared/resolver"
	"github.com/postern/postern/shared/smtpstatus"
	"github.com/postern/postern/shared/tlsinfo"
)

// Resolver is the DNS the client routes with (*resolver.Resolver).
type Resolver interface {
	LookupMX(ctx context.Context, domain string) ([]resolver.MX, error)
	LookupIP(ctx context.Context, name string) ([]netip.Addr, error)
}

// Options configure a Client.
type Options struct {
	// Hostname is sent in EHLO (the edge's hostname).
	Hostname string
	Resolver Resolver
	// TLS decides STARTTLS requirements (default StaticTLS{Opportunistic}).
	TLS TLSPolicy
	// MXPort is the port MX hosts are contacted on (delivery.mx_port, 25).
	MXPort int
	// Smarthost, when set ("host:port"), receives all mail instead of MX.
	Smarthost string
	// SmarthostUsername/Password authenticate to the smarthost (AUTH
	// PLAIN), only over TLS or to a loopback address.
	SmarthostUsername, SmarthostPassword string
	ConnectTimeout                       time.Duration
	CommandTimeout                       time.Duration
	// Shuffle randomises hosts of equal preference (default: math/rand).
	// Tests inject a deterministic one.
	Shuffle func(n int, swap func(i, j int))
	// MaxAddresses caps the addresses tried in one attempt (default 10).
	MaxAddresses int
	// ConnIdle is how long a connection that finished a transaction is
	// kept for the next message to the same server (default 2s; negative:
	// one connection per message). See conncache.go.
	ConnIdle time.Duration
	Log      *slog.Logger
}

// Client delivers messages. It is safe for concurrent use; a Deliver
// uses a connection of its own, new or reused from an earlier Deliver to
// the same server (see conncache.go). Close ends the idle ones.
type Client struct {
	o      Options
	log    *slog.Logger
	dialer net.Dialer
	cache  *connCache // nil: no connection reuse
}

// New checks opts and returns a Client.
func New(opts Options) (*Client, error) {
	if opts.Hostname == "" {
		return nil, errors.New("delivery: Options.Hostname is empty")
	}
	if opts.Resolver == nil && opts.Smarthost == "" {
		return nil, errors.New("delivery: Options.Resolver is nil")
	}
	if opts.TLS == nil {
		opts.TLS = StaticTLS{Mode: Opportunistic}
	}
	if opts.MXPort == 0 {
		opts.MXPort = 25
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 30 * time.Second
	}
	if opts.CommandTimeout <= 0 {
		opts.CommandTimeout = 5 * time.Minute
	}
	if opts.Shuffle == nil {
		opts.Shuffle = rand.Shuffle
	}
	if opts.MaxAddresses <= 0 {
		opts.MaxAddresses = 10
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Smarthost != "" {
		if _, _, err := splitHostPort(opts.Smarthost); err != nil {
			return nil, fmt.Errorf("delivery: smarthost: %w", err)
		}
	}
	c := &Client{o: opts, log: opts.Log, dialer: net.Dialer{Timeout: opts.ConnectTimeout}}
	if opts.ConnIdle == 0 {
		opts.ConnIdle = defaultConnIdle
	}
	if opts.ConnIdle > 0 {
		c.cache = newConnCache(opts.ConnIdle)
	}
	return c, nil
}

// Rcpt is one recipient of a Job with its DSN parameters from intake.
type Rcpt struct {
	Addr   string
	Notify []string // RFC 3461 NOTIFY values, e.g. "FAILURE", "DELAY"
	ORCPT  string   // "rfc822;addr" as received
}

// Job is one message for one destination domain.
type Job struct {
	QueueID string
	From    string // "" for the null sender
	Domain  string // the recipients' domain (ignored with a smarthost)
	Rcpts   []Rcpt
	Data    []byte
	// DSN parameters from MAIL, passed on when the next hop supports DSN.
	Ret, EnvID string
	// RequireTLS: the message came with REQUIRETLS (RFC 8689, see
	// requiretls.go).
	RequireTLS bool
}

// Status classifies a recipient's result.
type Status int

const (
	// Temporary: try again later (4xx, network, DNS failure).
	Temporary Status = iota
	// Delivered: the next hop accepted the message for the recipient.
	Delivered
	// Permanent: the recipient cannot be delivered (5xx, null MX, no such
	// domain).
	Permanent
)

func (s Status) String() string {
	switch s {
	case Delivered:
		return "delivered"
	case Permanent:
		return "permanent"
	}
	return "temporary"
}

// Result is what happened to one recipient.
type Result struct {
	Addr   string
	Status Status
	// Code and Enhanced are the reply code (e.g. 550, "5.1.1"); for a
	// failure no server answered (DNS, connection) the edge assigns them.
	Code     int
	Enhanced smtpstatus.Code
	// Text is the server's reply text, or a local explanation.
	Text string
	// RemoteMTA is the host name of the server that answered, "" when
	// none did.
	RemoteMTA string
	// NoDSN marks a recipient Delivered to a next hop that does not
	// advertise DSN: its NOTIFY was not passed on, so a success notice it
	// asked for is the edge's to send (RFC 3461 §5.2.2, "relayed").
	NoDSN bool
}

// Outcome is the result of one Deliver call.
type Outcome struct {
	// Results has one entry per Job.Rcpts entry, in the same order.
	Results []Result
	// Host is the server the transaction ran with ("name [ip]:port"), or
	// the last one tried when none got that far; "" when routing failed.
	Host string
	// TLS describes the TLS connection, "" for plaintext.
	TLS string
	// Verification is how the connection was protected (VerifPlain,
	// VerifDANE, ...); VerifFailed when the attempt was deferred because
	// the required TLS could not be had; "" when no server answered.
	Verification string
	// TLSNote explains a verification failure that did not stop the
	// delivery (MTA-STS testing mode), or the policy failure.
	TLSNote string
	// Summary is a one-line description for history and logs.
	Summary string
	// TLSResults has, for TLSRPT, one entry per connection made under a
	// published policy (DANE, MTA-STS, none found): whether its TLS
	// satisfied the policy, and the failure type when not.
	TLSResults []TLSResult
	// Unreachable marks an attempt that never reached a transaction: the
	// route could not be resolved for now, or every server was refused
	// at connection level (no answer, timeout, 4xx greeting or EHLO,
	// TLS required and not had). It is about the destination, not the
	// message.
	Unreachable bool
}

// Deliver runs one delivery attempt for job. It never returns an error:
// every failure is a Result. ctx bounds the whole attempt. Reply texts in
// the Outcome are bounded (ReplyText).
func (c *Client) Deliver(ctx context.Context, job *Job) Outcome {
	out := c.deliver(ctx, job)
	for i := range out.Results {
		out.Results[i].Text = ReplyText(out.Results[i].Text)
	}
	out.Summary = ReplyText(out.Summary)
	return out
}

func (c *Client) deliver(ctx context.Context, job *Job) Outcome {
	// The logger with the message's attributes is made only when a line
	// is written: a delivery that succeeds writes none at info, and With
	// formats its attributes at once.
	var logWith *slog.Logger
	log := func() *slog.Logger {
		if logWith == nil {
			logWith = c.log.With("queue_id", job.QueueID, "domain", job.Domain)
		}
		return logWith
	}
	out := Outcome{Results: make([]Result, len(job.Rcpts))}
	fail := func(st Status, code int, enh smtpstatus.Code, text, host string) Outcome {
		for i, r := range job.Rcpts {
			out.Results[i] = Result{Addr: r.Addr, Status: st, Code: code, Enhanced: enh, Text: text, RemoteMTA: host}
		}
		out.Summary = fmt.Sprintf("%s: %s", st, text)
		return out
	}
	hosts, rerr := c.route(ctx, job.Domain)
	if rerr != nil {
		log().Info("delivery routing failed", "status", rerr.status.String(), "err", rerr.text)
		o := fail(rerr.status, rerr.code, rerr.enhanced, rerr.text, "")
		o.Unreachable = rerr.status == Temporary
		return o
	}
	var last *attemptError
	tried := 0
	for _, h := range hosts {
		addrs := h.addrs
		if addrs == nil {
			var err error
			addrs, err = c.o.Resolver.LookupIP(ctx, h.name)
			if err != nil {
				last = &attemptError{text: fmt.Sprintf("address lookup for %s: %v", h.name, err)}
				if h.implicit && errors.Is(err, resolver.ErrNotFound) {
					return fail(Permanent, 550, smtpstatus.BadDestinationSystem, fmt.Sprintf("domain %s has no MX and no address records", job.Domain), "")
				}
				log().Info("delivery host lookup failed", "host", h.name, "err", err)
				continue
			}
		}
		for _, a := range addrs {
			if tried >= c.o.MaxAddresses || ctx.Err() != nil {
				break
			}
			tried++
			hp := net.JoinHostPort(a.String(), strconv.Itoa(h.port))
			out.Host = fmt.Sprintf("%s [%s]:%d", h.name, a, h.port)
			results, ts, aerr := c.try(ctx, job, h, hp)
			if ts.report != nil {
				out.TLSResults = append(out.TLSResults, *ts.report)
			}
			if aerr == nil {
				out.Results, out.TLS, out.Verification, out.TLSNote = results, ts.desc, ts.verif, ts.note
				out.Summary = summarize(results)
				// Debug: the queue logs the outcome once per message at info.
				if c.log.Enabled(ctx, slog.LevelDebug) {
					log().Debug("delivery attempt", "host", out.Host, "tls", tlsinfo.OrNone(ts.desc), "verification", ts.verif, "result", out.Summary)
				}
				if ts.note != "" {
					log().Warn("TLS verification failed, delivered under a report-only policy", "host", out.Host, "note", ts.note)
				}
				return out
			}
			log().Info("delivery host failed", "host", out.Host, "tls", tlsinfo.OrNone(ts.desc), "err", aerr.text)
			last = aerr
			out.TLS, out.Verification, out.TLSNote = ts.desc, ts.verif, ts.note
			if aerr.tlsPolicy {
				out.Verification, out.TLSNote = VerifFailed, aerr.text
			}
		}
	}
	switch {
	case last == nil && ctx.Err() != nil:
		last = &attemptError{text: "delivery attempt timed out"}
	case last == nil:
		last = &attemptError{text: "no usable mail server address"}
	}
	if last.code == 0 {
		last.code, last.enhanced = 451, smtpstatus.NoAnswer
	}
	o := fail(Temporary, last.code, last.enhanced, last.text, last.host)
	o.Unreachable = ctx.Err() == nil
	return o
}

func summarize(rs []Result) string {
	var d, t, p int
	for _, r := range rs {
		switch r.Status {
		case Delivered:
			d++
		case Temporary:
			t++
		case Permanent:
			p++
		}
	}
	s := fmt.Sprintf("delivered %d, deferred %d, failed %d", d, t, p)
	for _, r := range rs {
		if r.Status != Delivered {
			s += fmt.Sprintf("; %d %s %s", r.Code, r.Enhanced, ReplyText(r.Text))
			break
		}
	}
	return s
}

// host is one next hop to try.
type host struct {
	name     string
	port     int
	addrs    []netip.Addr // set for IP literals
	implicit bool         // the domain itself, used as implicit MX
	smart    bool         // the smarthost
}

// routeError is a routing failure for every recipient.
type routeError struct {
	status   Status
	code     int
	enhanced smtpstatus.Code
	text     string
}

// route returns the hosts to try for domain, in order.
func (c *Client) route(ctx context.Context, domain string) ([]host, *routeError) {
	if c.o.Smarthost != "" {
		name, port, _ := splitHostPort(c.o.Smarthost)
		h := host{name: name, port: port, smart: true}
		if ip, err := netip.ParseAddr(name); err == nil {
			h.addrs = []netip.Addr{ip}
		}
		return []host{h}, nil
	}
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	if ip, ok := addressLiteral(domain); ok {
		return []host{{name: domain, port: c.o.MXPort, addrs: []netip.Addr{ip}}}, nil
	}
	mxs, err := c.o.Resolver.LookupMX(ctx, domain)
	switch {
	case errors.Is(err, resolver.ErrNullMX):
		return nil, &routeError{Permanent, 556, smtpstatus.NullMX, fmt.Sprintf("domain %s does not accept mail (null MX, RFC 7505)", domain)}
	case errors.Is(err, resolver.ErrInvalidName):
		return nil, &routeError{Permanent, 550, smtpstatus.BadDestinationSystem, fmt.Sprintf("%q is not a valid domain name", domain)}
	case errors.Is(err, resolver.ErrNotFound) || (err == nil && len(mxs) == 0):
		// No MX: the domain is its own implicit MX (RFC 5321 §5.1). If it
		// does not exist at all, the address lookup says so.
		return []host{{name: domain, port: c.o.MXPort, implicit: true}}, nil
	case err != nil:
		return nil, &routeError{Temporary, 451, smtpstatus.DirectoryFailure, fmt.Sprintf("MX lookup for %s failed: %v", domain, err)}
	}
	mxs = append([]resolver.MX(nil), mxs...)
	sort.SliceStable(mxs, func(i, j int) bool { return mxs[i].Pref < mxs[j].Pref })
	// Random order among equal preferences (RFC 5321 §5.1).
	for i := 0; i < len(mxs); {
		j := i
		for j < len(mxs) && mxs[j].Pref == mxs[i].Pref {
			j++
		}
		group := mxs[i:j]
		c.o.Shuffle(len(group), func(a, b int) { group[a], group[b] = group[b], group[a] })
		i = j
	}
	hosts := make([]host, 0, len(mxs))
	for _, mx := range mxs {
		name := strings.TrimSuffix(mx.Host, ".")
		if name == "" {
			continue
		}
		hosts = append(hosts, host{name: name, port: c.o.MXPort})
	}
	return hosts, nil
}

// addressLiteral parses a domain of the form [192.0.2.1] or [IPv6:...].
func addressLiteral(d string) (netip.Addr, bool) {
	if !strings.HasPrefix(d, "[") || !strings.HasSuffix(d, "]") {
		return netip.Addr{}, false
	}
	s := strings.TrimPrefix(strings.TrimPrefix(d[1:len(d)-1], "ipv6:"), "IPv6:")
	ip, err := netip.ParseAddr(s)
	return ip, err == nil
}

func splitHostPort(hp string) (string, int, error) {
	h, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", hp)
	}
	return h, n, nil
}

// attemptError is a failure at connection level (before the transaction
// produced results): the next address or host is tried.
type attemptError struct {
	code     int
	enhanced smtpstatus.Code
	text     string
	host     string // remote MTA name when a server answered
	// tlsPolicy marks a failure to get the TLS the policy requires.
	tlsPolicy bool
	// tlsType is the TLSRPT result type of a TLS failure.
	tlsType string
}

// tlsState is how one connection was protected.
type tlsState struct {
	desc  string // tlsinfo.Describe, "" for plaintext
	verif string // Verification
	note  string // a report-only verification failure
	// noteType is the TLSRPT result type of note.
	noteType string
	// report is the connection's TLSRPT result (set by try).
	report *TLSResult
	// reused: the connection was an idle one from an earlier message.
	reused bool
}

// errTLSFailed marks a STARTTLS failure that opportunistic mode may retry
// in plaintext.
var errTLSFailed = errors.New("STARTTLS failed")

// try runs one connection to addr (ip:port) for host h.
func (c *Client) try(ctx context.Context, job *Job, h host, addr string) ([]Result, tlsState, *attemptError) {
	req, err := c.o.TLS.Requirement(ctx, job.Domain, h.name)
	if !job.RequireTLS && tlsRequiredNo(job.Data) {
		var aside bool
		if req, err, aside = setAside(req, err, h.name); aside {
			c.log.Info("TLS-Required: No: the published TLS policy is set aside", "queue_id", job.QueueID, "host", h.name)
		}
	}
	if err != nil {
		// The policy refuses this host (not in the MTA-STS policy, a
		// failed TLSA lookup): the next host is tried, then a retry.
		aerr := &attemptError{code: 451, enhanced: smtpstatus.CryptoFailure, tlsPolicy: true, text: fmt.Sprintf("TLS policy for %s: %v", h.name, err)}
		return nil, tlsState{report: refusedResult(err, h.name, addr, aerr.text)}, aerr
	}
	if job.RequireTLS {
		if aerr := requireTLSAuthenticated(req, h.name); aerr != nil {
			return nil, tlsState{}, aerr
		}
	}
	res, ts, aerr, tlsErr := c.session(ctx, job, h, addr, req, req.Mode != NoTLS)
	rep := tlsResult(req, h.name, addr, ts, aerr)
	if tlsErr && req.Mode == Opportunistic {
		// A broken STARTTLS must not stop mail that opportunistic TLS
		// would have sent in plaintext anyway: reconnect without it.
		c.log.Info("STARTTLS failed, retrying in plaintext", "queue_id", job.QueueID, "host", h.name, "addr", addr, "err", aerr.text)
		why := aerr.text
		res, ts, aerr, _ = c.session(ctx, job, h, addr, req, false)
		if req.ReportOnly {
			ts.note = why
		}
	}
	ts.report = rep
	return res, ts, aerr
}

// session is one SMTP connection. tlsFailed reports a STARTTLS failure.
func (c *Client) session(ctx context.Context, job *Job, h host, addr string, req TLSRequirement, useTLS bool) (res []Result, ts tlsState, aerr *attemptError, tlsFailed bool) {
	ts.verif = VerifPlain
	key := connKey{addr: addr, host: h.name, mode: req.Mode, serverName: req.ServerName, roots: req.RootCAs, useTLS: useTLS, smart: h.smart,
		policy: req.Policy, verified: req.Verified, reportOnly: req.ReportOnly, verifyID: req.VerifyID}
	if req.Verify != nil && req.VerifyID == "" {
		// A custom check is bound to what it was made from: without an
		// id for that, the connection is not reused.
		key.uncacheable = true
	}
	if cc := c.cache.get(key); cc != nil {
		if res, aerr, ok := c.reuse(ctx, key, cc, job, h); ok {
			ts := cc.tls
			ts.reused = true
			return res, ts, aerr, false
		}
	}
	opened := time.Now()
	conn, err := c.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, tlsState{}, &attemptError{code: 451, enhanced: smtpstatus.NoAnswer, text: fmt.Sprintf("connect to %s (%s): %v", h.name, addr, unwrapNet(err))}, false
	}
	// The go-smtp client has no context: closing the connection when ctx
	// ends unblocks whatever it waits for.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var cur net.Conn = conn
	defer func() {
		if cur != nil {
			cur.Close()
		}
	}()

	bw := batched(bounded(conn), c.o.CommandTimeout)
	sc := c.newSMTP(bw)
	if err := sc.Hello(c.o.Hostname); err != nil {
		return nil, tlsState{}, c.connErr(h, "greeting/EHLO", err), false
	}
	offered, _ := sc.Extension("STARTTLS")
	var state *tls.ConnectionState
	switch {
	case offered && useTLS:
		tc, noteErr, err := c.startTLS(ctx, conn, req, h.name)
		if err != nil {
			return nil, tlsState{}, &attemptError{code: 451, enhanced: smtpstatus.CryptoFailure, host: h.name, tlsPolicy: req.Mode != Opportunistic,
				text: fmt.Sprintf("STARTTLS with %s: %v", h.name, err), tlsType: FailureType(err)}, true
		}
		cur = tc
		st := tc.ConnectionState()
		state = &st
		var note string
		if noteErr != nil {
			note = noteErr.Error()
		}
		ts = tlsState{desc: tlsinfo.Describe(state), verif: verification(req, note), note: note, noteType: FailureType(noteErr)}
		btc := bounded(tc)
		bw = batched(&greetedConn{Conn: btc, r: io.MultiReader(strings.NewReader("220 after STARTTLS\r\n"), btc)}, c.o.CommandTimeout)
		sc = c.newSMTP(bw)
		if err := sc.Hello(c.o.Hostname); err != nil {
			return nil, ts, c.connErr(h, "EHLO after STARTTLS", err), false
		}
	case req.Mode != Opportunistic && req.Mode != NoTLS:
		sc.Quit()
		why := "does not offer STARTTLS"
		if offered {
			why = "STARTTLS failed earlier"
		}
		return nil, tlsState{}, &attemptError{code: 451, enhanced: smtpstatus.CryptoFailure, host: h.name, tlsPolicy: true,
			text: fmt.Sprintf("%s %s, and the TLS policy (%s, %s) requires it", h.name, why, policyName(req), req.Mode), tlsType: ResultSTARTTLSNotSupported}, false
	case req.ReportOnly && useTLS:
		ts.note, ts.noteType = fmt.Sprintf("%s does not offer STARTTLS", h.name), ResultSTARTTLSNotSupported
	}
	if h.smart && c.o.SmarthostUsername != "" {
		if state == nil && !loopback.HostPort(addr) {
			sc.Quit()
			return nil, tlsState{}, &attemptError{code: 451, enhanced: smtpstatus.CryptoFailure, host: h.name, text: "smarthost credentials are only sent over TLS, and TLS was not used"}, false
		}
		if err := sc.Auth(sasl.NewPlainClient("", c.o.SmarthostUsername, c.o.SmarthostPassword)); err != nil {
			return nil, ts, c.connErr(h, "AUTH", err), false
		}
	}
	res, aerr, clean := c.transaction(sc, bw, job, h)
	if aerr == nil {
		if clean && c.cache != nil && !key.uncacheable && stop() {
			c.cache.put(key, &cachedConn{sc: sc, w: bw, conn: cur, tls: ts, opened: opened, uses: 1})
			cur = nil
		} else {
			sc.Quit()
		}
	}
	return res, ts, aerr, false
}

func policyName(req TLSRequirement) string {
	if req.Policy == "" {
		return "delivery.tls"
	}
	return req.Policy
}

func (c *Client) newSMTP(conn net.Conn) *smtp.Client {
	sc := smtp.NewClient(conn)
	sc.CommandTimeout = c.o.CommandTimeout
	sc.SubmissionTimeout = c.o.CommandTimeout
	return sc
}

// startTLS sends STARTTLS on the raw connection and runs the handshake.
// It reads the 220 reply itself with an unbuffered view of conn, so that
// bytes a man in the middle injected before the handshake (the STARTTLS
// command injection class, CVE-2011-0411) are never read as replies.
// note is a report-only verification failure (TLSRequirement.ReportOnly).
func (c *Client) startTLS(ctx context.Context, conn net.Conn, req TLSRequirement, hostName string) (_ *tls.Conn, note error, _ error) {
	conn.SetDeadline(time.Now().Add(c.o.CommandTimeout))
	bc := bounded(conn)
	if _, err := io.WriteString(bc, "STARTTLS\r\n"); err != nil {
		return nil, nil, err
	}
	br := bufio.NewReaderSize(bc, 512)
	code, msg, err := textproto.NewReader(br).ReadResponse(220)
	if err != nil {
		if errors.Is(err, errReplyTooLong) {
			return nil, nil, &ReportError{Type: ResultSTARTTLSNotSupported, Err: fmt.Errorf("%w: %v", errTLSFailed, err)}
		}
		return nil, nil, &ReportError{Type: ResultSTARTTLSNotSupported, Err: fmt.Errorf("%w: %d %s", errTLSFailed, code, ReplyText(msg))}
	}
	if br.Buffered() > 0 {
		return nil, nil, fmt.Errorf("%w: data after the STARTTLS reply (injection attempt?)", errTLSFailed)
	}
	tc := tls.Client(conn, clientConfig(req, hostName, &note))
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, nil, fmt.Errorf("%w: handshake: %w", errTLSFailed, err)
	}
	conn.SetDeadline(time.Time{})
	return tc, note, nil
}

// greetedConn replays a greeting before the TLS stream so a fresh
// go-smtp client (which waits for a 220) can run on a connection that
// already did STARTTLS; go-smtp does not export its STARTTLS step.
type greetedConn struct {
	net.Conn
	r io.Reader
}

func (g *greetedConn) Read(p []byte) (int, error) { return g.r.Read(p) }

// transaction runs MAIL, RCPT and DATA. bw is the batchConn under sc, to
// which a CRLF-clean message is written dot-stuffed (writeStuffed). A nil
// attemptError means the results are final for this attempt. clean
// reports that the server gave its final reply to DATA, so the connection
// is idle and may carry another message.
func (c *Client) transaction(sc *smtp.Client, bw *batchConn, job *Job, h host) (_ []Result, _ *attemptError, clean bool) {
	res := make([]Result, len(job.Rcpts))
	for i, r := range job.Rcpts {
		res[i] = Result{Addr: r.Addr, Status: Temporary, RemoteMTA: h.name}
	}
	all := func(st Status, code int, enh smtpstatus.Code, text string) []Result {
		for i := range res {
			res[i].Status, res[i].Code, res[i].Enhanced, res[i].Text = st, code, enh, text
		}
		return res
	}
	utf8 := !isASCII(job.From)
	for _, r := range job.Rcpts {
		utf8 = utf8 || !isASCII(r.Addr)
	}
	if ok, _ := sc.Extension("SMTPUTF8"); utf8 && !ok {
		sc.Quit()
		return all(Permanent, 553, smtpstatus.NonASCIIAddress, h.name+" does not support SMTPUTF8, needed for a non-ASCII address"), nil, false
	}
	if max, ok := sc.MaxMessageSize(); ok && max > 0 && len(job.Data) > max {
		sc.Quit()
		return all(Permanent, 552, smtpstatus.MessageTooBig, fmt.Sprintf("message size %d exceeds the limit %d of %s", len(job.Data), max, h.name)), nil, false
	}
	if aerr := requireTLSNextHop(sc, job, h); aerr != nil {
		return nil, aerr, false // a reused connection to a next hop without REQUIRETLS
	}
	mo := &smtp.MailOptions{Size: int64(len(job.Data)), UTF8: utf8, EnvelopeID: job.EnvID, RequireTLS: job.RequireTLS}
	switch strings.ToUpper(job.Ret) {
	case "FULL":
		mo.Return = smtp.DSNReturnFull
	case "HDRS":
		mo.Return = smtp.DSNReturnHeaders
	}
	if err := sc.Mail(job.From, mo); err != nil {
		if se, ok := asSMTP(err); ok {
			st, code, enh := classify(se)
			return all(st, code, enh, se.Message), nil, false
		}
		return nil, c.connErr(h, "MAIL", err), false
	}
	var accepted []int
	for i, r := range job.Rcpts {
		err := sc.Rcpt(r.Addr, rcptOptions(r))
		if err == nil {
			accepted = append(accepted, i)
			continue
		}
		if se, ok := asSMTP(err); ok {
			res[i].Status, res[i].Code, res[i].Enhanced = classify(se)
			res[i].Text = se.Message
			continue
		}
		// Nothing was sent yet: the next host can have the whole job.
		return nil, c.connErr(h, "RCPT", err), false
	}
	if len(accepted) == 0 {
		sc.Quit()
		return res, nil, false
	}
	some := func(st Status, code int, enh smtpstatus.Code, text string) []Result {
		for _, i := range accepted {
			res[i].Status, res[i].Code, res[i].Enhanced, res[i].Text = st, code, enh, text
		}
		return res
	}
	w, err := sc.Data()
	if err != nil {
		if se, ok := asSMTP(err); ok {
			st, code, enh := classify(se)
			return some(st, code, enh, se.Message), nil, false
		}
		return nil, c.connErr(h, "DATA", err), false
	}
	if err := writeData(w, bw, job.Data); err != nil {
		return some(Temporary, 451, smtpstatus.BadConnection, fmt.Sprintf("connection to %s lost during DATA: %v", h.name, unwrapNet(err))), nil, false
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		if se, ok := asSMTP(err); ok {
			st, code, enh := classify(se)
			return some(st, code, enh, se.Message), nil, code != 421
		}
		// The message may or may not have been taken: retrying risks a
		// duplicate, not retrying risks a loss. Retry.
		return some(Temporary, 451, smtpstatus.BadConnection, fmt.Sprintf("connection to %s lost after DATA: %v", h.name, unwrapNet(err))), nil, false
	}
	text := "ok"
	if resp != nil && resp.StatusText != "" {
		text = resp.StatusText
	}
	res = some(Delivered, 250, smtpstatus.OK, text)
	if ok, _ := sc.Extension("DSN"); !ok {
		for _, i := range accepted {
			res[i].NoDSN = true
		}
	}
	return res, nil, true
}

// writeData writes the message through the DataCommand w, whose writer
// is under bw: dot-stuffed straight to bw when it is CRLF-clean, through
// w's DotWriter byte by byte otherwise.
func writeData(w io.Writer, bw *batchConn, data []byte) error {
	if stuffable(data) {
		tail, err := writeStuffed(bw, data)
		if err != nil {
			return err
		}
		data = tail
	}
	_, err := w.Write(data)
	return err
}

func rcptOptions(r Rcpt) *smtp.RcptOptions {
	o := &smtp.RcptOptions{}
	for _, n := range r.Notify {
		o.Notify = append(o.Notify, smtp.DSNNotify(strings.ToUpper(n)))
	}
	if r.ORCPT != "" {
		typ, addr, ok := strings.Cut(r.ORCPT, ";")
		if ok && addr != "" {
			switch strings.ToLower(typ) {
			case "rfc822":
				if isASCII(addr) {
					o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeRFC822, addr
				}
			case "utf-8":
				o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeUTF8, addr
			}
		}
	}
	if len(o.Notify) == 0 && o.OriginalRecipient == "" {
		return nil
	}
	return o
}

// connErr turns a failure before the transaction had results into an
// attemptError.
func (c *Client) connErr(h host, stage string, err error) *attemptError {
	if se, ok := asSMTP(err); ok {
		_, code, enh := classify(se)
		// A server that refuses us at greeting/EHLO/MAIL level is tried
		// again later (or the next MX now): record its reply.
		if code >= 500 {
			code, enh = 451, smtpstatus.TempNetwork
		}
		return &attemptError{code: code, enhanced: enh, host: h.name,
			text: fmt.Sprintf("%s at %s: %d %s", stage, h.name, se.Code, ReplyText(se.Message))}
	}
	return &attemptError{code: 451, enhanced: smtpstatus.BadConnection, text: fmt.Sprintf("%s at %s: %v", stage, h.name, unwrapNet(err))}
}

func asSMTP(err error) (*smtp.SMTPError, bool) {
	var se *smtp.SMTPError
	if errors.As(err, &se) && se.Code >= 200 {
		return se, true
	}
	return nil, false
}

// classify maps a reply to a status and its codes, filling in an enhanced
// code when the server gave none.
func classify(se *smtp.SMTPError) (Status, int, smtpstatus.Code) {
	enh, _ := smtpstatus.FromSMTP(se.EnhancedCode)
	switch {
	case se.Code >= 500:
		if enh == "" || enh[0] != '5' {
			enh = smtpstatus.PermUndefined
		}
		return Permanent, se.Code, enh
	case se.Code >= 400:
		if enh == "" || enh[0] != '4' {
			enh = smtpstatus.TempUndefined
		}
		return Temporary, se.Code, enh
	case se.Code >= 200 && se.Code < 300:
		if enh == "" {
			enh = smtpstatus.OK
		}
		return Delivered, se.Code, enh
	}
	return Temporary, 451, smtpstatus.TempUndefined
}

func unwrapNet(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
