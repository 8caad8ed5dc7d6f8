package centralclient

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/postern/postern/shared/event"
)

// DefaultSummaryInterval is how often the delivery summary is reported.
const DefaultSummaryInterval = 5 * time.Minute

// TLSDetail maps an attempt's verification (delivery.Verif*) to the
// detail key of the delivery summary that counts messages delivered so
// protected. A verification not listed (none recorded, as for a message
// no server answered) is counted under "tls_unknown".
var TLSDetail = map[string]string{
	"plain":          "tls_plain",
	"tls_unverified": "tls_unverified",
	"tls_pkix":       "tls_pkix",
	"dane":           "tls_dane",
	"mta_sts":        "tls_mta_sts",
}

// TLSUnknown is the detail key for deliveries without a known verification.
const TLSUnknown = "tls_unknown"

// DeliverySummary counts, per device, the recipients the edge delivered
// for it and how the connections that carried them were protected, and
// reports them to central as one event.Delivery per device and interval.
// Central takes these reports as the evidence that this edge really
// relays for a device before it acts on the edge's word about the device
// (an undeliverable NDR). The zero value is ready to use.
type DeliverySummary struct {
	mu     sync.Mutex
	counts map[string]*deviceCount
}

type deviceCount struct {
	messages, recipients int
	tls                  map[string]int // by detail key (TLSDetail)
}

// Add records one message of device delivered to recipients recipients
// over a connection protected as verification says ("plain", "dane", …).
func (d *DeliverySummary) Add(device string, recipients int, verification string) {
	if device == "" || recipients <= 0 {
		return
	}
	key, ok := TLSDetail[verification]
	if !ok {
		key = TLSUnknown
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.counts == nil {
		d.counts = map[string]*deviceCount{}
	}
	c := d.counts[device]
	if c == nil {
		c = &deviceCount{tls: map[string]int{}}
		d.counts[device] = c
	}
	c.messages++
	c.recipients += recipients
	c.tls[key]++
}

// Flush emits one delivery event per device counted since the last Flush.
// Detail carries messages, recipients, since and, for each protection
// seen, its message count (tls_plain, tls_unverified, tls_pkix, tls_dane,
// tls_mta_sts, tls_unknown).
func (d *DeliverySummary) Flush(emit func(event.Event), since, now time.Time) {
	d.mu.Lock()
	counts := d.counts
	d.counts = nil
	d.mu.Unlock()
	for dev, c := range counts {
		detail := map[string]string{"messages": strconv.Itoa(c.messages), "recipients": strconv.Itoa(c.recipients),
			"since": since.UTC().Format(time.RFC3339)}
		for k, n := range c.tls {
			detail[k] = strconv.Itoa(n)
		}
		emit(event.Event{Kind: event.Delivery, Time: now, Device: dev, Count: c.recipients,
			Reason: "delivery summary", Detail: detail})
	}
}

// summaryLoop reports the delivery summary every SummaryInterval, and once
// more when ctx ends.
func (c *Client) summaryLoop(ctx context.Context) {
	if c.o.Deliveries == nil {
		return
	}
	tick, stop := c.clock.Ticker(c.o.SummaryInterval)
	defer stop()
	since := c.clock.Now()
	for {
		select {
		case <-ctx.Done():
			c.o.Deliveries.Flush(c.o.Outbox.Emit, since, c.clock.Now())
			return
		case <-tick:
		}
		now := c.clock.Now()
		c.o.Deliveries.Flush(c.o.Outbox.Emit, since, now)
		since = now
	}
}
