// Package smtpd is the edge's SMTP intake: the listeners devices talk to,
// built on emersion/go-smtp. It applies the relay policy (edge/policy) at
// MAIL and RCPT, checks the message at the end of DATA (line endings, size,
// From header), adds a Received header and stores the message in the spool.
//
// Guarantees:
//   - "250" after DATA is sent only after spool.Put returned, that is after
//     the message and its envelope are on disk (fsynced); a full disk
//     answers 452 4.3.1, another spool error 451 4.3.0.
//   - Clients outside smtp.local_networks are refused at connect (554 5.7.1)
//     and again at MAIL; nothing they send is stored.
//   - A message with a bare LF or bare CR line ending (SMTP smuggling,
//     CVE-2023-51766 class) is refused with 550 5.5.2, never stored.
//   - Plaintext pipelined after STARTTLS is discarded (go-smtp drops its
//     read buffer when it switches to TLS; tested).
//   - Connection limits in total and per IP (421 4.7.0; an IPv6 client is
//     counted by its smtp.ipv6_prefix_length prefix), a limit on errors
//     per connection, command and data timeouts (DATA and BDAT alike), a
//     maximum session length (421 4.4.2) and number of messages per
//     connection (421 4.7.0).
//   - Bounded memory: every message reserves its declared SIZE (or
//     smtp.max_message_size) from one budget of smtp.max_inflight_bytes
//     when its data starts, and its buffer never outgrows what it
//     reserved; over the budget the edge answers 452 4.3.1. However many
//     connections a client opens, the message bytes in memory stay within
//     the budget.
//   - CHUNKING (BDAT): go-smtp runs Data for a chunked message in a
//     goroutine of its own that can outlive the transaction. Data always
//     reads the chunks to their end, and a transaction that is reset while
//     a chunked message may be open ends the connection (421 4.5.0 to
//     anything after), so no later transaction on the connection can be
//     answered with that message's result.
//   - Every log line about a message carries queue_id, client_ip and device.
package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/postern/postern/edge/config"
	"github.com/postern/postern/edge/policy"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/clock"
	"github.com/postern/postern/shared/event"
)

// Spool stores accepted messages (*spool.Spool).
type Spool interface {
	NewID() string
	Put(ctx context.Context, env *spool.Envelope, data []byte) error
}

// Metrics counts intake outcomes.
type Metrics interface {
	IncReceived()
	IncRefused(reason string)
}

// countRefused counts one refusal in the intake's counters and metrics.
func (s *Server) countRefused(r *policy.Reply) {
	s.refused.Add(1)
	if s.opts.Metrics != nil {
		s.opts.Metrics.IncRefused(r.Reason)
	}
}

// DNS answers the two questions the policy needs DNS for. NewDNS adapts
// the shared resolver.
type DNS interface {
	// Identify runs forward-confirmed reverse DNS for ip.
	Identify(ctx context.Context, ip netip.Addr) policy.Identity
	// MailDomain says whether a sender domain can receive mail.
	MailDomain(ctx context.Context, domain string) policy.DomainStatus
}

// Events receives the intake's events (refusals, rate-limit hits, TLS use);
// the sync stage's outbox implements it. A nil Events drops them.
type Events interface{ Emit(event.Event) }

// Options configures a Server.
type Options struct {
	// Hostname is used in the banner and Received headers.
	Hostname string
	// EdgeID names the edge in events (sync.edge_id). Empty leaves the
	// field to the outbox, which fills in its own edge id.
	EdgeID string
	SMTP   config.SMTP
	// TLS is the configuration for STARTTLS and implicit-TLS listeners
	// (see TLSConfig). Nil disables both.
	TLS    *tls.Config
	Policy *policy.Policy
	DNS    DNS
	Spool  Spool
	Events Events
	// Metrics counts accepted messages and refusals (*metrics.Metrics);
	// nil counts nothing.
	Metrics Metrics
	Log     *slog.Logger
	// Clock stamps envelopes and events and paces event reports
	// (default clock.Real).
	Clock clock.Clock
	// ReportInterval is how often aggregated events are flushed
	// (default one minute).
	ReportInterval time.Duration
}

// Server is the running intake.
type Server struct {
	opts   Options
	pol    *policy.Policy
	log    *slog.Logger
	clock  func() time.Time
	gate   *gate
	smtp   *smtp.Server
	report *reporter
	budget *budget

	mu        sync.Mutex
	listeners []net.Listener
	serving   sync.WaitGroup
	inflight  sync.WaitGroup // DATA handlers (spool writes) in progress
	accepted  atomic.Uint64
	refused   atomic.Uint64
	closed    bool
	ctx       context.Context
	cancel    context.CancelFunc
}

// New validates opts and returns a server that is not yet listening.
func New(opts Options) (*Server, error) {
	if opts.Policy == nil || opts.DNS == nil || opts.Spool == nil {
		return nil, errors.New("smtpd: Policy, DNS and Spool are required")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real
	}
	if opts.ReportInterval <= 0 {
		opts.ReportInterval = time.Minute
	}
	if opts.SMTP.MaxConnections < 1 || opts.SMTP.MaxConnectionsIP < 1 || opts.SMTP.MaxErrors < 1 || opts.SMTP.MaxTransactions < 1 {
		return nil, errors.New("smtpd: connection, error and transaction limits must be at least 1")
	}
	if opts.SMTP.MaxSessionDuration <= 0 {
		return nil, errors.New("smtpd: smtp.max_session_duration must be positive")
	}
	if opts.SMTP.MaxInflightBytes < opts.SMTP.MaxMessageSize {
		return nil, errors.New("smtpd: smtp.max_inflight_bytes must be at least smtp.max_message_size")
	}
	if len(opts.SMTP.TLSListen) > 0 && opts.TLS == nil {
		return nil, errors.New("smtpd: smtp.tls_listen needs a TLS configuration")
	}
	s := &Server{
		opts:   opts,
		pol:    opts.Policy,
		log:    opts.Log,
		clock:  opts.Clock.Now,
		gate:   newGate(opts.SMTP.MaxConnections, opts.SMTP.MaxConnectionsIP, opts.SMTP.IPv6PrefixLength),
		report: newReporter(opts.Events, opts.EdgeID, opts.Clock),
		budget: &budget{max: opts.SMTP.MaxInflightBytes},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())

	srv := smtp.NewServer(backend{s})
	srv.Domain = opts.Hostname
	srv.TLSConfig = opts.TLS
	srv.MaxMessageBytes = opts.SMTP.MaxMessageSize
	// The recipient limit is the policy's (one place for refusal texts).
	srv.MaxRecipients = 0
	srv.MaxLineLength = opts.SMTP.MaxLineLength
	srv.ReadTimeout = opts.SMTP.CommandTimeout
	srv.WriteTimeout = opts.SMTP.CommandTimeout
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	// REQUIRETLS (RFC 8689): go-smtp advertises it only after STARTTLS;
	// Mail refuses it on a connection without TLS.
	srv.EnableREQUIRETLS = true
	srv.ErrorLog = slogWriter{opts.Log}
	s.smtp = srv
	return s, nil
}

// Listen binds every configured listener. It fails (and binds nothing) if
// any address cannot be bound.
func (s *Server) Listen() error {
	var ls []net.Listener
	fail := func(err error) error {
		for _, l := range ls {
			l.Close()
		}
		return err
	}
	for _, a := range s.opts.SMTP.Listen {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return fail(fmt.Errorf("smtpd: listen %s: %w", a, err))
		}
		ls = append(ls, &gatedListener{Listener: l, srv: s})
	}
	for _, a := range s.opts.SMTP.TLSListen {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return fail(fmt.Errorf("smtpd: listen (TLS) %s: %w", a, err))
		}
		g := &gatedListener{Listener: l, srv: s, tlsConf: s.opts.TLS}
		ls = append(ls, tls.NewListener(g, s.opts.TLS))
	}
	s.mu.Lock()
	s.listeners = append(s.listeners, ls...)
	s.mu.Unlock()
	return nil
}

// Addrs returns the bound addresses: plain listeners first, then
// implicit-TLS ones, in configuration order.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]net.Addr, len(s.listeners))
	for i, l := range s.listeners {
		out[i] = l.Addr()
	}
	return out
}

// Serve serves the bound listeners (Listen first) until ctx is cancelled,
// then closes them and every connection, waits for DATA handlers that are
// writing to the spool, and flushes pending events.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	ls := append([]net.Listener(nil), s.listeners...)
	s.mu.Unlock()
	if len(ls) == 0 {
		return errors.New("smtpd: no listeners (call Listen)")
	}
	errc := make(chan error, len(ls))
	for _, l := range ls {
		s.serving.Add(1)
		go func() {
			defer s.serving.Done()
			if err := s.smtp.Serve(l); err != nil {
				errc <- fmt.Errorf("smtpd: serve %s: %w", l.Addr(), err)
			}
		}()
	}
	repDone := make(chan struct{})
	go func() {
		defer close(repDone)
		s.report.run(s.ctx, s.opts.ReportInterval)
	}()
	s.log.Info("smtp listening", "addrs", fmt.Sprint(s.Addrs()))
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.Close()
	<-repDone
	return err
}

// Close stops accepting, closes every connection and waits until no DATA
// handler is writing to the spool any more, so the spool can be closed
// safely after it.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.inflight.Wait()
		return
	}
	s.closed = true
	s.mu.Unlock()
	s.smtp.Close()
	s.serving.Wait()
	s.inflight.Wait()
	s.cancel()
}

// RateLimitHits reports the limit hits since start (for metrics).
func (s *Server) RateLimitHits() uint64 { return s.report.rateHits.Load() }

// Stats are counters since start, for metrics.
type Stats struct {
	Accepted      uint64 // messages spooled (250 after DATA)
	Refused       uint64 // refusals (any 4xx/5xx the policy or checks gave)
	RateLimitHits uint64
	Connections   int // open connections now
	// InflightBytes is the message memory reserved at intake now.
	InflightBytes int64
}

// Stats returns the intake's counters.
func (s *Server) Stats() Stats {
	s.gate.mu.Lock()
	conns := s.gate.total
	s.gate.mu.Unlock()
	return Stats{
		Accepted:      s.accepted.Load(),
		Refused:       s.refused.Load(),
		RateLimitHits: s.report.rateHits.Load(),
		Connections:   conns,
		InflightBytes: s.budget.inUse(),
	}
}

// budget is the intake's memory budget for message bytes in flight.
type budget struct {
	max int64

	mu   sync.Mutex
	used int64
	peak int64
}

// reserve takes n bytes, or reports false (taking nothing) when that would
// exceed the budget.
func (b *budget) reserve(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n < 0 || b.used+n > b.max {
		return false
	}
	b.used += n
	b.peak = max(b.peak, b.used)
	return true
}

// fits reports whether n bytes could be reserved now (taking nothing).
func (b *budget) fits(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used+n <= b.max
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// maxUse is the most that was reserved at once since start.
func (b *budget) maxUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peak
}

func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}
