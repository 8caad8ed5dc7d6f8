// Command postern-devlab is the rest of the world for a developer run
// (`make run`): a DNS server and a mail sink, both on loopback, so that a
// dev edge and a dev central never send a packet beyond 127.0.0.0/8.
//
//	postern-devlab [-dns 127.0.0.1:5354] [-smtp 127.0.0.1:2526] [-sink data/sink]
//
// The DNS server (UDP and TCP on one port) answers for the dev zone only
// (see zone.go): example.edu and its devices with forward-confirmed reverse
// DNS, and a catch-all for the external test domains example.com,
// example.org and example.net, all pointing at loopback. Every other name is
// NXDOMAIN, so nothing ever resolves to a real host.
//
// The sink (sink.go) accepts every message, except for recipients whose
// local part starts with "bounce" (550 5.1.1, to make the edge send an
// NDR), and saves each message as <sink>/<n>.eml with the envelope in
// Return-Path and Delivered-To headers, logging one line per message.
//
// It stops on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// The addresses the -dev defaults of both programs point at
// (edge/config, central/config).
const (
	defaultDNS  = "127.0.0.1:5354"
	defaultSMTP = "127.0.0.1:2526"
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stderr))
}

func realMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("postern-devlab", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dnsAddr := fs.String("dns", defaultDNS, "DNS listen address (UDP and TCP)")
	smtpAddr := fs.String("smtp", defaultSMTP, "mail sink listen address")
	sinkDir := fs.String("sink", "data/sink", "folder the sink saves messages in")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	d, err := startDNS(*dnsAddr, log)
	if err != nil {
		fmt.Fprintln(stderr, "devlab:", err)
		return 1
	}
	s, err := startSink(*smtpAddr, *sinkDir, stderr, log)
	if err != nil {
		d.Close()
		fmt.Fprintln(stderr, "devlab:", err)
		return 1
	}
	log.Info("devlab ready", "dns", d.Addr(), "sink", s.Addr(), "sink_dir", *sinkDir)
	select {
	case <-ctx.Done():
	case err = <-s.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	s.Shutdown(sctx)
	d.Close()
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(stderr, "devlab:", err)
		return 1
	}
	log.Info("devlab stopped")
	return 0
}
