package spool

import (
	"time"

	"github.com/postern/postern/shared/smtpstatus"
)

// RcptState is where one recipient of a message stands.
type RcptState uint8

const (
	// Pending recipients still need a delivery attempt.
	Pending RcptState = iota
	// Delivered recipients were accepted by the next hop (final).
	Delivered
	// Failed recipients were refused permanently or expired (final); an
	// NDR has been (or is being) generated for them.
	Failed
)

func (s RcptState) String() string {
	switch s {
	case Pending:
		return "pending"
	case Delivered:
		return "delivered"
	case Failed:
		return "failed"
	}
	return "unknown"
}

// Final reports whether no more delivery attempts are due for the state.
func (s RcptState) Final() bool { return s == Delivered || s == Failed }

// Recipient is one envelope recipient with its delivery state.
type Recipient struct {
	Addr string `json:"addr"`
	// DSN parameters given at RCPT (RFC 3461): NOTIFY values and ORCPT.
	Notify []string `json:"notify,omitempty"`
	ORCPT  string   `json:"orcpt,omitempty"`

	State RcptState `json:"state"`
	// Last result from the next hop (or from routing) for this recipient.
	Code         int             `json:"code,omitempty"`
	EnhancedCode smtpstatus.Code `json:"enhanced,omitempty"` // e.g. "5.1.1"
	Reply        string          `json:"reply,omitempty"`
	RemoteMTA    string          `json:"remote_mta,omitempty"`
	UpdatedAt    time.Time       `json:"updated_at,omitempty"`
	// DelayWarned is set once a delay warning DSN was sent for it.
	DelayWarned bool `json:"delay_warned,omitempty"`
}

// Attempt records one delivery attempt (for queue show).
type Attempt struct {
	At     time.Time `json:"at"`
	Host   string    `json:"host,omitempty"`
	TLS    string    `json:"tls,omitempty"` // e.g. "TLS1.3" or "" for plaintext
	Result string    `json:"result"`

	// Verification is how TLS was verified: plain, tls_unverified,
	// tls_pkix, dane, mta_sts, or tls_failed when the required TLS could
	// not be had (delivery.Verif*).
	Verification string `json:"verification,omitempty"`
	// TLSNote explains a TLS failure (recorded, not fatal, under MTA-STS
	// testing mode; the cause of a tls_failed deferral).
	TLSNote string `json:"tls_note,omitempty"`
}

// Envelope is everything the edge knows about a spooled message except its
// bytes. It is small so that a due-scan never reads message bodies.
type Envelope struct {
	ID   string `json:"id"`   // queue id, time-ordered, printable
	From string `json:"from"` // "" is the null sender (NDRs)

	Recipients []Recipient `json:"rcpts"`

	// Who handed it to us.
	ClientIP   string `json:"client_ip,omitempty"`
	ClientName string `json:"client_name,omitempty"` // FCrDNS name, if confirmed
	Device     string `json:"device,omitempty"`      // registered device name, if any
	Helo       string `json:"helo,omitempty"`
	TLS        string `json:"tls,omitempty"` // intake TLS version/cipher, if used

	// DSN parameters from MAIL (RFC 3461).
	DSNRet   string `json:"dsn_ret,omitempty"` // "FULL" or "HDRS"
	DSNEnvID string `json:"dsn_envid,omitempty"`
	// RequireTLS: MAIL FROM had REQUIRETLS (RFC 8689); delivery needs
	// authenticated TLS to a next hop that offers REQUIRETLS.
	RequireTLS bool `json:"require_tls,omitempty"`
	// Bounce marks an NDR we generated: it is never bounced itself.
	Bounce bool `json:"bounce,omitempty"`
	// BounceFor is the device whose sender this NDR goes to (suspension).
	BounceFor string `json:"bounce_for,omitempty"`

	ReceivedAt  time.Time `json:"received_at"`
	NextAttempt time.Time `json:"next_attempt"`
	Attempts    int       `json:"attempts"`
	History     []Attempt `json:"history,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	Held        bool      `json:"held,omitempty"`
	Size        int64     `json:"size"`
}

// Done reports whether every recipient is final.
func (e *Envelope) Done() bool {
	for _, r := range e.Recipients {
		if !r.State.Final() {
			return false
		}
	}
	return true
}
