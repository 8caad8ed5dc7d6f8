package fleet

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/postern/postern/shared/event"
)

// deliveryTLS lists the TLS counts a delivery summary may carry, in the
// order they are shown, with the words shown for them.
var deliveryTLS = []struct{ key, label string }{
	{"tls_dane", "DANE"},
	{"tls_mta_sts", "MTA-STS"},
	{"tls_pkix", "TLS verified (PKIX)"},
	{"tls_unverified", "TLS unverified"},
	{"tls_plain", "plaintext"},
	{"tls_unknown", "unknown"},
}

// maxSummaryCount bounds every count of a delivery summary: an edge
// delivers far fewer messages in an interval, a larger number is junk.
const maxSummaryCount = 1 << 30

// normaliseDelivery keeps only the detail of a delivery summary central
// knows (messages, recipients, since and the TLS counts), drops counts
// that are not numbers in range, drops the TLS counts altogether when
// they add up to more than the messages, and writes the reason from what
// is left ("delivery summary: 7 recipients in 5 messages; TLS: 3 DANE, 2
// plaintext"), so what the console, API and CLI show is central's reading
// of the numbers, not an edge's free text.
func normaliseDelivery(e *event.Event) {
	in := e.Detail
	out := map[string]string{}
	num := func(k string) (int, bool) {
		n, err := strconv.Atoi(in[k])
		if err != nil || n < 0 || n > maxSummaryCount {
			return 0, false
		}
		out[k] = strconv.Itoa(n)
		return n, true
	}
	msgs, okM := num("messages")
	rcpts, okR := num("recipients")
	if s := in["since"]; s != "" && len(s) <= 40 {
		out["since"] = s
	}
	var parts []string
	total := 0
	for _, t := range deliveryTLS {
		if n, ok := num(t.key); ok && n > 0 {
			total += n
			parts = append(parts, fmt.Sprintf("%d %s", n, t.label))
		} else {
			delete(out, t.key)
		}
	}
	if okM && total > msgs {
		for _, t := range deliveryTLS {
			delete(out, t.key)
		}
		parts = []string{"counts inconsistent, dropped"}
	}
	if len(out) == 0 {
		out = nil
	}
	e.Detail = out
	r := "delivery summary"
	switch {
	case okR && okM:
		r += fmt.Sprintf(": %d recipients in %d messages", rcpts, msgs)
	case okR:
		r += fmt.Sprintf(": %d recipients", rcpts)
	}
	if len(parts) > 0 {
		r += "; TLS: " + strings.Join(parts, ", ")
	}
	e.Reason = r
}
