package tlsinfo

import (
	"crypto/tls"
	"testing"
)

func TestDescribe(t *testing.T) {
	if got := Describe(nil); got != "" {
		t.Errorf("Describe(nil) = %q, want empty", got)
	}
	st := &tls.ConnectionState{Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256}
	if got, want := Describe(st), "TLS1.3 TLS_AES_128_GCM_SHA256"; got != want {
		t.Errorf("Describe = %q, want %q", got, want)
	}
}

func TestOrNone(t *testing.T) {
	if got := OrNone(""); got != "none" {
		t.Errorf("OrNone(\"\") = %q", got)
	}
	if got := OrNone("TLS1.2 X"); got != "TLS1.2 X" {
		t.Errorf("OrNone kept %q", got)
	}
}
