package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/postern/postern/edge/centralclient"
	"github.com/postern/postern/edge/config"
	"github.com/postern/postern/edge/enroll"
)

// enrollMain implements `postern-edge enroll -central URL -token T`: it
// redeems the one-time token at central and writes the answer (edge id,
// broker address and credentials, allowlist public key, initial settings)
// to <data_dir>/enrolment.json with mode 0600.
func enrollMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("enroll", flag.ContinueOnError)
	fs.SetOutput(stderr)
	central := fs.String("central", "", "central's base URL, e.g. https://postern.example.edu")
	token := fs.String("token", "", "the one-time enrolment token staff created for this edge")
	caFile := fs.String("ca", "", "PEM file of the CA that signed central's certificate (default: system roots)")
	cfgPath := fs.String("config", "", "configuration file (TOML), for data_dir")
	dev := fs.Bool("dev", false, "use developer defaults (./data)")
	force := fs.Bool("force", false, "replace an existing enrolment")
	allowHTTP := fs.Bool("allow-http", false, "accept a plain http:// central URL on a loopback address (development only)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *central == "" || *token == "" {
		fmt.Fprintln(stderr, "enroll: -central URL and -token T are required")
		return 2
	}
	cfg, err := config.Load(*cfgPath, *dev)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if _, err := enroll.Load(cfg.DataDir); err == nil && !*force {
		fmt.Fprintf(stderr, "enroll: this edge is already enrolled (%s); use -force to replace it\n", filepath.Join(cfg.DataDir, enroll.FileName))
		return 1
	}
	if err := enroll.CheckCentralURL(*central, *allowHTTP); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	var tlsConf *tls.Config
	var caPEM []byte
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fmt.Fprintln(stderr, "enroll:", err)
			return 1
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fmt.Fprintf(stderr, "enroll: no certificate in %s\n", *caFile)
			return 1
		}
		tlsConf = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		caPEM = pem
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := enroll.Enroll(ctx, centralclient.NewHTTPClient(tlsConf), *central, *token, *allowHTTP)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// Kept for the MQTT TLS connection and the HTTPS snapshot fetch.
	st.CAPEM = string(caPEM)
	if err := enroll.Save(cfg.DataDir, st); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "enrolled as edge %q; broker %s; settings in %s\nstart (or restart) the edge: it now syncs with central\n",
		st.EdgeID, st.MQTTURL, filepath.Join(cfg.DataDir, enroll.FileName))
	return 0
}
