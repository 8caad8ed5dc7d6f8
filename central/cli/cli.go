// Package cli implements postern-central's scripting subcommands:
//
//	postern-central device list [-status S] [-q TEXT] [-json]
//	postern-central device show NAME [-json]
//	postern-central device approve|deny|suspend|reinstate|revoke|renew NAME [-reason R] [-force]
//	postern-central device register -name N -owner O -contact E -sender S [-sender S2] [-ip IP] [-department D] [-purpose P] [-firewall -accept-responsibility]
//	postern-central user add NAME [-password-stdin]
//	postern-central user token NAME [-label L] [-scope read-only|read-write] [-lifetime D]
//	postern-central user list
//	postern-central edge add ID [-name N] [-site S]
//	postern-central edge list
//	postern-central edge revoke ID -reason R
//	postern-central request list [-all] [-json]
//	postern-central request confirm|dismiss ID [-reason R]
//
// Every subcommand takes -config FILE (and -dev) like serve, opens the same
// store and works while serve runs: SQLite queues writers on its busy
// timeout, and serve notices allowlist changes within a few seconds and
// publishes them (see central/app).
package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/postern/postern/central/app"
	"github.com/postern/postern/central/auth"
	"github.com/postern/postern/central/config"
	"github.com/postern/postern/central/registration"
	"github.com/postern/postern/central/store"
)

// Usage lists the subcommands.
const Usage = `  device list|show|approve|deny|suspend|reinstate|revoke|renew|register   manage registrations
  user add|token|list   staff accounts and API tokens
  edge add|list|revoke  edges and their enrolment tokens
  request list|confirm|dismiss   suspension requests from edges
`

// env is what a subcommand runs with.
type env struct {
	cfg    config.Config
	st     store.Store
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
}

// Main runs one subcommand; args start with the group ("device", "user",
// "edge"). It returns the exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) < 2 {
		fmt.Fprint(stderr, "usage: postern-central <device|user|edge> <command> [NAME] [flags]\n"+Usage)
		return 2
	}
	group, cmd, rest := args[0], args[1], args[2:]
	fs := flag.NewFlagSet(group+" "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (TOML)")
	dev := fs.Bool("dev", false, "use developer defaults (loopback ports, ./data)")
	run, ok := commands[group+" "+cmd]
	if !ok {
		fmt.Fprintf(stderr, "unknown command %q\nusage:\n%s", group+" "+cmd, Usage)
		return 2
	}
	bind := run.flags(fs)
	pos, err := parse(fs, rest)
	if err != nil {
		return 2
	}
	if len(pos) != run.args {
		if run.args == 1 {
			fmt.Fprintf(stderr, "%s %s: exactly one NAME is needed\n", group, cmd)
		} else {
			fmt.Fprintf(stderr, "%s %s: unexpected argument %q\n", group, cmd, strings.Join(pos, " "))
		}
		return 2
	}
	cfg, err := config.Load(*cfgPath, *dev)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	st, err := app.OpenStore(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer st.Close()
	e := &env{cfg: cfg, st: st, stdin: stdin, stdout: stdout, stderr: stderr, log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if err := bind(ctx, e, pos); err != nil {
		fmt.Fprintf(stderr, "%s %s: %v\n", group, cmd, err)
		return 1
	}
	return 0
}

// parse parses flags anywhere among the positional arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

type command struct {
	args  int
	flags func(fs *flag.FlagSet) func(ctx context.Context, e *env, pos []string) error
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

var commands = map[string]command{}

func init() {
	commands["device list"] = command{0, func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		status := fs.String("status", "", "only devices in this status")
		q := fs.String("q", "", "search name, owner, department, sender, IP")
		asJSON := fs.Bool("json", false, "print JSON")
		return func(ctx context.Context, e *env, _ []string) error {
			f := store.DeviceFilter{Query: *q, Limit: 100000}
			if *status != "" {
				if !store.Status(*status).Valid() {
					return fmt.Errorf("unknown status %q", *status)
				}
				f.Status = []store.Status{store.Status(*status)}
			}
			devs, err := e.st.ListDevices(ctx, f)
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(e.stdout, devs)
			}
			tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATUS\tOWNER\tDEPARTMENT\tSENDERS\tDNS\tEXPIRES")
			for _, d := range devs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Name, d.Status, d.Owner, d.Department, senders(d), okText(d.FCrDNSOK), day(d.ExpiresAt))
			}
			return tw.Flush()
		}
	}}
	commands["device show"] = command{1, func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		asJSON := fs.Bool("json", false, "print JSON")
		return func(ctx context.Context, e *env, pos []string) error {
			d, err := e.st.Device(ctx, registration.NormalizeName(pos[0]))
			if err != nil {
				return err
			}
			hist, err := e.st.ListAudit(ctx, store.AuditFilter{Device: d.Name})
			if err != nil {
				return err
			}
			evs, err := e.st.ListEvents(ctx, store.EventFilter{Device: d.Name, Limit: 20})
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(e.stdout, map[string]any{"device": d, "history": hist, "events": evs})
			}
			w := e.stdout
			fmt.Fprintf(w, "name:        %s\nstatus:      %s %s\nips:         %s\nowner:       %s\ndepartment:  %s\ncontact:     %s\npurpose:     %s\nfirewall:    %v (responsibility accepted: %v)\nlimits:      %d messages/hour, %d recipients/hour\nexpires:     %s\ndns check:   %s\n",
				d.Name, d.Status, d.StatusReason, strings.Join(d.IPs, ", "), d.Owner, d.Department, d.ContactEmail, d.Purpose, d.BehindFirewall,
				d.FirewallAccepted, d.MessagesPerHour, d.RecipientsPerHour, day(d.ExpiresAt), d.FCrDNS)
			for _, s := range d.Senders {
				state := "unconfirmed"
				if s.Confirmed() {
					state = "confirmed " + day(s.ConfirmedAt)
				}
				if s.Personal {
					state += ", looks personal"
				}
				fmt.Fprintf(w, "sender:      %s (%s)\n", s.Address, state)
			}
			fmt.Fprintln(w, "history:")
			for _, a := range hist {
				fmt.Fprintf(w, "  %s  %-14s %-10s %s -> %s  %s\n", a.Time.Format(time.RFC3339), a.Actor, a.Action, a.FromStatus, a.ToStatus, a.Reason)
			}
			if len(evs) > 0 {
				fmt.Fprintln(w, "latest events:")
				for _, ev := range evs {
					fmt.Fprintf(w, "  %s  %s %s %s %s\n", ev.Time.Format(time.RFC3339), ev.Edge, ev.Kind, ev.Sender, ev.Reason)
				}
			}
			return nil
		}
	}}
	for _, a := range registration.Actions {
		commands["device "+string(a)] = command{1, func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			reason := fs.String("reason", "", "reason (required for deny, suspend, revoke)")
			force := fs.Bool("force", false, "approve even though a sender address is unconfirmed")
			return func(ctx context.Context, e *env, pos []string) error {
				reg, err := app.Registry(e.cfg, e.st, nil, e.log)
				if err != nil {
					return err
				}
				name := registration.NormalizeName(pos[0])
				if err := reg.Act(ctx, name, a, cliActor(), *reason, *force); err != nil {
					return err
				}
				d, err := e.st.Device(ctx, name)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "%s: %s\n", d.Name, d.Status)
				return nil
			}
		}}
	}
	commands["device register"] = command{0, func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		var r registration.Request
		var snd, ips multi
		fs.StringVar(&r.Name, "name", "", "the device's DNS name")
		fs.StringVar(&r.Owner, "owner", "", "the person responsible")
		fs.StringVar(&r.Department, "department", "", "department")
		fs.StringVar(&r.ContactEmail, "contact", "", "contact e-mail")
		fs.StringVar(&r.Purpose, "purpose", "", "what the device sends (default: registered from the command line)")
		fs.Var(&snd, "sender", "functional sender address (repeat for several)")
		fs.Var(&ips, "ip", "IP address (repeat for several; default: the name's addresses)")
		fs.BoolVar(&r.BehindFirewall, "firewall", false, "the name is a firewall's / NAT gateway's")
		fs.BoolVar(&r.FirewallAccepted, "accept-responsibility", false, "the owner takes responsibility for every system behind the firewall")
		return func(ctx context.Context, e *env, _ []string) error {
			r.Senders, r.IPs = strings.Join(snd, ","), strings.Join(ips, ",")
			if r.Purpose == "" {
				r.Purpose = "registered from the command line"
			}
			reg, err := app.Registry(e.cfg, e.st, nil, e.log)
			if err != nil {
				return err
			}
			d, errs, err := reg.Register(ctx, r, "", cliActor())
			if err != nil {
				return err
			}
			if len(errs) > 0 {
				keys := make([]string, 0, len(errs))
				for k := range errs {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				var lines []string
				for _, k := range keys {
					lines = append(lines, fmt.Sprintf("  %s: %s", flagName(k), errs[k]))
				}
				return fmt.Errorf("invalid request:\n%s", strings.Join(lines, "\n"))
			}
			fmt.Fprintf(e.stdout, "%s: %s\ndns check: %s\n", d.Name, d.Status, d.FCrDNS)
			for a, l := range reg.PendingLinks(d.Name) {
				fmt.Fprintf(e.stdout, "confirmation link for %s (mail.smarthost is not set): %s\n", a, l)
			}
			return nil
		}
	}}
	commands["user add"] = command{1, func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		fromStdin := fs.Bool("password-stdin", false, "read the password from the first line of standard input (default: generate one and print it)")
		return func(ctx context.Context, e *env, pos []string) error {
			name := strings.TrimSpace(pos[0])
			if name == "" || len(name) > 64 || strings.ContainsAny(name, " \t\r\n:") {
				return errors.New("user names are 1 to 64 characters without spaces or ':'")
			}
			pw := ""
			if *fromStdin {
				line, err := bufio.NewReader(e.stdin).ReadString('\n')
				if err != nil && !errors.Is(err, io.EOF) {
					return err
				}
				pw = strings.TrimRight(line, "\r\n")
				if len(pw) < 10 {
					return errors.New("the password must have at least 10 characters")
				}
			} else {
				tok, _ := auth.NewToken()
				pw = tok[:20]
			}
			hash, err := auth.HashPassword(pw)
			if err != nil {
				return err
			}
			if err := e.st.CreateUser(ctx, store.User{Name: name, PasswordHash: hash}); err != nil {
				return err
			}
			if *fromStdin {
				fmt.Fprintf(e.stdout, "staff user %s added\n", name)
			} else {
				fmt.Fprintf(e.stdout, "staff user %s added; password: %s\n", name, pw)
			}
			return nil
		}
	}}
	commands["user token"] = command{1, func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		label := fs.String("label", "", "what the token is for")
		scope := fs.String("scope", string(store.ReadOnly), "read-only or read-write")
		life := fs.Duration("lifetime", 0, "how long the token is valid (default api.token_lifetime, at most api.max_token_lifetime)")
		return func(ctx context.Context, e *env, pos []string) error {
			if _, err := e.st.User(ctx, pos[0]); err != nil {
				return err
			}
			lifetime := e.cfg.API.TokenLifetime
			if *life != 0 {
				lifetime = *life
			}
			tok, t, err := auth.NewAPIToken(pos[0], *label, store.Scope(*scope), lifetime, e.cfg.API.MaxTokenLifetime, time.Now())
			if err != nil {
				return err
			}
			if err := e.st.CreateAPIToken(ctx, t); err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "token %s for %s: %s, expires %s\n", t.ID, pos[0], t.Scope, t.ExpiresAt.UTC().Format(time.RFC3339))
			fmt.Fprintln(e.stdout, tok)
			return nil
		}
	}}
	commands["user list"] = command{0, func(*flag.FlagSet) func(context.Context, *env, []string) error {
		return func(ctx context.Context, e *env, _ []string) error {
			us, err := e.st.ListUsers(ctx)
			if err != nil {
				return err
			}
			for _, u := range us {
				fmt.Fprintf(e.stdout, "%s\t%s\n", u.Name, u.CreatedAt.Format(time.RFC3339))
			}
			return nil
		}
	}}
	commands["edge add"] = command{1, func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		name := fs.String("name", "", "display name")
		site := fs.String("site", "", "site / building")
		return func(ctx context.Context, e *env, pos []string) error {
			reg, err := app.Registry(e.cfg, e.st, nil, e.log)
			if err != nil {
				return err
			}
			tok, err := reg.CreateEdge(ctx, pos[0], *name, *site)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "edge %s created; enrolment token (valid %s, once):\n%s\non the edge: postern-edge enroll -central %s -token %s\n",
				pos[0], registration.EnrolmentTTL, tok, app.BaseURL(e.cfg), tok)
			return nil
		}
	}}
	commands["edge list"] = command{0, func(*flag.FlagSet) func(context.Context, *env, []string) error {
		return func(ctx context.Context, e *env, _ []string) error {
			edges, err := e.st.ListEdges(ctx)
			if err != nil {
				return err
			}
			ver, err := e.st.AllowlistVersion(ctx)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "ID\tSTATE\tLAST SEEN\tALLOWLIST (current %d)\tQUEUE\n", ver)
			for _, ed := range edges {
				state := "offline"
				switch {
				case !ed.Enrolled:
					state = "not enrolled"
				case ed.Status.Online:
					state = "online"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n", ed.ID, state, day(ed.Status.LastSeen), ed.Status.AllowlistVersion, ed.Status.QueueDepth)
			}
			return tw.Flush()
		}
	}}
}

func init() {
	commands["request list"] = command{0, func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		all := fs.Bool("all", false, "also decided requests")
		asJSON := fs.Bool("json", false, "print JSON")
		return func(ctx context.Context, e *env, _ []string) error {
			f := store.RequestFilter{State: store.RequestOpen, Limit: 100000}
			if *all {
				f.State = ""
			}
			reqs, err := e.st.ListSuspensionRequests(ctx, f)
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(e.stdout, reqs)
			}
			tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tDEVICE\tEDGE\tREQUESTED\tWHY")
			for _, q := range reqs {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", q.ID, q.State, q.Device, q.Edge, q.CreatedAt.Format(time.RFC3339), q.Why)
			}
			return tw.Flush()
		}
	}}
	commands["edge revoke"] = command{1, func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		reason := fs.String("reason", "", "why (audit log)")
		return func(ctx context.Context, e *env, pos []string) error {
			reg, err := app.Registry(e.cfg, e.st, nil, e.log)
			if err != nil {
				return err
			}
			if err := reg.RevokeEdge(ctx, pos[0], cliActor(), *reason); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "edge %s revoked; its credentials no longer work (on an external Mosquitto with dynsec, serve deletes its broker account within a minute)\n", pos[0])
			return nil
		}
	}}
	for _, decision := range []string{"confirm", "dismiss"} {
		commands["request "+decision] = command{1, func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			reason := fs.String("reason", "", "note for the audit log")
			return func(ctx context.Context, e *env, pos []string) error {
				id, err := strconv.ParseInt(pos[0], 10, 64)
				if err != nil || id < 1 {
					return fmt.Errorf("%q is not a request id", pos[0])
				}
				reg, err := app.Registry(e.cfg, e.st, nil, e.log)
				if err != nil {
					return err
				}
				q, err := reg.DecideRequest(ctx, id, decision, cliActor(), *reason)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "request %d %s: %s (edge %s)\n", q.ID, q.State, q.Device, q.Edge)
				return nil
			}
		}}
	}
}

func cliActor() string {
	u := os.Getenv("SUDO_USER")
	if u == "" {
		u = os.Getenv("USER")
	}
	if u == "" {
		return "cli"
	}
	return "cli:" + u
}

func flagName(field string) string {
	switch field {
	case "contact_email":
		return "-contact"
	case "senders":
		return "-sender"
	case "ips":
		return "-ip"
	case "firewall_accepted":
		return "-accept-responsibility"
	}
	return "-" + field
}

func senders(d store.Device) string {
	var out []string
	for _, s := range d.Senders {
		a := s.Address
		if !s.Confirmed() {
			a += "(unconfirmed)"
		}
		out = append(out, a)
	}
	return strings.Join(out, ",")
}

func okText(ok bool) string {
	if ok {
		return "ok"
	}
	return "mismatch"
}

func day(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02")
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
