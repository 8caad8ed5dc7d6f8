package fleetsim

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/postern/postern/central/broker/brokertest"
	"github.com/postern/postern/central/store"
	"github.com/postern/postern/central/store/postgres"
	"github.com/postern/postern/edge/centralclient"
	"github.com/postern/postern/edge/devices"
	"github.com/postern/postern/edge/spool"
	"github.com/postern/postern/shared/allowlist"
	"github.com/postern/postern/shared/event"
	"github.com/postern/postern/shared/testkit"
)

// Sizes of the simulation (POSTERN_FLEET_SIM sets the number of edges).
const (
	seedDevices   = 1000 // approved before the edges start
	eventsPerEdge = 60   // queued in every outbox before it connects
	changes       = 5    // approvals measured
)

// TestFleetSimulation runs only when POSTERN_FLEET_SIM is set (make bench
// sets 500), with POSTERN_TEST_POSTGRES; it starts its own Mosquitto.
func TestFleetSimulation(t *testing.T) {
	nEdges, _ := strconv.Atoi(os.Getenv("POSTERN_FLEET_SIM"))
	if nEdges < 1 {
		t.Skip("set POSTERN_FLEET_SIM=<edges> (make bench: 500) to run the fleet simulation")
	}
	base := os.Getenv("POSTERN_TEST_POSTGRES")
	if base == "" {
		t.Skip("set POSTERN_TEST_POSTGRES to run the fleet simulation")
	}
	ctx := context.Background()
	dbURL := freshSchema(t, base)
	st, err := postgres.Open(ctx, dbURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// The console's indexes on events (migration 0005 of the console
	// work), so that the ingestion figure includes their upkeep.
	for _, q := range []string{
		`CREATE INDEX IF NOT EXISTS sim_events_device_at ON events (device, at)`,
		`CREATE INDEX IF NOT EXISTS sim_events_client_ip_at ON events (client_ip, at)`,
		`CREATE INDEX IF NOT EXISTS sim_events_kind_at ON events (kind, at)`,
		`CREATE INDEX IF NOT EXISTS sim_events_edge_at ON events (edge, at)`,
		`CREATE INDEX IF NOT EXISTS sim_events_sender ON events (sender)`,
		`CREATE INDEX IF NOT EXISTS sim_events_recipient ON events (recipient)`,
	} {
		if _, err := st.DB().ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	seedStart := time.Now()
	for i := range seedDevices + changes {
		name := deviceName(i)
		must(t, st.CreateDevice(ctx, store.Device{Name: name, IPs: []string{fmt.Sprintf("10.%d.%d.%d", 1+i/65536, (i/256)%256, i%256)},
			Owner: "Ada", Department: "Physics", ContactEmail: "ada@example.edu", Purpose: "scan to mail",
			Senders: []store.Sender{{Address: fmt.Sprintf("scan%d@example.edu", i)}}, OwnerKeyHash: "k"}, "owner"))
		if i < seedDevices {
			must(t, st.ApproveDevice(ctx, name, "staff", "ok", time.Now().Add(24*time.Hour)))
		}
	}
	mq := brokertest.Mosquitto(t)
	accounts := map[string]string{brokertest.CentralID: mq.Password(brokertest.CentralID)}
	ids := make([]string, nEdges)
	for i := range ids {
		ids[i] = fmt.Sprintf("sim-%03d", i)
		must(t, st.CreateEdge(ctx, store.Edge{ID: ids[i], Name: ids[i]}))
		accounts[ids[i]] = mq.Password(ids[i]) // the edge's dynsec account, as enrolment makes it
	}
	t.Logf("seeded %d devices and %d edges in %v", seedDevices, nEdges, time.Since(seedStart).Round(time.Millisecond))

	cen := startCentral(t, dbURL, mq.URL, accounts[brokertest.CentralID])
	pub := cen.key

	// The edges: one Badger spool (namespaced per edge) on tmpfs, paho's
	// memory store (no file descriptor per in-flight message).
	sp, err := spool.Open(spool.Options{Dir: filepath.Join(testkit.Tmpfs(t, "2g"), "spool"), GCInterval: -1})
	must(t, err)
	defer sp.Close()
	edges := make([]*simEdge, nEdges)
	queueStart := time.Now()
	for i, id := range ids {
		edges[i] = newEdge(t, sp, id, mq.URL, accounts[id], pub)
		for j := range eventsPerEdge {
			e := event.Event{Kind: event.Refusal, ClientIP: fmt.Sprintf("10.200.%d.%d", i%256, j), Sender: "x@example.org",
				Recipient: fmt.Sprintf("r%d@example.com", j), Reason: "not a registered device", Count: 1}
			if j%5 == 0 {
				e = event.Event{Kind: event.Delivery, Device: deviceName(j), Count: j + 1}
			}
			edges[i].outbox.Emit(e)
		}
	}
	total := nEdges * eventsPerEdge
	t.Logf("%d events queued in %d outboxes in %v", total, nEdges, time.Since(queueStart).Round(time.Millisecond))

	// Connect the fleet; every outbox flushes at once.
	cpu0 := procCPU(cen.pid)
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	connectStart := time.Now()
	for _, e := range edges {
		wg.Add(1)
		go func() { defer wg.Done(); _ = e.c.Run(runCtx) }()
	}
	defer func() { stop(); wg.Wait() }()
	ver0, err := st.AllowlistVersion(ctx)
	must(t, err)
	testkit.WaitFor(t, 3*time.Minute, "every edge connected and enforcing the seeded allowlist", func() bool {
		for _, e := range edges {
			if !e.c.Connected() || e.reg.version.Load() < ver0 {
				return false
			}
		}
		return true
	})
	t.Logf("%d edges connected and enforcing version %d in %v", nEdges, ver0, time.Since(connectStart).Round(time.Millisecond))

	// Ingestion: how fast central stores the burst.
	// The steady rate: from the first count taken with the whole fleet
	// connected to the last event stored.
	var first, last time.Time
	nFirst := -1
	cpuFirst := time.Duration(0)
	testkit.WaitFor(t, 5*time.Minute, "every event stored", func() bool {
		var n int
		if err := st.DB().QueryRowContext(ctx, `SELECT count(*) FROM events`).Scan(&n); err != nil {
			return false
		}
		if nFirst < 0 {
			first, nFirst, cpuFirst = time.Now(), n, procCPU(cen.pid)
		}
		last = time.Now()
		return n >= total
	})
	steady := float64(total-nFirst) / max(last.Sub(first).Seconds(), 1e-3)
	cpuSteady := procCPU(cen.pid) - cpuFirst
	var n, distinct int
	must(t, st.DB().QueryRowContext(ctx, `SELECT count(*), count(DISTINCT id) FROM events`).Scan(&n, &distinct))
	var minRecv, maxRecv int64
	must(t, st.DB().QueryRowContext(ctx, `SELECT min(received), max(received) FROM events`).Scan(&minRecv, &maxRecv))
	span := time.Duration(maxRecv-minRecv) * time.Millisecond
	rate := float64(total) / max(span.Seconds(), 1e-3)
	cpuIngest := procCPU(cen.pid) - cpu0
	t.Logf("ingestion: %d events from %d edges stored (%d rows, %d distinct ids); all of it over %v of central's receive times (%.0f events/s, fleet still connecting); steady with the fleet connected: %d events in %v = %.0f events/s (goal >= 1000); central CPU %v in all = %v per event (%v per event in the steady part)",
		total, nEdges, n, distinct, span.Round(time.Millisecond), rate, total-nFirst, last.Sub(first).Round(time.Millisecond), steady,
		cpuIngest.Round(time.Millisecond), cpuIngest/time.Duration(total), cpuSteady/time.Duration(max(total-nFirst, 1)))
	if n != total || distinct != total {
		t.Errorf("stored %d events (%d distinct), want each of %d exactly once", n, distinct, total)
	}
	testkit.WaitFor(t, 2*time.Minute, "every outbox emptied by central's receipts", func() bool {
		for _, e := range edges {
			if e.outbox.Len() > 0 {
				return false
			}
		}
		return true
	})

	// Approve-to-enforced across the fleet, one change at a time.
	var all []time.Duration
	var bytesPerChange []int64
	cpuChanges, selfChanges := time.Duration(0), time.Duration(0)
	time.Sleep(time.Second) // let status and receipt traffic settle
	for c := range changes {
		name := deviceName(seedDevices + c)
		w0 := procWchar(mq.PID())
		cpuA, selfA := procCPU(cen.pid), procCPU(os.Getpid())
		start := time.Now()
		must(t, st.ApproveDevice(ctx, name, "staff", "ok", time.Now().Add(24*time.Hour)))
		v, err := st.AllowlistVersion(ctx)
		must(t, err)
		lat := make([]time.Duration, 0, nEdges)
		testkit.WaitFor(t, time.Minute, "approval enforced on every edge", func() bool {
			lat = lat[:0]
			for _, e := range edges {
				at := e.reg.at(v)
				if at.IsZero() {
					return false
				}
				lat = append(lat, at.Sub(start))
			}
			return true
		})
		for _, e := range edges {
			if d, ok := e.reg.t.Lookup(name); !ok || !d.Active() {
				t.Fatalf("%s: %s not active at version %d", e.id, name, v)
			}
		}
		time.Sleep(500 * time.Millisecond) // the edges' status messages after the change
		bytesPerChange = append(bytesPerChange, procWchar(mq.PID())-w0)
		cpuChanges += procCPU(cen.pid) - cpuA
		selfChanges += procCPU(os.Getpid()) - selfA
		slices.Sort(lat)
		t.Logf("change %d (version %d): enforced on %d edges p50 %v p99 %v max %v; broker wrote %d bytes",
			c+1, v, nEdges, pct(lat, 50), pct(lat, 99), lat[len(lat)-1].Round(time.Millisecond), bytesPerChange[c])
		all = append(all, lat...)
	}
	slices.Sort(all)
	var deltas, fulls int64
	for _, e := range edges {
		cn := e.c.Counters()
		deltas += cn["deltas_applied"]
		fulls += cn["snapshots_applied"]
	}
	slices.Sort(bytesPerChange)
	rss, hwm := testkit.ProcStatusKiB(cen.pid, "VmRSS"), testkit.ProcStatusKiB(cen.pid, "VmHWM")
	t.Logf("approve-to-enforced over %d changes x %d edges: p50 %v p99 %v (goal p99 < 1s; central's store poll every 100ms included)",
		changes, nEdges, pct(all, 50), pct(all, 99))
	t.Logf("broker bytes written per change (median, all edges together, includes each edge's status reply): %d = %d per edge",
		bytesPerChange[len(bytesPerChange)/2], bytesPerChange[len(bytesPerChange)/2]/int64(nEdges))
	t.Logf("edges applied %d deltas and %d full snapshots in all", deltas, fulls)
	if os.Getenv("SIMDEBUG") != "" {
		t.Logf("central log:\n%s", tail([]byte(cen.log.String()), 20000))
	}
	t.Logf("central: CPU %v during ingestion, %v per change; RSS %d KiB, peak %d KiB; the %d simulated edges together: CPU %v per change (%v per edge: verify, apply, persist, status)",
		cpuIngest.Round(time.Millisecond), (cpuChanges / changes).Round(time.Millisecond), rss, hwm, nEdges,
		(selfChanges / changes).Round(time.Millisecond), (selfChanges / changes / time.Duration(nEdges)).Round(time.Microsecond))
	var la string
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		la = strings.TrimSpace(string(b))
	}
	t.Logf("machine load while measuring (/proc/loadavg): %s on %d CPUs", la, runtime.NumCPU())
}

func pct(s []time.Duration, p int) time.Duration {
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, len(s)*p/100)].Round(time.Millisecond)
}

func deviceName(i int) string { return fmt.Sprintf("dev%05d.sim.example.edu", i) }

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func secret() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// simEdge is one simulated edge: the real sync client, outbox and device
// table.
type simEdge struct {
	id     string
	c      *centralclient.Client
	outbox *centralclient.Outbox
	reg    *timedTable
}

func newEdge(t *testing.T, sp *spool.Spool, id, brokerURL, password string, pub []byte) *simEdge {
	t.Helper()
	tab, err := devices.New(nil, sp.KV(id+"/susp/"), nil)
	must(t, err)
	ob, err := centralclient.NewOutbox(sp.KV(id+"/outbox/"), id, 0, nil, nil)
	must(t, err)
	reg := &timedTable{t: tab, seen: map[int64]time.Time{}}
	c, err := centralclient.New(centralclient.Options{
		EdgeID: id, BrokerURL: brokerURL, Password: password, PublicKey: pub,
		Allow: sp.KV(id + "/allow/"), Outbox: ob, Registry: reg,
		HeartbeatInterval: time.Hour, MaxReconnectInterval: 2 * time.Second,
	})
	must(t, err)
	return &simEdge{id: id, c: c, outbox: ob, reg: reg}
}

// timedTable is the device table, noting when each version was set.
type timedTable struct {
	t       *devices.Table
	version atomic.Int64
	mu      sync.Mutex
	seen    map[int64]time.Time
}

func (r *timedTable) SetCentral(v int64, issued time.Time, ds []devices.Device, until time.Time) {
	r.t.SetCentral(v, issued, ds, until)
	now := time.Now()
	r.mu.Lock()
	if _, ok := r.seen[v]; !ok {
		r.seen[v] = now
	}
	r.mu.Unlock()
	r.version.Store(v)
}

func (r *timedTable) CentralDevices() []devices.Device { return r.t.CentralDevices() }

// at is when version v (or a later one) was first set.
func (r *timedTable) at(v int64) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	var first time.Time
	for ver, at := range r.seen {
		if ver >= v && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first
}

func freshSchema(t *testing.T, base string) string {
	t.Helper()
	schema := "postern_sim_" + secret()[:12]
	admin, err := sql.Open("pgx", base)
	must(t, err)
	if _, err := admin.Exec(`CREATE SCHEMA ` + schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Exec(`DROP SCHEMA ` + schema + ` CASCADE`); admin.Close() })
	u, _ := url.Parse(base)
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

type centralProc struct {
	pid int
	key []byte
	log *syncBuf
}

// startCentral builds and starts `postern-central serve` on the database
// and broker, and waits until it is ready.
func startCentral(t *testing.T, dbURL, brokerURL, password string) centralProc {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "postern-central")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/postern/postern/central/cmd/postern-central").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	data := filepath.Join(dir, "data")
	must(t, os.MkdirAll(data, 0o750))
	key, err := allowlist.LoadOrCreateKey(filepath.Join(data, "allowlist.key"))
	must(t, err)
	addr := testkit.FreeAddr(t, "")
	cfg := filepath.Join(dir, "central.toml")
	body := fmt.Sprintf(`data_dir = %q
[http]
listen = %q
base_url = "http://%s"
[database]
url = %q
leader_interval = "100ms"
[mqtt]
listen = ""
url = %q
username = %q
password = %q
client_id = %q
[log]
level = "warn"
`, data, addr, addr, dbURL, brokerURL, brokertest.CentralID, password, brokertest.CentralID)
	must(t, os.WriteFile(cfg, []byte(body), 0o600))
	cmd := exec.Command(bin, "serve", "-config", cfg)
	logBuf := &syncBuf{}
	cmd.Stdout, cmd.Stderr = logBuf, logBuf
	must(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("central log (tail):\n%s", tail([]byte(logBuf.String()), 4000))
		}
	})
	testkit.WaitFor(t, 30*time.Second, "central ready", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return centralProc{pid: cmd.Process.Pid, key: key.Public().(ed25519.PublicKey), log: logBuf}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// procCPU is the user+system CPU time of process pid.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may contain spaces).
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stt, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+stt) * 10 * time.Millisecond // USER_HZ 100
}

// procWchar is the bytes process pid has written (sockets included).
func procWchar(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "wchar: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}
