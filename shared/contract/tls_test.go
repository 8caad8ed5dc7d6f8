package contract_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/central/app"
	"github.com/postern/postern/central/broker"
	"github.com/postern/postern/central/broker/brokertest"
	"github.com/postern/postern/central/fleet"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/edge/centralclient"
	"github.com/postern/postern/edge/devices"
	"github.com/postern/postern/edge/enroll"
	"github.com/postern/postern/shared/testkit"
	"github.com/postern/postern/shared/topic"
)

// privateCA makes a CA and a server certificate for 127.0.0.1 signed by it.
func privateCA(t *testing.T) (caPEM []byte, server tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test private CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	must(t, err)
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "central"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	must(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestEdgeTrustsEnrolmentCA: with the broker (its own TLS settings) and
// central's HTTPS endpoint on a private CA, an edge that kept the CA given
// at enrolment connects over MQTT TLS and fetches the snapshot over HTTPS;
// without that CA (system roots) it reaches neither.
func TestEdgeTrustsEnrolmentCA(t *testing.T) {
	caPEM, cert := privateCA(t)
	st := openStore(t)
	ctx := context.Background()
	ad := fleet.Store{S: st}
	b, err := broker.Start(broker.Options{Listen: "127.0.0.1:0", TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		Topics: topic.New(""), CentralClientID: brokertest.CentralID, Edges: ad})
	must(t, err)
	defer b.Close()
	url := "tls://" + b.Addr().String()
	reg := &registration.Service{Store: st}
	svc, err := fleet.New(fleet.Options{BrokerURL: "tcp://inproc", Dial: b.Dial, ClientID: brokertest.CentralID, Key: signKey,
		Source: ad, Events: ad, Status: ad, Enrol: ad, Auth: ad, Suspender: reg, Gate: ad})
	must(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = svc.Run(runCtx) }()
	defer func() { cancel(); <-done }()
	testkit.WaitFor(t, 5*time.Second, "snapshot published", func() bool { return svc.Stats().Published > 0 })
	srv := httptest.NewUnstartedServer(svc.Handler())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()

	must(t, app.CheckEdgeMQTTURL(url, false))
	if err := app.CheckEdgeMQTTURL("tcp://central.example.edu:1883", false); err == nil || !strings.Contains(err.Error(), "mqtt.allow_plaintext_edges") {
		t.Fatalf("plaintext non-loopback URL: %v", err)
	}
	must(t, app.CheckEdgeMQTTURL("tcp://central.example.edu:1883", true))
	must(t, app.CheckEdgeMQTTURL("tcp://127.0.0.1:1883", false))

	const pw = "pw-edge-tls-0123456789abcdef"
	enrolEdgeWith(t, st, "edge-tls", broker.HashPassword(pw))
	connect := func(state enroll.State) (*centralclient.Client, func()) {
		tlsConf, err := state.TLSConfig()
		must(t, err)
		sp, _ := openSpool(t)
		reg, _ := devices.New(nil, nil, nil)
		ob, _ := centralclient.NewOutbox(sp.KV("outbox/"), "edge-tls", 0, nil, nil)
		cl, err := centralclient.New(centralclient.Options{EdgeID: "edge-tls", BrokerURL: url, Password: pw, TLS: tlsConf,
			PublicKey: signKey.Public().(ed25519.PublicKey), Allow: sp.KV("allow/"), Outbox: ob, Registry: reg,
			CentralURL: srv.URL, HTTPClient: centralclient.NewHTTPClient(tlsConf), MaxReconnectInterval: 200 * time.Millisecond})
		must(t, err)
		c, stop := context.WithCancel(ctx)
		d := make(chan struct{})
		go func() { defer close(d); _ = cl.Run(c) }()
		return cl, func() { stop(); <-d }
	}
	good, stop := connect(enroll.State{CAPEM: string(caPEM)})
	testkit.WaitFor(t, 10*time.Second, "edge connected over TLS with the enrolment CA", good.Connected)
	must(t, good.Fetch(ctx))
	stop()

	bad, stop := connect(enroll.State{})
	defer stop()
	if err := bad.Fetch(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("fetch without the CA: %v", err)
	}
	time.Sleep(time.Second)
	if bad.Connected() {
		t.Fatal("edge connected over TLS without trusting the private CA")
	}
}
