// Command postern-appliance is the process gokrazy starts on the Postern
// appliance image. It prepares the edge's configuration on the persistent
// partition (see package appliance: an existing /perm/postern-edge/edge.toml
// is used as is; at first boot one is copied from the image or generated;
// an enrolment token is redeemed once) and then replaces itself with
// `postern-edge run`, so gokrazy supervises the edge directly.
//
//	postern-appliance [-data /perm/postern-edge] [-seed /etc/postern] [-edge /user/postern-edge]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/postern/postern/firmware/appliance"
)

func main() {
	dataDir := flag.String("data", "/perm/postern-edge", "edge data folder on the persistent partition")
	seedDir := flag.String("seed", "/etc/postern", "read-only folder in the image with an optional edge.toml, enroll-token, central-url, central-ca.pem")
	edge := flag.String("edge", "/user/postern-edge", "the postern-edge binary")
	adminListen := flag.String("admin-listen", "0.0.0.0:9025", "admin endpoint written into a generated configuration")
	enrollTimeout := flag.Duration("enroll-timeout", 2*time.Minute, "how long one enrolment attempt may take")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("program", "postern-appliance")
	enroll := func(ctx context.Context, cfg, central, token, caFile string) error {
		ctx, cancel := context.WithTimeout(ctx, *enrollTimeout)
		defer cancel()
		args := []string{"enroll", "-config", cfg, "-central", central, "-token", token}
		if caFile != "" {
			args = append(args, "-ca", caFile)
		}
		cmd := exec.CommandContext(ctx, *edge, args...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s enroll: %w", *edge, err)
		}
		return nil
	}
	res, err := appliance.Prepare(context.Background(), appliance.Options{
		DataDir: *dataDir, SeedDir: *seedDir, AdminListen: *adminListen, Enroll: enroll, Log: log,
	})
	if err != nil {
		// gokrazy restarts us with a back-off: /perm may not be ready yet.
		log.Error("cannot prepare the edge", "err", err)
		os.Exit(1)
	}
	argv := []string{*edge, "run", "-config", res.ConfigPath}
	log.Info("starting postern-edge", "argv", fmt.Sprint(argv))
	err = syscall.Exec(*edge, argv, os.Environ())
	log.Error("cannot start postern-edge", "edge", *edge, "err", err)
	os.Exit(1)
}
