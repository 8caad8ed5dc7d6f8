// Command postern-edge is the Postern edge relay: it accepts mail from
// devices on local networks, applies the relay policy, spools it durably and
// delivers it.
//
//	postern-edge run [-config FILE] [-dev]   run the relay
//	postern-edge check-config -config FILE   validate a configuration file
//	postern-edge queue list|show|retry|...    operate the running daemon's queue
//	postern-edge version                      print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/postern/postern/edge/app"
	"github.com/postern/postern/edge/config"
	"github.com/postern/postern/edge/queuecli"
	"github.com/postern/postern/shared/logging"
	"github.com/postern/postern/shared/version"
)

const usage = `usage: postern-edge <command> [flags]

commands:
  run           run the relay (flags: -config FILE, -dev)
  check-config  validate a configuration file (flags: -config FILE, -dev)
  queue         list|show|retry|delete|hold|release queued mail (see queue help)
  enroll        join central (flags: -central https://URL -token T [-ca FILE] [-config FILE] [-dev] [-allow-http])
  version       print the version
`

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "postern-edge", version.String())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	case "queue":
		// Talks to the running daemon's admin endpoint; parses its own flags.
		return queuecli.Main(rest, stdout, stderr)
	case "enroll":
		return enrollMain(rest, stdout, stderr) // enroll.go
	}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (TOML)")
	dev := fs.Bool("dev", false, "use developer defaults (loopback ports, ./data)")
	if err := fs.Parse(rest); err != nil {
		return 2
	}
	switch cmd {
	case "check-config":
		if *cfgPath == "" && !*dev {
			fmt.Fprintln(stderr, "check-config: -config FILE is required")
			return 2
		}
		if _, err := config.Load(*cfgPath, *dev); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintln(stdout, "configuration OK")
		return 0
	case "run":
		cfg, err := config.Load(*cfgPath, *dev)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		log, err := logging.New(stderr, cfg.Log.Format, cfg.Log.Level)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		log.Info("postern-edge starting", "version", version.String(), "config", *cfgPath)
		// Give the heap's free pages back whenever a burst of mail ends, so
		// an idle edge stays small (the runtime alone keeps them).
		go app.ReleaseIdleMemory(ctx, log)
		if err := app.Run(ctx, cfg, log); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("postern-edge failed", "err", err)
			return 1
		}
		log.Info("postern-edge stopped")
		return 0
	}
	fmt.Fprintf(stderr, "unknown command %q\n%s", cmd, usage)
	return 2
}
