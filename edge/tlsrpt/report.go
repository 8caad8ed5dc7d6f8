package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"mime"
	"strings"
	"time"
)

// Report is an aggregate report (RFC 8460 §4.4).
type Report struct {
	OrganizationName string         `json:"organization-name"`
	DateRange        DateRange      `json:"date-range"`
	ContactInfo      string         `json:"contact-info"`
	ReportID         string         `json:"report-id"`
	Policies         []PolicyResult `json:"policies"`
}

// DateRange is the period a report covers.
type DateRange struct {
	Start time.Time `json:"start-datetime"`
	End   time.Time `json:"end-datetime"`
}

// build makes the report of dom for the UTC day that starts at start.
func build(submitter, contact, dom string, start time.Time, policies []PolicyResult) Report {
	return Report{
		OrganizationName: submitter,
		DateRange:        DateRange{Start: start, End: start.Add(24*time.Hour - time.Second)},
		ContactInfo:      contact,
		ReportID:         fmt.Sprintf("%s.%s.%s@%s", start.Format(dayLayout), dom, randomHex(4), submitter),
		Policies:         policies,
	}
}

// gzipJSON is the report as the RFC sends it: gzip-compressed JSON.
func gzipJSON(r Report) ([]byte, error) {
	js, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write(js); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("tlsrpt: crypto/rand: %v", err))
	}
	return hex.EncodeToString(b)
}

// composeMail is the report as mail (RFC 8460 §5.3): a multipart/report
// of report-type "tlsrpt" with a short text and the gzip JSON attached as
// application/tlsrpt+gzip, the TLS-Report-Domain and
// TLS-Report-Submitter headers and the subject the RFC gives.
func composeMail(from, to, submitter, dom string, r Report, gz []byte, now time.Time) []byte {
	boundary := "tlsrpt-" + randomHex(12)
	file := fmt.Sprintf("%s!%s!%d!%d!%s.json.gz", submitter, dom, r.DateRange.Start.Unix(), r.DateRange.End.Unix(), randomHex(4))
	var b strings.Builder
	h := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	h("From", "<"+from+">")
	h("To", "<"+to+">")
	h("Date", now.UTC().Format(time.RFC1123Z))
	h("Message-ID", "<"+randomHex(12)+"@"+submitter+">")
	h("Subject", fmt.Sprintf("Report Domain: %s Submitter: %s Report-ID: <%s>", dom, submitter, r.ReportID))
	h("TLS-Report-Domain", dom)
	h("TLS-Report-Submitter", submitter)
	h("Auto-Submitted", "auto-generated")
	h("MIME-Version", "1.0")
	h("Content-Type", mime.FormatMediaType("multipart/report", map[string]string{"report-type": "tlsrpt", "boundary": boundary}))
	b.WriteString("\r\n")
	b.WriteString("--" + boundary + "\r\n")
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\n")
	fmt.Fprintf(&b, "This is an aggregate TLS report (RFC 8460) from %s about the TLS of its\r\n"+
		"connections to the mail servers of %s from %s to %s.\r\n\r\n",
		submitter, dom, r.DateRange.Start.Format(time.RFC3339), r.DateRange.End.Format(time.RFC3339))
	b.WriteString("--" + boundary + "\r\n")
	b.WriteString("Content-Type: application/tlsrpt+gzip\r\n")
	b.WriteString("Content-Transfer-Encoding: base64\r\n")
	b.WriteString(`Content-Disposition: attachment; filename="` + file + "\"\r\n\r\n")
	enc := base64.StdEncoding.EncodeToString(gz)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	b.WriteString("--" + boundary + "--\r\n")
	return []byte(b.String())
}
