package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/postern/postern/shared/atomicfile"
)

// sink is the loopback mail server every dev delivery ends at.
type sink struct {
	srv  *smtp.Server
	addr string
	dir  string
	out  io.Writer // one line per message
	done chan error

	mu   sync.Mutex
	next int
}

func (s *sink) Addr() string                 { return s.addr }
func (s *sink) Done() <-chan error           { return s.done }
func (s *sink) Shutdown(ctx context.Context) { _ = s.srv.Shutdown(ctx) }

// startSink listens on addr and saves messages in dir, numbering on from
// the highest <n>.eml already there (data persists across runs).
func startSink(addr, dir string, out io.Writer, log *slog.Logger) (*sink, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	s := &sink{dir: dir, out: out, done: make(chan error, 1), next: highest(dir) + 1}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	s.addr = l.Addr().String()
	s.srv = smtp.NewServer(s)
	s.srv.Domain = "sink.devlab.invalid"
	s.srv.MaxMessageBytes = 64 << 20
	s.srv.MaxRecipients = 1000
	s.srv.ReadTimeout = time.Minute
	s.srv.WriteTimeout = time.Minute
	s.srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	go func() {
		err := s.srv.Serve(l)
		if errors.Is(err, smtp.ErrServerClosed) {
			err = nil
		}
		s.done <- err
	}()
	return s, nil
}

// highest is the largest n of the <n>.eml files in dir, or 0.
func highest(dir string) int {
	ents, _ := os.ReadDir(dir)
	n := 0
	for _, e := range ents {
		if v, err := strconv.Atoi(strings.TrimSuffix(e.Name(), ".eml")); err == nil && strings.HasSuffix(e.Name(), ".eml") && v > n {
			n = v
		}
	}
	return n
}

// NewSession implements smtp.Backend.
func (s *sink) NewSession(*smtp.Conn) (smtp.Session, error) { return &session{sink: s}, nil }

type session struct {
	sink *sink
	from string
	to   []string
}

func (x *session) Mail(from string, _ *smtp.MailOptions) error {
	x.from, x.to = from, nil
	return nil
}

// Rcpt refuses local parts starting with "bounce", so a dev run can show
// an NDR.
func (x *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.HasPrefix(strings.ToLower(to), "bounce") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user here (devlab refuses bounce* recipients)"}
	}
	x.to = append(x.to, to)
	return nil
}

func (x *session) Data(r io.Reader) error {
	body, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	path, err := x.sink.save(x.from, x.to, body)
	if err != nil {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "cannot save: " + err.Error()}
	}
	from := x.from
	if from == "" {
		from = "<>"
	}
	fmt.Fprintf(x.sink.out, "sink: got message from %s to %s, saved %s\n", from, strings.Join(x.to, ","), path)
	return nil
}

func (x *session) Reset()        { x.from, x.to = "", nil }
func (x *session) Logout() error { return nil }

// save writes the message with Return-Path and Delivered-To in front (as a
// delivery agent would) to a temporary file and renames it into place, so
// a reader never sees half a message.
func (s *sink) save(from string, to []string, body []byte) (string, error) {
	s.mu.Lock()
	n := s.next
	s.next++
	s.mu.Unlock()
	var b bytes.Buffer
	fmt.Fprintf(&b, "Return-Path: <%s>\r\n", from)
	for _, t := range to {
		fmt.Fprintf(&b, "Delivered-To: %s\r\n", t)
	}
	b.Write(body)
	path := filepath.Join(s.dir, strconv.Itoa(n)+".eml")
	if err := atomicfile.Write(path, b.Bytes(), 0o640); err != nil {
		return "", err
	}
	return path, nil
}
