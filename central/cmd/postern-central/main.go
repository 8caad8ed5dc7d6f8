// Command postern-central is the Postern central service: device
// registration, the staff console and API, and the signed allowlist that
// every edge enforces.
//
//	postern-central serve [-config FILE] [-dev] run the central service
//	postern-central check-config -config FILE   validate a configuration file
//	postern-central version                      print the version
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

	"github.com/postern/postern/central/app"
	"github.com/postern/postern/central/cli"
	"github.com/postern/postern/central/config"
	"github.com/postern/postern/shared/logging"
	"github.com/postern/postern/shared/version"
)

const usage = `usage: postern-central <command> [flags]

commands:
  serve         run the central service (flags: -config FILE, -dev)
  check-config  validate a configuration file (flags: -config FILE, -dev)
  version       print the version
` + cli.Usage

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
		fmt.Fprintln(stdout, "postern-central", version.String())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	case "device", "user", "edge":
		return cli.Main(args, os.Stdin, stdout, stderr)
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
	case "serve", "run":
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
		log.Info("postern-central starting", "version", version.String(), "config", *cfgPath)
		if err := app.Serve(ctx, cfg, log); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("postern-central failed", "err", err)
			return 1
		}
		log.Info("postern-central stopped")
		return 0
	}
	fmt.Fprintf(stderr, "unknown command %q\n%s", cmd, usage)
	return 2
}
