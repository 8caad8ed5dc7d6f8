package centralclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/postern/postern/shared/allowlist"
)

// SnapshotPath is central's HTTPS endpoint for the current snapshot (wire
// form). Edges authenticate with their MQTT username and password (HTTP
// Basic); the response carries an ETag, and If-None-Match gives 304.
const SnapshotPath = "/api/v1/sync/allowlist"

// maxSnapshotBytes bounds a fetched snapshot body.
const maxSnapshotBytes = 64 << 20

// NewHTTPClient returns the retrying HTTP client used for enrolment and
// snapshot fetches: 3 retries with backoff, 30 s per attempt, slog logging.
// tlsConf may be nil (system roots).
func NewHTTPClient(tlsConf *tls.Config) *retryablehttp.Client {
	hc := retryablehttp.NewClient()
	if tlsConf != nil {
		if tr, ok := hc.HTTPClient.Transport.(*http.Transport); ok {
			// A copy: the transport adjusts its config, which the MQTT
			// client may share.
			tr.TLSClientConfig = tlsConf.Clone()
		}
	}
	hc.RetryMax = 3
	hc.RetryWaitMin = 500 * time.Millisecond
	hc.RetryWaitMax = 10 * time.Second
	hc.HTTPClient.Timeout = 30 * time.Second
	hc.Logger = nil
	return hc
}

// fetchLoop fetches the snapshot over HTTPS while MQTT cannot deliver it:
// no snapshot at all FetchAfter after start, or the connection down for
// FetchAfter.
func (c *Client) fetchLoop(ctx context.Context) {
	if c.o.CentralURL == "" {
		return
	}
	wait := c.o.FetchAfter
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = c.o.FetchAfter
		if !c.needFetch() {
			continue
		}
		if err := c.Fetch(ctx); err != nil {
			c.log.Warn("allowlist fetch over https failed", "err", err)
		}
		wait = c.o.FetchInterval
	}
}

func (c *Client) needFetch() bool {
	if c.current.Load() == nil {
		return true
	}
	if c.connected.Load() {
		return false
	}
	lost := c.disconnected.Load()
	if lost == 0 { // never connected since start
		return c.clock.Now().Sub(c.started) >= c.o.FetchAfter
	}
	return c.clock.Now().Sub(time.Unix(0, lost)) >= c.o.FetchAfter
}

// Fetch gets the current snapshot from central over HTTPS and handles it
// like one received over MQTT.
func (c *Client) Fetch(ctx context.Context) error {
	hc := c.o.HTTPClient
	if hc == nil {
		hc = NewHTTPClient(nil)
	}
	u := strings.TrimRight(c.o.CentralURL, "/") + SnapshotPath
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	req.SetBasicAuth(c.o.Username, c.o.Password)
	c.mu.Lock()
	if c.etag != "" && c.current.Load() != nil {
		req.Header.Set("If-None-Match", c.etag)
	}
	c.mu.Unlock()
	c.count("snapshot_fetches")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", u, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotModified:
		return nil
	default:
		return fmt.Errorf("fetch %s: %s", u, resp.Status)
	}
	wire, err := io.ReadAll(io.LimitReader(resp.Body, maxSnapshotBytes+1))
	if err != nil {
		return fmt.Errorf("fetch %s: %w", u, err)
	}
	if len(wire) > maxSnapshotBytes {
		return fmt.Errorf("fetch %s: snapshot larger than %d bytes", u, maxSnapshotBytes)
	}
	err = c.HandleSnapshot(wire, "https")
	if err == nil || errors.Is(err, allowlist.ErrSame) {
		c.mu.Lock()
		c.etag = resp.Header.Get("ETag")
		c.mu.Unlock()
		return nil
	}
	return err
}
