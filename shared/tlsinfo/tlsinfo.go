// Package tlsinfo describes TLS connections in one format for logs,
// Received headers and queue history.
package tlsinfo

import (
	"crypto/tls"
	"strings"
)

// Describe returns the version and cipher suite without spaces inside the
// version, e.g. "TLS1.3 TLS_AES_128_GCM_SHA256"; "" for a plaintext
// connection (st == nil).
func Describe(st *tls.ConnectionState) string {
	if st == nil {
		return ""
	}
	return strings.ReplaceAll(tls.VersionName(st.Version), " ", "") + " " + tls.CipherSuiteName(st.CipherSuite)
}

// OrNone returns desc, or "none" when desc is empty, so a log line always
// carries a tls value.
func OrNone(desc string) string {
	if desc == "" {
		return "none"
	}
	return desc
}
