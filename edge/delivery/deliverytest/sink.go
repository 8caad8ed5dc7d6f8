// Package deliverytest provides real SMTP peers on loopback for tests of
// outbound delivery: go-smtp servers that accept, defer, refuse, drop the
// connection, answer slowly, offer or require STARTTLS, authenticate, and
// record exactly what they received. Nothing here is a mock: the client
// under test speaks SMTP over TCP to them.
package deliverytest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Message is one message a Sink accepted.
type Message struct {
	From   string
	To     []string
	Data   []byte
	TLS    bool   // received over TLS
	Helo   string // the client's EHLO name
	Ret    string // RET= from MAIL
	EnvID  string // ENVID= from MAIL
	Notify map[string][]string
	ORCPT  map[string]string // "type;addr" per recipient
	Auth   string            // authenticated user, if any
	// RequireTLS: MAIL FROM carried REQUIRETLS (RFC 8689).
	RequireTLS bool
	At         time.Time
}

// Behaviour decides how a Sink answers. Every field is optional; the zero
// value accepts everything.
type Behaviour struct {
	// Mail, when set, answers MAIL FROM with this error.
	Mail *smtp.SMTPError
	// Rcpt, when set, decides per recipient (nil accepts).
	Rcpt func(addr string) *smtp.SMTPError
	// Data, when set, is the final reply after the message (nil: 250).
	Data *smtp.SMTPError
	// DropInData closes the connection after reading part of the message.
	DropInData bool
	// Delay is waited before each MAIL, RCPT and DATA reply (a slow server).
	Delay time.Duration
	// RequireTLS refuses MAIL before STARTTLS (530 5.7.0).
	RequireTLS bool
	// User and Password enable AUTH PLAIN with these credentials.
	User, Password string
	// RequireAuth refuses MAIL before AUTH.
	RequireAuth bool
}

// Sink is a loopback SMTP server.
type Sink struct {
	// Addr is "ip:port".
	Addr string
	// Name is the host name the sink announces.
	Name string

	srv *smtp.Server
	ln  net.Listener

	mu       sync.Mutex
	b        Behaviour
	msgs     []Message
	sessions int
	notify   chan struct{}
}

// Options configure Start.
type Options struct {
	// Addr to listen on, e.g. "127.0.0.2:0" or "127.0.0.3:2525".
	Addr string
	// Name announced in the greeting (default "sink.test").
	Name string
	// TLS, when set, makes the sink offer STARTTLS.
	TLS       *tls.Config
	Behaviour Behaviour
	// NoDSN makes the sink not advertise DSN (RFC 3461).
	NoDSN bool
	// REQUIRETLS makes the sink advertise REQUIRETLS (RFC 8689) inside
	// TLS.
	REQUIRETLS bool
}

// Start runs a sink until the test ends.
func Start(t testing.TB, o Options) *Sink {
	t.Helper()
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.Name == "" {
		o.Name = "sink.test"
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		t.Fatalf("deliverytest: listen %s: %v", o.Addr, err)
	}
	s := &Sink{Addr: ln.Addr().String(), Name: o.Name, ln: ln, b: o.Behaviour, notify: make(chan struct{}, 1)}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		s.mu.Lock()
		s.sessions++
		s.mu.Unlock()
		return &session{s: s, c: c}, nil
	}))
	srv.Domain = o.Name
	srv.TLSConfig = o.TLS
	srv.EnableDSN = !o.NoDSN
	srv.EnableREQUIRETLS = o.REQUIRETLS
	srv.EnableSMTPUTF8 = true
	srv.AllowInsecureAuth = true
	srv.MaxMessageBytes = 64 << 20
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	srv.ErrorLog = nopLogger{}
	s.srv = srv
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}
func (nopLogger) Println(...any)        {}

// SetBehaviour changes how the sink answers from the next command on.
func (s *Sink) SetBehaviour(b Behaviour) {
	s.mu.Lock()
	s.b = b
	s.mu.Unlock()
}

// Messages returns a copy of what the sink accepted so far.
func (s *Sink) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Sessions is the number of connections the sink has seen.
func (s *Sink) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions
}

// Wait returns once the sink holds at least n messages, or fails the test
// after timeout.
func (s *Sink) Wait(t testing.TB, n int, timeout time.Duration) []Message {
	t.Helper()
	deadline := time.After(timeout)
	for {
		if m := s.Messages(); len(m) >= n {
			return m
		}
		select {
		case <-s.notify:
		case <-deadline:
			t.Fatalf("sink %s: %d messages after %v, want %d", s.Addr, len(s.Messages()), timeout, n)
		}
	}
}

// Close stops the sink (connections are refused from then on).
func (s *Sink) Close() { s.srv.Close() }

func (s *Sink) behaviour() Behaviour {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b
}

type session struct {
	s    *Sink
	c    *smtp.Conn
	msg  Message
	auth string
}

func (ss *session) tls() bool {
	_, ok := ss.c.TLSConnectionState()
	return ok
}

func (ss *session) AuthMechanisms() []string {
	if ss.s.behaviour().User == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	b := ss.s.behaviour()
	if b.User == "" || mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		if user != b.User || pass != b.Password {
			return smtp.ErrAuthFailed
		}
		ss.auth = user
		return nil
	}), nil
}

func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	b := ss.s.behaviour()
	time.Sleep(b.Delay)
	if b.RequireTLS && !ss.tls() {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Must issue a STARTTLS command first"}
	}
	if b.RequireAuth && ss.auth == "" {
		return smtp.ErrAuthRequired
	}
	if b.Mail != nil {
		return b.Mail
	}
	ss.msg = Message{From: from, TLS: ss.tls(), Helo: ss.c.Hostname(), Auth: ss.auth,
		Notify: map[string][]string{}, ORCPT: map[string]string{}}
	if opts != nil {
		ss.msg.Ret = string(opts.Return)
		ss.msg.EnvID = opts.EnvelopeID
		ss.msg.RequireTLS = opts.RequireTLS
	}
	return nil
}

func (ss *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	b := ss.s.behaviour()
	time.Sleep(b.Delay)
	if b.Rcpt != nil {
		if err := b.Rcpt(to); err != nil {
			return err
		}
	}
	ss.msg.To = append(ss.msg.To, to)
	if opts != nil {
		for _, n := range opts.Notify {
			ss.msg.Notify[to] = append(ss.msg.Notify[to], string(n))
		}
		if opts.OriginalRecipient != "" {
			ss.msg.ORCPT[to] = string(opts.OriginalRecipientType) + ";" + opts.OriginalRecipient
		}
	}
	return nil
}

func (ss *session) Data(r io.Reader) error {
	b := ss.s.behaviour()
	if b.DropInData {
		buf := make([]byte, 16)
		io.ReadFull(r, buf)
		ss.c.Conn().Close()
		return errors.New("dropped")
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return err
	}
	time.Sleep(b.Delay)
	if b.Data != nil {
		return b.Data
	}
	m := ss.msg
	m.Data = buf.Bytes()
	m.At = time.Now()
	ss.s.mu.Lock()
	ss.s.msgs = append(ss.s.msgs, m)
	ss.s.mu.Unlock()
	select {
	case ss.s.notify <- struct{}{}:
	default:
	}
	return nil
}

func (ss *session) Reset()        { ss.msg = Message{} }
func (ss *session) Logout() error { return nil }

// Certificate returns a server TLS configuration with a fresh certificate
// for names (DNS names or IP addresses) signed by a fresh CA, and a pool
// holding that CA for clients that verify.
func Certificate(t testing.TB, names ...string) (*tls.Config, *x509.CertPool) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "deliverytest CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			leaf.IPAddresses = append(leaf.IPAddresses, ip)
		} else {
			leaf.DNSNames = append(leaf.DNSNames, strings.TrimSuffix(n, "."))
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

// SharedPort returns a port number that is free on every given loopback
// IP, so several sinks can stand for several MX hosts reached on one
// delivery.mx_port.
func SharedPort(t testing.TB, ips ...string) int {
	t.Helper()
	for try := 0; try < 20; try++ {
		l, err := net.Listen("tcp", ips[0]+":0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		ok := true
		var held []net.Listener
		for _, ip := range ips[1:] {
			l2, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			held = append(held, l2)
		}
		l.Close()
		for _, h := range held {
			h.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("deliverytest: no port free on all of", ips)
	return 0
}
