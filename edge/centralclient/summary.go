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

// DeliverySummary counts, per device, the recipients the edge delivered
// for it, and reports them to central as one event.Delivery per device and
// interval. Central takes these reports as the evidence that this edge
// really relays for a device before it acts on the edge's word about the
// device (an undeliverable NDR). The zero value is ready to use.
type DeliverySummary struct {
	mu     sync.Mutex
	counts map[string]*deviceCount
}

type deviceCount struct {
	messages, recipients int
}

// Add records one message of device delivered to recipients recipients.
func (d *DeliverySummary) Add(device string, recipients int) {
	if device == "" || recipients <= 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.counts == nil {
		d.counts = map[string]*deviceCount{}
	}
	c := d.counts[device]
	if c == nil {
		c = &deviceCount{}
		d.counts[device] = c
	}
	c.messages++
	c.recipients += recipients
}

// Flush emits one delivery event per device counted since the last Flush.
func (d *DeliverySummary) Flush(emit func(event.Event), since, now time.Time) {
	d.mu.Lock()
	counts := d.counts
	d.counts = nil
	d.mu.Unlock()
	for dev, c := range counts {
		emit(event.Event{Kind: event.Delivery, Time: now, Device: dev, Count: c.recipients,
			Reason: "delivery summary",
			Detail: map[string]string{"messages": strconv.Itoa(c.messages), "recipients": strconv.Itoa(c.recipients),
				"since": since.UTC().Format(time.RFC3339)}})
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
