// Package hatest runs two postern-central processes on one PostgreSQL
// schema and one Mosquitto (dynamic security plugin, as deploy/mosquitto
// ships it) with a real postern-edge, as deploy/README.md's "Central at
// scale" describes: who publishes the allowlist, what the edge enforces
// across a kill -9 of the publisher, that the edge's events are stored
// exactly once, that the web works on either instance without stickiness,
// and that enrolment and revocation manage the edge's broker account.
package hatest

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/postern/postern/shared/allowlist"
	"github.com/postern/postern/shared/dnstest"
	"github.com/postern/postern/shared/testkit"
)

// retainedWatcher follows the retained allowlist on the broker and counts
// any step back to an older version.
type retainedWatcher struct {
	mu                   sync.Mutex
	version, regressions int64
}

func (w *retainedWatcher) get() int64 { w.mu.Lock(); defer w.mu.Unlock(); return w.version }

func watchRetained(t *testing.T, c *cluster) *retainedWatcher {
	t.Helper()
	w := &retainedWatcher{}
	// A central-role account: an edge account unknown to central's store
	// would be deleted by central's prune loop.
	const account = "postern-central-watcher"
	cl := paho.NewClient(paho.NewClientOptions().AddBroker(c.env.URL).SetClientID(account).
		SetUsername(account).SetPassword(c.env.Password(account)).SetCleanSession(true))
	if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("watcher: %v", tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(100) })
	tok := cl.Subscribe(c.env.Topics.Allowlist(), 1, func(_ paho.Client, m paho.Message) {
		s, err := allowlist.Decode(m.Payload(), c.pub)
		if err != nil {
			t.Errorf("snapshot on the broker: %v", err)
			return
		}
		w.mu.Lock()
		if s.Version < w.version {
			w.regressions++
		}
		w.version = s.Version
		w.mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("watcher subscribe: %v", tok.Error())
	}
	return w
}

// world is the DNS zone: devices one and two (forward-confirmed reverse
// DNS on loopback addresses the edge sees as local), and an MX for their
// senders' domain.
func world(t *testing.T) *dnstest.Server {
	d := dnstest.Start(t)
	for i, n := range []string{"one", "two", "three"} {
		ip := fmt.Sprintf("127.0.0.%d", 10+i)
		d.AddA(n+".dept.example.edu", ip)
		d.AddPTR(ip, n+".dept.example.edu")
	}
	d.AddMX("dept.example.edu", 10, "mx.dept.example.edu")
	d.AddA("mx.dept.example.edu", "127.0.0.99")
	return d
}

func storeVersion(t *testing.T, db *sql.DB) int64 {
	t.Helper()
	var v int64
	if err := db.QueryRow(`SELECT value FROM counters WHERE name = 'allowlist_version'`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

const staffPassword = "correct horse battery staple 42"

// TestTwoInstancesWithEdge: two `postern-central serve` processes on
// PostgreSQL and Mosquitto, one real edge enrolled through instance 1
// (its broker account made by central through the dynamic security
// plugin). Approve on instance 1: the edge relays for the device. kill -9
// of instance 1, the publisher: instance 2 takes over within a few leader
// intervals; approve on instance 2: the edge relays for that device too.
// The edge's events from before and after the kill are all stored, each
// exactly once; the retained snapshot never goes back and ends at the
// store's version. Revoking the edge on instance 2's console, with the
// staff session and CSRF token obtained on instance 1, deletes its broker
// account: the edge is disconnected and its password no longer works.
func TestTwoInstancesWithEdge(t *testing.T) {
	d := world(t)
	c := newCluster(t, d.Addr, "")
	one, two := c.instance("central-1", "postern-central"), c.instance("central-2", "postern-central-2")
	watch := watchRetained(t, c)
	db, err := sql.Open("pgx", c.db)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	// Instance 1 first, so that it is the publisher.
	one.start()
	testkit.WaitFor(t, 20*time.Second, "instance 1 ready and publishing", func() bool { return one.ready() && one.leading() })
	two.start()
	testkit.WaitFor(t, 20*time.Second, "instance 2 ready", two.ready)
	one.cli(staffPassword+"\n", "user", "add", "admin", "-password-stdin")
	token := strings.TrimSpace(one.cli("", "user", "token", "admin", "-scope", "read-write"))
	staff := login(t, one, "admin", staffPassword)

	// Enrol an edge through instance 1: the answer's password works on
	// the broker at once (no hand step).
	var created struct {
		Token string `json:"enrolment_token"`
	}
	json.Unmarshal(one.api(token, "POST", "/api/v1/edges", `{"id": "e1", "name": "building 1"}`, http.StatusCreated), &created)
	e := newEdge(t, d.Addr)
	e.enroll(one.base, created.Token)
	e.start()
	testkit.WaitFor(t, 20*time.Second, "edge applied a snapshot (unregistered device refused with 550)", func() bool {
		return strings.HasPrefix(e.rcpt(10, "scanner@dept.example.edu", "a@example.com"), "550 5.7.1")
	})
	if two.leading() {
		t.Fatal("both instances lead")
	}

	// Events before the kill: refusals of unregistered clients 127.0.0.20-24.
	const perIP = 2
	probeRange := func(from, to int) {
		for ip := from; ip <= to; ip++ {
			for range perIP {
				if r := e.rcpt(ip, "x@dept.example.edu", "a@example.com"); !strings.HasPrefix(r, "550 5.7.1") {
					t.Fatalf("unregistered 127.0.0.%d: %q, want 550 5.7.1", ip, r)
				}
			}
		}
	}
	probeRange(20, 24)

	// Approve on instance 1: enforced by the edge.
	one.cli("", "device", "register", "-name", "one.dept.example.edu", "-ip", "127.0.0.10", "-owner", "Ada", "-contact", "ada@dept.example.edu", "-sender", "scanner@dept.example.edu")
	approved := time.Now()
	one.api(token, "POST", "/api/v1/devices/one.dept.example.edu/approve", `{"force": true}`, http.StatusOK)
	testkit.WaitFor(t, 15*time.Second, "edge relays for device one", func() bool {
		return strings.HasPrefix(e.rcpt(10, "scanner@dept.example.edu", "a@example.com"), "250")
	})
	t.Logf("approve on instance 1 -> enforced on the edge: %v", time.Since(approved).Round(time.Millisecond))
	if two.published() {
		t.Fatal("instance 2 published while instance 1 leads")
	}

	// kill -9 the publisher.
	one.kill9()
	killed := time.Now()
	testkit.WaitFor(t, 10*time.Second, "instance 2 takes over", two.leading)
	handover := time.Since(killed)
	testkit.WaitFor(t, 10*time.Second, "instance 2 publishes", two.published)
	t.Logf("kill -9 -> instance 2 leads: %v, publishes: %v (leader_interval 200ms)", handover.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	if handover > 5*time.Second {
		t.Errorf("hand-over took %v, want a few leader intervals", handover)
	}
	if !two.ready() {
		t.Fatal("instance 2 not ready after instance 1 died")
	}

	// Events while instance 1 is dead.
	probeRange(25, 29)

	// Approve on instance 2: enforced.
	two.cli("", "device", "register", "-name", "two.dept.example.edu", "-ip", "127.0.0.11", "-owner", "Ada", "-contact", "ada@dept.example.edu", "-sender", "copier@dept.example.edu")
	approved = time.Now()
	two.api(token, "POST", "/api/v1/devices/two.dept.example.edu/approve", `{"force": true}`, http.StatusOK)
	testkit.WaitFor(t, 15*time.Second, "edge relays for device two", func() bool {
		return strings.HasPrefix(e.rcpt(11, "copier@dept.example.edu", "a@example.com"), "250")
	})
	t.Logf("approve on instance 2 -> enforced on the edge: %v", time.Since(approved).Round(time.Millisecond))
	if r := e.rcpt(10, "scanner@dept.example.edu", "a@example.com"); !strings.HasPrefix(r, "250") {
		t.Fatalf("device one after the hand-over: %q", r)
	}
	testkit.WaitFor(t, 10*time.Second, "retained snapshot at the store's version", func() bool { return watch.get() == storeVersion(t, db) })

	// The edge flushes its aggregated events when it stops and sends its
	// outbox when it starts, while instance 1 is still dead: Mosquitto
	// hands part of them to instance 1's persistent session (a member of
	// the shared subscription) and keeps them there. When instance 1
	// returns it stores them; every refusal is stored once (the counts add
	// up to the probes made, no more).
	counts := func() (map[string][2]int64, error) {
		rows, err := db.Query(`SELECT client_ip, COUNT(*), COALESCE(SUM(count), 0) FROM events WHERE edge = 'e1' AND kind = 'refusal' GROUP BY client_ip`)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		m := map[string][2]int64{}
		for rows.Next() {
			var ip string
			var n, sum int64
			if err := rows.Scan(&ip, &n, &sum); err != nil {
				return nil, err
			}
			m[ip] = [2]int64{n, sum}
		}
		return m, rows.Err()
	}
	total := func(m map[string][2]int64) (n int64) {
		for ip := 20; ip <= 29; ip++ {
			n += m[fmt.Sprintf("127.0.0.%d", ip)][1]
		}
		return n
	}
	e.stop()
	e.start()
	time.Sleep(2 * time.Second)
	before, err := counts()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("refusals stored while instance 1 is dead: %d of %d", total(before), 10*perIP)
	one.start()
	testkit.WaitFor(t, 20*time.Second, "instance 1 back and ready", one.ready)
	var got map[string][2]int64
	testkit.WaitFor(t, 20*time.Second, "every refusal stored", func() bool {
		got, err = counts()
		if err != nil {
			t.Fatal(err)
		}
		for ip := 20; ip <= 29; ip++ {
			if got[fmt.Sprintf("127.0.0.%d", ip)][1] < perIP {
				return false
			}
		}
		return true
	})
	time.Sleep(time.Second) // a duplicate would arrive now
	got, _ = counts()
	if strings.Count(one.log.String(), "now the allowlist publisher") > 1 {
		t.Error("instance 1 took the lead back from instance 2")
	}
	for ip := 20; ip <= 29; ip++ {
		k := fmt.Sprintf("127.0.0.%d", ip)
		if got[k][1] != perIP {
			t.Errorf("%s: %d refusals stored in %d events, want %d", k, got[k][1], got[k][0], perIP)
		}
	}
	var rows, ids int64
	db.QueryRow(`SELECT COUNT(*), COUNT(DISTINCT id) FROM events`).Scan(&rows, &ids)
	if rows != ids {
		t.Errorf("%d event rows for %d ids", rows, ids)
	}
	watch.mu.Lock()
	if watch.regressions != 0 {
		t.Errorf("retained snapshot went back %d times", watch.regressions)
	}
	watch.mu.Unlock()

	// Revoke on instance 2 with instance 1's session and CSRF token.
	pw := enrolledPassword(t, e)
	edgeConnects := func() error {
		cl := paho.NewClient(paho.NewClientOptions().AddBroker(c.env.URL).SetClientID("e1").SetUsername("e1").SetPassword(pw).
			SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
		tok := cl.Connect()
		tok.WaitTimeout(10 * time.Second)
		if tok.Error() == nil {
			cl.Disconnect(50)
		}
		return tok.Error()
	}
	testkit.WaitFor(t, 10*time.Second, "edge online in central", func() bool {
		var online bool
		db.QueryRow(`SELECT online FROM edges WHERE id = 'e1'`).Scan(&online)
		return online
	})
	lost := strings.Count(e.log.String(), "mqtt connection lost")
	resp, body := staff.post(two, "/staff/edges/e1/revoke", url.Values{"reason": {"stolen"}}, staff.csrf)
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "edge-revoked") {
		t.Fatalf("revoke on instance 2: %d %s %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	testkit.WaitFor(t, 10*time.Second, "edge disconnected by the broker", func() bool {
		return strings.Count(e.log.String(), "mqtt connection lost") > lost
	})
	if err := edgeConnects(); err == nil {
		t.Fatal("the revoked edge's password still works on the broker")
	}
	ids2, err := c.env.Provisioner().Edges(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids2 {
		if id == "e1" {
			t.Fatal("e1's broker account still exists")
		}
	}
}

func enrolledPassword(t *testing.T, e *edge) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dir, "data", "enrolment.json"))
	if err != nil {
		t.Fatal(err)
	}
	var en struct {
		Password string `json:"password"`
	}
	if err := json.Unmarshal(b, &en); err != nil || en.Password == "" {
		t.Fatalf("enrolment.json: %v", err)
	}
	return en.Password
}

// browser keeps cookies by name and sends them to every instance, as a
// browser does behind one load-balanced name; it never follows redirects.
type browser struct {
	t       *testing.T
	cookies map[string]string
	csrf    string
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (b *browser) do(i *instance, method, path string, form url.Values) (*http.Response, string) {
	b.t.Helper()
	var req *http.Request
	if form != nil {
		req, _ = http.NewRequest(method, i.base+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		req, _ = http.NewRequest(method, i.base+path, nil)
	}
	for k, v := range b.cookies {
		req.AddCookie(&http.Cookie{Name: k, Value: v})
	}
	resp, err := client().Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	for _, c := range resp.Cookies() {
		if c.MaxAge < 0 || c.Value == "" {
			delete(b.cookies, c.Name)
		} else {
			b.cookies[c.Name] = c.Value
		}
	}
	if m := csrfRE.FindStringSubmatch(sb.String()); m != nil {
		b.csrf = m[1]
	}
	return resp, sb.String()
}

func (b *browser) post(i *instance, path string, form url.Values, csrf string) (*http.Response, string) {
	b.t.Helper()
	form.Set("csrf", csrf)
	return b.do(i, http.MethodPost, path, form)
}

// login signs in on instance i and returns the browser holding the
// session cookie and the CSRF token of i's pages.
func login(t *testing.T, i *instance, user, password string) *browser {
	t.Helper()
	b := &browser{t: t, cookies: map[string]string{}}
	b.do(i, http.MethodGet, "/staff/login", nil)
	if b.csrf == "" {
		t.Fatal("login page has no CSRF token")
	}
	resp, body := b.post(i, "/staff/login", url.Values{"username": {user}, "password": {password}}, b.csrf)
	if resp.StatusCode != http.StatusSeeOther || b.cookies["postern_session"] == "" {
		t.Fatalf("login on %s: %d %s", i.name, resp.StatusCode, body)
	}
	return b
}

// TestNoStickiness: the web needs no sticky load balancing. A staff
// session made on instance 1 is honoured by instance 2 (sessions live in
// the database), a CSRF token from instance 1's form is accepted by
// instance 2, and the owner cookie set by a registration on instance 1
// shows the owner's device on instance 2; without the cookies instance 2
// refuses each.
func TestNoStickiness(t *testing.T) {
	d := world(t)
	c := newCluster(t, d.Addr, "")
	one, two := c.instance("central-1", "postern-central"), c.instance("central-2", "postern-central-2")
	one.start()
	two.start()
	testkit.WaitFor(t, 20*time.Second, "both ready", func() bool { return one.ready() && two.ready() })
	one.cli(staffPassword+"\n", "user", "add", "admin", "-password-stdin")

	staff := login(t, one, "admin", staffPassword)
	resp, body := staff.do(two, http.MethodGet, "/staff", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Log out admin") {
		t.Fatalf("instance 2 with instance 1's session: %d", resp.StatusCode)
	}
	anon := &browser{t: t, cookies: map[string]string{}}
	if resp, _ := anon.do(two, http.MethodGet, "/staff", nil); resp.StatusCode == http.StatusOK {
		t.Fatal("instance 2 shows the console without a session")
	}

	// A form from instance 1, submitted to instance 2.
	staff.do(one, http.MethodGet, "/staff/edges", nil)
	csrf1 := staff.csrf
	resp, _ = staff.post(two, "/staff/edges", url.Values{"id": {"e7"}, "name": {"made across instances"}}, csrf1)
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/staff/edges/e7?shown=") {
		t.Fatalf("create edge on instance 2 with instance 1's CSRF token: %d (Location %q)", resp.StatusCode, resp.Header.Get("Location"))
	}
	// The redirect's GET lands on the other instance: the token travels in
	// the browser's one-minute cookie, not in instance 2's memory.
	if resp, body = staff.do(one, http.MethodGet, resp.Header.Get("Location"), nil); resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="enrol-token"`) {
		t.Fatalf("edge page after creating e7: %d, token shown: %v", resp.StatusCode, strings.Contains(body, `id="enrol-token"`))
	}
	if resp, _ := staff.post(two, "/staff/edges", url.Values{"id": {"e8"}}, "wrong-token-0123456789abcdef0123456789"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a wrong CSRF token on instance 2: %d, want 403", resp.StatusCode)
	}

	// An owner registers on instance 1 and sees the device on instance 2.
	owner := &browser{t: t, cookies: map[string]string{}}
	owner.do(one, http.MethodGet, "/register", nil)
	resp, body = owner.post(one, "/register", url.Values{"op": {"submit"}, "name": {"three.dept.example.edu"}, "ips": {"127.0.0.12"},
		"owner": {"Ada"}, "department": {"Physics"}, "contact_email": {"ada@dept.example.edu"}, "senders": {"lab@dept.example.edu"},
		"purpose": {"lab instrument"}}, owner.csrf)
	if resp.StatusCode != http.StatusSeeOther || owner.cookies["postern_owner"] == "" {
		t.Fatalf("register on instance 1: %d %s", resp.StatusCode, body)
	}
	resp, body = owner.do(two, http.MethodGet, "/my", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "three.dept.example.edu") {
		t.Fatalf("my devices on instance 2 with instance 1's owner cookie: %d", resp.StatusCode)
	}
	if _, body := anon.do(two, http.MethodGet, "/my", nil); strings.Contains(body, "three.dept.example.edu") {
		t.Fatal("instance 2 shows the owner's device without the owner cookie")
	}

	// The shipped HAProxy configuration in front of both, round robin
	// without stickiness, checking /readyz: a login through it works on
	// every request; after kill -9 of one instance every request still
	// succeeds (a refused connection is retried on the other instance,
	// and the health check takes the dead one out).
	lb := haproxy(t, one, two)
	testkit.WaitFor(t, 20*time.Second, "haproxy answers /readyz", func() bool {
		resp, err := client().Get(lb.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	viaLB := login(t, lb, "admin", staffPassword)
	if n := through(viaLB, lb, 20); n != 0 {
		t.Fatalf("%d of 20 console requests through haproxy failed", n)
	}
	two.kill9()
	failed := 0
	for deadline := time.Now().Add(6 * time.Second); time.Now().Before(deadline); {
		failed += through(viaLB, lb, 5)
		time.Sleep(100 * time.Millisecond)
	}
	if failed != 0 {
		t.Errorf("%d console requests through haproxy failed after kill -9 of one instance", failed)
	}
	viaLB.do(lb, http.MethodGet, "/staff/edges", nil)
	resp, _ = viaLB.post(lb, "/staff/edges", url.Values{"id": {"e9"}}, viaLB.csrf)
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/staff/edges/e9?shown=") {
		t.Fatalf("form through haproxy after the kill: %d (Location %q)", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, body := viaLB.do(lb, http.MethodGet, resp.Header.Get("Location"), nil); resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="enrol-token"`) {
		t.Fatalf("edge page through haproxy after creating e9: %d", resp.StatusCode)
	}
	if !strings.Contains(lb.log.String(), "central-2 is DOWN") {
		t.Errorf("haproxy did not take the dead instance out (no \"central-2 is DOWN\" in its log)")
	}
}

// TestEnrolmentWithoutBrokerAccount: when central cannot create the edge's
// broker account (here: a wrong provisioning password) the enrolment fails
// with a message saying so, nothing is enrolled, and the token works again
// once the broker can be reached; an instance whose signing key differs
// from the one the database pinned refuses to start.
func TestEnrolmentWithoutBrokerAccount(t *testing.T) {
	d := world(t)
	c := newCluster(t, d.Addr, "")
	one := c.instance("central-1", "postern-central")
	good := fmt.Sprintf("dynsec_password = %q", c.env.DynsecPassword("postern-central"))
	one.edit(good, `dynsec_password = "wrong-password"`)
	one.start()
	testkit.WaitFor(t, 20*time.Second, "instance ready", one.ready)
	one.cli(staffPassword+"\n", "user", "add", "admin", "-password-stdin")
	token := strings.TrimSpace(one.cli("", "user", "token", "admin", "-scope", "read-write"))
	var created struct {
		Token string `json:"enrolment_token"`
	}
	json.Unmarshal(one.api(token, "POST", "/api/v1/edges", `{"id": "e2"}`, http.StatusCreated), &created)

	e := newEdge(t, d.Addr)
	out, err := exec.Command(filepath.Join(bin, "postern-edge"), "enroll", "-config", e.cfg, "-central", one.base, "-token", created.Token, "-allow-http").CombinedOutput()
	if err == nil {
		t.Fatalf("enrolment succeeded without a broker account:\n%s", out)
	}
	if !strings.Contains(string(out), "424") || !strings.Contains(string(out), "could not create the edge's account on the MQTT broker") {
		t.Fatalf("enrolment error does not say why:\n%s", out)
	}
	db, err := sql.Open("pgx", c.db)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var enrolled bool
	var hash string
	db.QueryRow(`SELECT enrolled, password_hash FROM edges WHERE id = 'e2'`).Scan(&enrolled, &hash)
	if enrolled || hash != "" {
		t.Fatalf("edge enrolled (%v, hash %q) although its broker account was not made", enrolled, hash)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "data", "enrolment.json")); err == nil {
		t.Fatal("the edge wrote an enrolment")
	}

	// Fixed: the same token now enrols, and the edge gets on the broker.
	one.stop()
	one.edit(`dynsec_password = "wrong-password"`, good)
	one.start()
	testkit.WaitFor(t, 20*time.Second, "instance ready again", one.ready)
	e.enroll(one.base, created.Token)
	e.start()
	testkit.WaitFor(t, 20*time.Second, "edge connected and applied a snapshot", func() bool {
		return strings.Contains(e.log.String(), "allowlist applied")
	})

	// A second instance that made its own signing key is refused.
	otherKey := filepath.Join(t.TempDir(), "other.key")
	if _, err := allowlist.LoadOrCreateKey(otherKey); err != nil {
		t.Fatal(err)
	}
	two := c.instance("central-2", "postern-central-2")
	two.edit(fmt.Sprintf("signing_key_file = %q", c.key), fmt.Sprintf("signing_key_file = %q", otherKey))
	cmd := exec.Command(filepath.Join(bin, "postern-central"), "serve", "-config", two.cfg)
	done := make(chan []byte, 1)
	go func() { b, _ := cmd.CombinedOutput(); done <- b }()
	select {
	case b := <-done:
		if cmd.ProcessState.Success() || !strings.Contains(string(b), "allowlist signing key differs") {
			t.Fatalf("instance with another signing key: %v\n%s", cmd.ProcessState, b)
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("instance with another signing key kept running")
	}
}
