// Command benchtool holds the small helpers deploy/bench/compare.sh needs to
// benchmark the Postern edge against Postfix on one machine. It only ever
// listens on and talks to loopback.
//
//	benchtool dns -listen 127.0.0.153:53 -zone example.edu -a 127.0.0.1
//	    An authoritative DNS server (UDP and TCP) for one zone: every name at
//	    or under the zone has an A record and an MX pointing at itself; the
//	    zone apex has an SOA. PTR queries and names outside the zone get
//	    NXDOMAIN. It runs until SIGINT/SIGTERM.
//	benchtool pss -root PID [-root PID...] [-interval 100ms] [-out FILE]
//	    Samples the proportional set size (Pss from /proc/PID/smaps_rollup)
//	    of each root process plus all its descendants until SIGINT/SIGTERM,
//	    then prints one line per root: "root=PID peak_kb=N last_kb=N
//	    peak_procs=N samples=N". With -once it takes a single sample.
//	benchtool waitcount -file FILE -n N [-timeout 5m]
//	    Polls an smtp-sink -c counter file ("mesg=N" lines separated by CR)
//	    until the message count reaches N; prints the wall-clock time of
//	    that moment as Unix nanoseconds. Exits 1 on timeout, printing the
//	    count it saw.
//	benchtool count -file FILE
//	    Prints the message count an smtp-sink -c counter file shows now.
//	benchtool tree -root PID
//	    Prints PID and the ids of all its descendants, one a line.
//
// The PSS sums are what the kernel charges each process for its share of
// every mapping (shared libraries and shared memory divided by the number
// of sharers), so summing them over a process tree gives a fair total for
// a multi-process system such as Postfix.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchtool dns|pss|waitcount|count|tree [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "dns":
		err = dnsMain(os.Args[2:])
	case "pss":
		err = pssMain(os.Args[2:], os.Stdout)
	case "waitcount":
		err = waitMain(os.Args[2:], os.Stdout)
	case "count":
		err = countMain(os.Args[2:], os.Stdout)
	case "tree":
		err = treeMain(os.Args[2:], os.Stdout)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtool:", err)
		os.Exit(1)
	}
}

// --- dns ---

func dnsMain(args []string) error {
	fs := flag.NewFlagSet("dns", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.153:53", "UDP and TCP listen address (loopback)")
	zone := fs.String("zone", "example.edu", "zone served")
	a := fs.String("a", "127.0.0.1", "address of every name in the zone")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		return fmt.Errorf("dns: -listen: %w", err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("dns: -listen %q is not a loopback address", *listen)
	}
	ip := net.ParseIP(*a).To4()
	if ip == nil {
		return fmt.Errorf("dns: -a %q is not an IPv4 address", *a)
	}
	h := &zoneHandler{zone: dns.Fqdn(strings.ToLower(*zone)), ip: ip}
	mux := dns.NewServeMux()
	mux.Handle(".", h)
	errc := make(chan error, 2)
	var servers []*dns.Server
	for _, netw := range []string{"udp", "tcp"} {
		started := make(chan struct{})
		s := &dns.Server{Addr: *listen, Net: netw, Handler: mux, NotifyStartedFunc: func() { close(started) }}
		servers = append(servers, s)
		go func() { errc <- s.ListenAndServe() }()
		select {
		case <-started:
		case err := <-errc:
			return fmt.Errorf("dns: listen %s %s: %w", netw, *listen, err)
		}
	}
	fmt.Fprintf(os.Stderr, "benchtool dns: serving %s on %s\n", h.zone, *listen)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("dns: %w", err)
	}
	for _, s := range servers {
		_ = s.Shutdown()
	}
	return nil
}

type zoneHandler struct {
	zone string
	ip   net.IP
}

func (h *zoneHandler) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	soa := &dns.SOA{
		Hdr: dns.RR_Header{Name: h.zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 300},
		Ns:  "ns." + h.zone, Mbox: "hostmaster." + h.zone,
		Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 300,
	}
	if !dns.IsSubDomain(h.zone, name) {
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, soa)
		_ = w.WriteMsg(m)
		return
	}
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: 3600}
	}
	switch q.Qtype {
	case dns.TypeA:
		m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: h.ip})
	case dns.TypeMX:
		m.Answer = append(m.Answer, &dns.MX{Hdr: hdr(dns.TypeMX), Preference: 10, Mx: q.Name})
		m.Extra = append(m.Extra, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 3600}, A: h.ip})
	case dns.TypeSOA:
		if name == h.zone {
			m.Answer = append(m.Answer, soa)
		} else {
			m.Ns = append(m.Ns, soa)
		}
	default:
		m.Ns = append(m.Ns, soa) // NODATA
	}
	_ = w.WriteMsg(m)
}

// --- pss ---

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

type tally struct {
	root      int
	peakKB    int64
	lastKB    int64
	peakProcs int
	samples   int
	// CPU time (user+system, own and reaped children) of the tree at the
	// first and the last sample, in clock ticks.
	firstTicks, lastTicks int64
}

func pssMain(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("pss", flag.ContinueOnError)
	var roots multiFlag
	fs.Var(&roots, "root", "root process id (repeatable); its descendants are included")
	interval := fs.Duration("interval", 100*time.Millisecond, "sampling interval")
	once := fs.Bool("once", false, "take one sample and exit")
	out := fs.String("out", "", "also write every sample to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(roots) == 0 {
		return errors.New("pss: at least one -root is required")
	}
	var tallies []*tally
	for _, r := range roots {
		pid, err := strconv.Atoi(r)
		if err != nil || pid <= 0 {
			return fmt.Errorf("pss: bad -root %q", r)
		}
		tallies = append(tallies, &tally{root: pid})
	}
	var sampleLog *bufio.Writer
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return fmt.Errorf("pss: %w", err)
		}
		defer f.Close()
		sampleLog = bufio.NewWriter(f)
		defer sampleLog.Flush()
	}
	sample := func() {
		children, ticks := procTable()
		now := time.Now().UnixMilli()
		for _, t := range tallies {
			pids := descendants(t.root, children)
			var kb, tk int64
			for _, p := range pids {
				kb += pssKB(p)
				tk += ticks[p]
			}
			if t.samples == 0 {
				t.firstTicks = tk
			}
			t.lastTicks = tk
			t.samples++
			t.lastKB = kb
			if kb > t.peakKB {
				t.peakKB = kb
			}
			if len(pids) > t.peakProcs {
				t.peakProcs = len(pids)
			}
			if sampleLog != nil {
				fmt.Fprintf(sampleLog, "%d root=%d pss_kb=%d procs=%d\n", now, t.root, kb, len(pids))
			}
		}
	}
	sample()
	if !*once {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		tick := time.NewTicker(*interval)
		defer tick.Stop()
	loop:
		for {
			select {
			case <-ctx.Done():
				break loop
			case <-tick.C:
				sample()
			}
		}
	}
	for _, t := range tallies {
		cpu := float64(t.lastTicks-t.firstTicks) / clockTicks
		fmt.Fprintf(stdout, "root=%d peak_kb=%d last_kb=%d peak_procs=%d samples=%d cpu_s=%.2f\n", t.root, t.peakKB, t.lastKB, t.peakProcs, t.samples, cpu)
	}
	return nil
}

func treeMain(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("tree", flag.ContinueOnError)
	root := fs.Int("root", 0, "root process id")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *root <= 0 {
		return errors.New("tree: -root is required")
	}
	children, _ := procTable()
	for _, p := range descendants(*root, children) {
		fmt.Fprintln(stdout, p)
	}
	return nil
}

// clockTicks is USER_HZ, the unit of the times in /proc/PID/stat; it is
// 100 on every Linux architecture Postern runs on.
const clockTicks = 100

// procTable maps each process id to its children, and to its CPU time
// (utime+stime+cutime+cstime, in clock ticks), from /proc/*/stat.
func procTable() (map[int][]int, map[int]int64) {
	m := map[int][]int{}
	ticks := map[int]int64{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return m, ticks
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// The command name may contain spaces and parentheses; the fields
		// after the last ')' are "state ppid ...".
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 15 {
			continue
		}
		ppid, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		m[ppid] = append(m[ppid], pid)
		// Fields 14-17 of stat (utime stime cutime cstime) are f[11:15].
		for _, v := range f[11:15] {
			n, _ := strconv.ParseInt(v, 10, 64)
			ticks[pid] += n
		}
	}
	return m, ticks
}

func descendants(root int, children map[int][]int) []int {
	if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(root))); err != nil {
		return nil
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// pssKB returns the Pss line of /proc/PID/smaps_rollup in kB (0 if the
// process is gone).
func pssKB(pid int) int64 {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "smaps_rollup"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Pss:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// --- waitcount ---

var mesgRE = regexp.MustCompile(`mesg=(\d+)`)

func waitMain(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("waitcount", flag.ContinueOnError)
	file := fs.String("file", "", "smtp-sink -c output file")
	n := fs.Int64("n", 0, "message count to wait for")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
	poll := fs.Duration("poll", 10*time.Millisecond, "polling interval")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *file == "" || *n <= 0 {
		return errors.New("waitcount: -file and -n are required")
	}
	deadline := time.Now().Add(*timeout)
	var seen int64
	for {
		seen = lastCount(*file)
		if seen >= *n {
			fmt.Fprintln(stdout, time.Now().UnixNano())
			return nil
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(stdout, "timeout", seen)
			return fmt.Errorf("waitcount: saw %d of %d messages in %s", seen, *n, *timeout)
		}
		time.Sleep(*poll)
	}
}

func countMain(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("count", flag.ContinueOnError)
	file := fs.String("file", "", "smtp-sink -c output file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *file == "" {
		return errors.New("count: -file is required")
	}
	fmt.Fprintln(stdout, lastCount(*file))
	return nil
}

// lastCount reads the tail of the counter file and returns the largest
// mesg= value in it.
func lastCount(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0
	}
	off := st.Size() - 256
	if off < 0 {
		off = 0
	}
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return 0
	}
	var best int64
	for _, m := range mesgRE.FindAllSubmatch(buf, -1) {
		if v, err := strconv.ParseInt(string(m[1]), 10, 64); err == nil && v > best {
			best = v
		}
	}
	return best
}
