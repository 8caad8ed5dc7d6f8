// Package queuecli is the `postern-edge queue` command: list, show, retry,
// delete, hold and release queued mail. The running daemon owns the Badger
// lock, so the command never opens the spool: it talks to the daemon's
// admin endpoint (admin.listen, a loopback address or a unix socket), whose
// API is in package queue (Runner.Mount).
package queuecli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/postern/postern/edge/config"
	"github.com/postern/postern/edge/queue"
	"github.com/postern/postern/edge/spool"
)

const usage = `usage: postern-edge queue [flags] <command> [args]

commands:
  list                 every queued message: id, age, sender, recipients and
                       their states, next attempt, last error
  show ID              envelope, headers and delivery history of a message
  retry ID | -all      try now (held messages need release first)
  delete ID [-ndr]     remove a message; -ndr first returns it to the sender
                       with an NDR for the recipients not yet delivered
  hold ID              stop delivery attempts
  release ID           resume delivery attempts, trying now

flags:
  -config FILE   edge configuration (to find admin.listen and admin.token)
  -dev           developer defaults
  -admin ADDR    admin endpoint (host:port or unix:/path), overrides the config
  -json          print the daemon's JSON instead of text
`

// Main runs the command with the arguments after "queue" and returns the
// exit status: 0 success, 1 failure, 2 usage error.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("queue", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfgPath := fs.String("config", "", "")
	dev := fs.Bool("dev", false, "")
	adminAddr := fs.String("admin", "", "")
	asJSON := fs.Bool("json", false, "")
	all := fs.Bool("all", false, "")
	ndr := fs.Bool("ndr", false, "")
	// Flags may come before or after the command and its argument.
	var pos []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			fmt.Fprintf(stderr, "queue: %v\n%s", err, usage)
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(pos) == 0 || pos[0] == "help" {
		fmt.Fprint(stderr, usage)
		return 2
	}
	addr, token := *adminAddr, ""
	if addr == "" || *cfgPath != "" {
		cfg, err := config.Load(*cfgPath, *dev)
		if err != nil {
			fmt.Fprintln(stderr, "queue:", err)
			return 1
		}
		if addr == "" {
			addr = cfg.Admin.Listen
		}
		token = cfg.Admin.Token
	}
	if addr == "" {
		fmt.Fprintln(stderr, "queue: admin.listen is empty: the daemon has no admin endpoint to talk to")
		return 1
	}
	c := NewClient(addr, token)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cmd, arg := pos[0], ""
	if len(pos) > 1 {
		arg = pos[1]
	}
	needID := func() bool {
		if arg == "" || len(pos) > 2 {
			fmt.Fprintf(stderr, "queue %s: exactly one message id is needed\n", cmd)
			return false
		}
		return true
	}
	var err error
	switch cmd {
	case "list":
		var list []queue.Summary
		if list, err = c.List(ctx); err == nil {
			if *asJSON {
				err = printJSON(stdout, list)
			} else {
				PrintList(stdout, list, time.Now())
			}
		}
	case "show":
		if !needID() {
			return 2
		}
		var d *queue.Detail
		if d, err = c.Show(ctx, arg); err == nil {
			if *asJSON {
				err = printJSON(stdout, d)
			} else {
				PrintDetail(stdout, d, time.Now())
			}
		}
	case "retry":
		if *all {
			var n int
			if n, err = c.RetryAll(ctx); err == nil {
				fmt.Fprintf(stdout, "%d message(s) scheduled for immediate delivery\n", n)
			}
			break
		}
		if !needID() {
			return 2
		}
		if err = c.Retry(ctx, arg); err == nil {
			fmt.Fprintf(stdout, "%s: scheduled for immediate delivery\n", arg)
		}
	case "delete":
		if !needID() {
			return 2
		}
		if err = c.Delete(ctx, arg, *ndr); err == nil {
			how := "silently"
			if *ndr {
				how = "with an NDR to the sender"
			}
			fmt.Fprintf(stdout, "%s: deleted %s\n", arg, how)
		}
	case "hold":
		if !needID() {
			return 2
		}
		if err = c.Hold(ctx, arg); err == nil {
			fmt.Fprintf(stdout, "%s: on hold\n", arg)
		}
	case "release":
		if !needID() {
			return 2
		}
		if err = c.Release(ctx, arg); err == nil {
			fmt.Fprintf(stdout, "%s: released\n", arg)
		}
	default:
		fmt.Fprintf(stderr, "queue: unknown command %q\n%s", cmd, usage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "queue:", err)
		return 1
	}
	return 0
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Client talks to the admin endpoint's queue API.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// NewClient returns a client for addr ("host:port" or "unix:/path").
func NewClient(addr, token string) *Client {
	c := &Client{token: token, http: &http.Client{Timeout: 30 * time.Second}}
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		c.base = "http://unix"
		c.http.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}
	} else {
		c.base = "http://" + addr
	}
	return c
}

// ErrNotFound is returned for an id the daemon does not have.
var ErrNotFound = errors.New("no such message in the queue")

func (c *Client) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin endpoint %s: %w (is postern-edge running?)", c.base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("admin endpoint: reading reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if resp.StatusCode == http.StatusNotFound {
			return fmt.Errorf("%w (%s)", ErrNotFound, msg)
		}
		return fmt.Errorf("admin endpoint: %s: %s", resp.Status, msg)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("admin endpoint: decoding reply: %w", err)
		}
	}
	return nil
}

// List returns every queued message.
func (c *Client) List(ctx context.Context) ([]queue.Summary, error) {
	var out []queue.Summary
	return out, c.do(ctx, http.MethodGet, "/queue", &out)
}

// Show returns one message's envelope, headers and history.
func (c *Client) Show(ctx context.Context, id string) (*queue.Detail, error) {
	var out queue.Detail
	if err := c.do(ctx, http.MethodGet, "/queue/"+url.PathEscape(id), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Retry makes id due now.
func (c *Client) Retry(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPost, "/queue/"+url.PathEscape(id)+"/retry", nil)
}

// RetryAll makes every message due now.
func (c *Client) RetryAll(ctx context.Context) (int, error) {
	var out struct {
		Count int `json:"count"`
	}
	err := c.do(ctx, http.MethodPost, "/queue/retry-all", &out)
	return out.Count, err
}

// Hold stops attempts for id.
func (c *Client) Hold(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPost, "/queue/"+url.PathEscape(id)+"/hold", nil)
}

// Release resumes attempts for id.
func (c *Client) Release(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPost, "/queue/"+url.PathEscape(id)+"/release", nil)
}

// Delete removes id, with an NDR when ndr is set.
func (c *Client) Delete(ctx context.Context, id string, ndr bool) error {
	q := ""
	if ndr {
		q = "?ndr=1"
	}
	return c.do(ctx, http.MethodDelete, "/queue/"+url.PathEscape(id)+q, nil)
}

// PrintList writes the queue as text, one block per message (like
// Postfix's mailq).
func PrintList(w io.Writer, list []queue.Summary, now time.Time) {
	if len(list) == 0 {
		fmt.Fprintln(w, "queue is empty")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAGE\tSIZE\tSENDER\tNEXT ATTEMPT\tATTEMPTS")
	var size int64
	for _, s := range list {
		from := s.From
		if from == "" {
			from = "<> (NDR)"
		}
		next := "in " + human(s.NextAttempt.Sub(now))
		switch {
		case s.Held:
			next = "held"
		case s.InFlight:
			next = "delivering now"
		case !s.NextAttempt.After(now):
			next = "due"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", s.ID, human(now.Sub(s.ReceivedAt)), bytesHuman(s.Size), from, next, s.Attempts)
		for _, r := range s.Recipients {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t\t\t\n", r.Addr, r.State, r.Reply)
		}
		if s.LastError != "" {
			fmt.Fprintf(tw, "  last error: %s\t\t\t\t\t\n", s.LastError)
		}
		size += s.Size
	}
	tw.Flush()
	fmt.Fprintf(w, "-- %d message(s), %s\n", len(list), bytesHuman(size))
}

// PrintDetail writes one message as text.
func PrintDetail(w io.Writer, d *queue.Detail, now time.Time) {
	e := d.Envelope
	from := e.From
	if from == "" {
		from = "<>"
	}
	p := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "%-13s %s\n", k+":", v)
		}
	}
	p("ID", e.ID)
	p("From", from)
	p("Received", fmt.Sprintf("%s (%s ago)", e.ReceivedAt.Format(time.RFC3339), human(now.Sub(e.ReceivedAt))))
	p("Client", strings.TrimSpace(e.ClientName+" "+e.ClientIP))
	p("Device", e.Device)
	p("HELO", e.Helo)
	p("Intake TLS", e.TLS)
	p("Size", bytesHuman(e.Size))
	if e.DSNRet != "" || e.DSNEnvID != "" {
		p("DSN", strings.TrimSpace("RET="+e.DSNRet+" ENVID="+e.DSNEnvID))
	}
	if e.RequireTLS {
		p("REQUIRETLS", "yes: only authenticated TLS to a next hop offering REQUIRETLS (RFC 8689)")
	}
	if e.Bounce {
		p("NDR for", e.BounceFor+" (an NDR: never bounced)")
	}
	state := "next attempt " + e.NextAttempt.Format(time.RFC3339)
	switch {
	case e.Held:
		state = "held"
	case d.InFlight:
		state = "being delivered now"
	}
	p("State", fmt.Sprintf("%s, %d attempt(s)", state, e.Attempts))
	p("Last error", e.LastError)
	fmt.Fprintln(w, "\nRecipients:")
	for _, r := range e.Recipients {
		line := fmt.Sprintf("  %-40s %s", r.Addr, r.State)
		if r.Code != 0 {
			line += fmt.Sprintf("  %d %s %s", r.Code, r.EnhancedCode, r.Reply)
		}
		if r.RemoteMTA != "" {
			line += "  (" + r.RemoteMTA + ")"
		}
		fmt.Fprintln(w, line)
	}
	if len(e.History) > 0 {
		fmt.Fprintln(w, "\nHistory:")
		for _, a := range e.History {
			fmt.Fprintf(w, "  %s  %s  %s  %s\n", a.At.Format(time.RFC3339), a.Host, attemptTLS(a), a.Result)
			if a.TLSNote != "" {
				fmt.Fprintf(w, "      TLS note: %s\n", a.TLSNote)
			}
		}
	}
	fmt.Fprintln(w, "\nHeaders:")
	for _, l := range strings.Split(strings.TrimRight(d.Headers, "\r\n"), "\n") {
		fmt.Fprintln(w, "  "+strings.TrimRight(l, "\r"))
	}
}

func human(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

func bytesHuman(n int64) string {
	switch {
	case n < 1024:
		return fmt.Sprintf("%dB", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1fK", float64(n)/1024)
	}
	return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
}

// attemptTLS is the TLS column of an attempt: the connection and how it
// was verified, e.g. "TLS1.3 TLS_AES_128_GCM_SHA256 (dane)".
func attemptTLS(a spool.Attempt) string {
	tls := a.TLS
	if tls == "" {
		tls = "no TLS"
	}
	if a.Verification != "" && a.Verification != "plain" {
		tls += " (" + a.Verification + ")"
	}
	return tls
}
