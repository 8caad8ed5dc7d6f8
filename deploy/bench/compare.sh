#!/usr/bin/env bash
# Side-by-side benchmark of device relays on this machine, in one run:
# the Postern edge, Postfix 3.7, Exim 4 and OpenSMTPD (Debian packages),
# plus the raw ceiling (smtp-source straight into the counting sink).
# Every relay runs from a private folder with its own configuration, queue
# and loopback ports; the packages are unpacked (apt-get download + dpkg
# -x), never installed as the system MTA. See README.md next to this file.
#
#   deploy/bench/compare.sh                          # 3 alternating rounds
#   BENCH_SYSTEMS="raw postfix edge" deploy/bench/compare.sh
#   BENCH_MESSAGES=10000 BENCH_SESSIONS=50 BENCH_ROUNDS=1 \
#     BENCH_SYSTEMS="postfix edge" deploy/bench/compare.sh   # the burst
#
# Environment:
#   BENCH_SYSTEMS    systems to measure, in round order
#                    (default "raw postfix edge exim opensmtpd")
#   BENCH_MESSAGES   messages per measured round           (default 3000)
#   BENCH_SLOW_MESSAGES  messages per round for Exim and OpenSMTPD, which
#                    relay 5-30 msg/s here                  (default 200)
#   BENCH_SESSIONS   parallel SMTP sessions                 (default 20)
#   BENCH_SIZE       message payload in bytes               (default 10240)
#   BENCH_ROUNDS     measured rounds; rates are medians     (default 3)
#   BENCH_SYNCS      1 = after the rounds, one more round per system under
#                    strace counting fsync/fdatasync/msync (slow; not timed)
#   BENCH_SYNC_MESSAGES  messages in that round             (default 500)
#   BENCH_KEEP       1 = keep the work folder (logs, configs) after the run
#   BENCH_PERF       1 = perf record -g of the edge over its round 1
#   BENCH_PPROF      seconds: CPU profile of the edge from its admin
#                    /debug/pprof/ over round 1 (WORK/edge-cpu.pprof), and a
#                    heap/alloc profile after it (WORK/edge-allocs.pprof)
#   BENCH_EDGE_BIN   run this edge binary instead of building one
#   BENCH_EDGE_DELIVERY  extra TOML lines for the edge's [delivery]
#   BENCH_WARMUP     warm-up messages per system            (default 200)
#   BENCH_TIMEOUT    seconds to wait for the sink per round (default 240)
#   BENCH_BASE_PORT  first of the loopback ports used      (default 10025)
#   BENCH_DNS_IP     loopback address of the DNS server, port 53 (default 127.0.0.153)
#   BENCH_SMTPRELAY_BIN  a decke/smtprelay binary: adds "smtprelay" to the
#                    default systems (built outside this repository, see
#                    deploy/bench/README.md; it keeps no queue)
#   BENCH_PKG_DIR    where the Exim/OpenSMTPD .debs are unpacked
#                    (default /var/tmp/postern-bench-pkgs)
#
# Everything listens on loopback only. A system Postfix (port 25,
# /etc/postfix) is never touched: ours runs with `postfix -c` from a private
# config folder, its own queue, and is stopped on exit.
set -euo pipefail

N=${BENCH_MESSAGES:-3000}
NSLOW=${BENCH_SLOW_MESSAGES:-200}
SESS=${BENCH_SESSIONS:-20}
SIZE=${BENCH_SIZE:-10240}
ROUNDS=${BENCH_ROUNDS:-3}
SMTPRELAY_BIN=${BENCH_SMTPRELAY_BIN:-}
DEFAULT_SYSTEMS="raw postfix edge exim opensmtpd"
[ -n "$SMTPRELAY_BIN" ] && DEFAULT_SYSTEMS+=" smtprelay"
SYSTEMS=${BENCH_SYSTEMS:-${BENCH_ONLY:-$DEFAULT_SYSTEMS}}
BASE=${BENCH_BASE_PORT:-10025}
PF_SMTPD=$BASE              # Postfix smtpd
PF_SINK=$((BASE + 1))       # smtp-sink behind Postfix
EDGE_SMTP=$((BASE + 2))     # postern-edge SMTP
EDGE_SINK=$((BASE + 3))     # smtp-sink behind the edge (its smarthost)
EDGE_ADMIN=$((BASE + 4))    # postern-edge admin endpoint
RAW_SINK=$((BASE + 5))      # smtp-sink fed by smtp-source directly
EX_SMTPD=$((BASE + 6))      # Exim
EX_SINK=$((BASE + 7))
OS_SMTPD=$((BASE + 8))      # OpenSMTPD
OS_SINK=$((BASE + 9))
SR_SMTPD=$((BASE + 10))     # decke/smtprelay
SR_SINK=$((BASE + 11))
DNS_IP=${BENCH_DNS_IP:-127.0.0.153}  # loopback DNS server for example.edu
DNS_ADDR=$DNS_IP:53
WARMUP=${BENCH_WARMUP:-200}
TIMEOUT_S=${BENCH_TIMEOUT:-240}
PKG=${BENCH_PKG_DIR:-/var/tmp/postern-bench-pkgs}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

log() { printf '%s bench: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
now_ns() { date +%s%N; }
has() { case " $SYSTEMS " in *" $1 "*) return 0 ;; esac; return 1; }

[ "$(id -u)" = 0 ] || die "run as root (Postfix's master, Exim and OpenSMTPD need it)"
[ "$SESS" -le 50 ] || die "BENCH_SESSIONS above 50 exceeds Postfix's default per-client limit"

# --- 1. Packages. Postfix is installed (it brings smtp-source and
# smtp-sink; debconf "No configuration": the system instance is neither set
# up nor started). Exim and OpenSMTPD are only unpacked into $PKG: installing
# them would replace Postfix as the system MTA. Their shared libraries
# (libidn12, libevent) are installed as ordinary packages, and the system
# users their binaries look up at start are created if missing.
apt_install() {
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}
if ! command -v smtp-source >/dev/null || ! [ -x /usr/sbin/postfix ]; then
	log "installing postfix (No configuration: the system instance is not set up or started)"
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	apt_install postfix || die "apt-get install postfix failed"
fi
PF_VERSION=$(postconf -d -h mail_version)
sysuser() { # name
	getent passwd "$1" >/dev/null && return 0
	getent group "$1" >/dev/null || groupadd --system "$1"
	useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin -g "$1" "$1"
}
EXIM_BIN=$PKG/root/usr/sbin/exim4
OS_BIN=$PKG/root/usr/sbin/smtpd
if has exim || has opensmtpd; then
	if ! [ -x "$EXIM_BIN" ] || ! [ -x "$OS_BIN" ]; then
		log "unpacking exim4-daemon-light and opensmtpd into $PKG (not installed)"
		mkdir -p "$PKG/debs" "$PKG/root"
		(cd "$PKG/debs" && apt-get download exim4-daemon-light exim4-base opensmtpd >/dev/null 2>&1 ||
			{ apt-get update -qq && apt-get download exim4-daemon-light exim4-base opensmtpd >/dev/null; }) ||
			die "apt-get download exim4/opensmtpd failed"
		for d in "$PKG"/debs/*.deb; do dpkg -x "$d" "$PKG/root"; done
	fi
	apt_install libidn12 libevent-2.1-7 || die "apt-get install libidn12 libevent-2.1-7 failed"
	sysuser Debian-exim
	sysuser opensmtpd
	sysuser opensmtpq
	EX_VERSION=$("$EXIM_BIN" -C /dev/null -bV 2>/dev/null | sed -n 's/^Exim version \([^ ]*\).*/\1/p')
	OS_VERSION=$(dpkg-deb -f "$PKG"/debs/opensmtpd_*.deb Version | sed 's/p.*//')
fi

if has smtprelay; then
	[ -n "$SMTPRELAY_BIN" ] && [ -x "$SMTPRELAY_BIN" ] || die "smtprelay needs BENCH_SMTPRELAY_BIN (an executable; see deploy/bench/README.md)"
	SR_VERSION=${BENCH_SMTPRELAY_VERSION:-}
fi
for p in $PF_SMTPD $PF_SINK $EDGE_SMTP $EDGE_SINK $EDGE_ADMIN $RAW_SINK $EX_SMTPD $EX_SINK $OS_SMTPD $OS_SINK $SR_SMTPD $SR_SINK; do
	if ss -Hltn "sport = :$p" | grep -q .; then die "port 127.0.0.1:$p is in use (set BENCH_BASE_PORT)"; fi
done
if ss -Hlun "sport = :53" | grep -q "$DNS_IP"; then die "$DNS_ADDR is in use"; fi

WORK=$(mktemp -d /tmp/postern-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
PF_DIR=$WORK/postfix
PF_STARTED=0

# own_procs BINARY: processes running this exact binary (started by this
# script: the binary lives in the private folder), e.g. Exim's detached
# delivery processes.
own_procs() {
	local p
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/exe" 2>/dev/null)" = "$1" ] && echo "${p#/proc/}"
	done
	return 0
}

cleanup() {
	local rc=$?
	set +e
	if [ "$PF_STARTED" = 1 ]; then postfix -c "$PF_DIR/etc" stop >/dev/null 2>&1; fi
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
	sleep 0.5
	for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
	for pid in $(own_procs "$EXIM_BIN") $(own_procs "$OS_BIN"); do kill "$pid" 2>/dev/null; done
	if [ "$PF_STARTED" = 1 ] && [ -f "$PF_DIR/queue/pid/master.pid" ]; then
		local mp
		mp=$(tr -d ' ' <"$PF_DIR/queue/pid/master.pid")
		[ -n "$mp" ] && kill "$mp" 2>/dev/null
	fi
	if [ "${BENCH_KEEP:-0}" = 1 ] || [ $rc != 0 ]; then
		log "work folder kept: $WORK"
	else
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 2. Build the edge and the helper ---
mkdir -p bin
log "building bin/postern-edge and benchtool"
# The release flags of `make build` (-s -w); perf needs the symbol table.
LDFLAGS="-s -w"
[ "${BENCH_PERF:-0}" = 1 ] && LDFLAGS=""
EDGE_BIN=${BENCH_EDGE_BIN:-bin/postern-edge}
if [ -z "${BENCH_EDGE_BIN:-}" ] && has edge; then
	go build -trimpath -ldflags "$LDFLAGS" -o bin/postern-edge ./edge/cmd/postern-edge || die "go build postern-edge"
fi
go build -o "$WORK/benchtool" ./deploy/bench/benchtool || die "go build benchtool"
BT=$WORK/benchtool

# --- 3. Loopback DNS: example.edu (and subdomains) have MX and A ---
"$BT" dns -listen "$DNS_ADDR" -zone example.edu -a 127.0.0.1 2>"$WORK/dns.log" &
PIDS+=($!)
echo "nameserver $DNS_IP" >"$WORK/resolv.conf"

# --- 4. Sinks: one smtp-sink behind each system, counting messages ---
start_sink() { # port counterfile
	smtp-sink -u nobody -c "127.0.0.1:$1" 1024 >"$2" 2>&1 &
	PIDS+=($!)
}
has postfix && start_sink "$PF_SINK" "$WORK/pf-sink.count"
has edge && start_sink "$EDGE_SINK" "$WORK/edge-sink.count"
RAW_PID=0
has raw && { start_sink "$RAW_SINK" "$WORK/raw-sink.count"; RAW_PID=$!; }
has exim && start_sink "$EX_SINK" "$WORK/exim-sink.count"
has opensmtpd && start_sink "$OS_SINK" "$WORK/opensmtpd-sink.count"
has smtprelay && start_sink "$SR_SINK" "$WORK/smtprelay-sink.count"

# --- 5. Postfix as a device relay, from a private config folder ---
start_postfix() {
mkdir -p "$PF_DIR/etc" "$PF_DIR/queue" "$PF_DIR/data"
chown postfix:postfix "$PF_DIR/data"
cat >"$PF_DIR/etc/main.cf" <<EOF
# Postfix $PF_VERSION as a device relay for the Postern benchmark.
compatibility_level = 3.6
config_directory = $PF_DIR/etc
queue_directory = $PF_DIR/queue
data_directory = $PF_DIR/data
meta_directory = /etc/postfix
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix-bench.example.net
mydomain = example.net
myorigin = \$myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
biff = no
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
maillog_file_prefixes = /tmp, /var
maillog_file = $PF_DIR/maillog
# Relay everything to the sink, as the edge does with delivery.smarthost.
relayhost = [127.0.0.1]:$PF_SINK
relay_domains =
# --- the device-relay policy, the same as the edge's ---
mynetworks = 127.0.0.0/8
# Only local networks may talk to it (edge: smtp.local_networks).
smtpd_client_restrictions = permit_mynetworks, reject
# Local clients may relay; nobody else (no open relay).
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
# The sender's domain must be able to receive NDRs (edge: MX or A lookup).
smtpd_sender_restrictions = reject_non_fqdn_sender, reject_unknown_sender_domain
# SMTP smuggling: normalise bare LF, and do not exempt mynetworks (devices
# ARE mynetworks here; the default exclusion would leave them unchecked).
smtpd_forbid_bare_newline = normalize
smtpd_forbid_bare_newline_exclusions =
# Limits comparable to the edge's defaults.
smtpd_recipient_limit = 50
message_size_limit = 26214400
EOF
# master.cf: Debian's, without chroot (the private queue has no chroot
# tree), with smtpd on a loopback port instead of :25.
awk -v port="$PF_SMTPD" '
	/^#/ || /^[ \t]/ || NF == 0 { print; next }
	$1 == "smtp" && $2 == "inet" { $1 = "127.0.0.1:" port }
	NF >= 8 && $5 == "y" { $5 = "n" }
	{ print }
' /etc/postfix/master.cf >"$PF_DIR/etc/master.cf"
grep -q "^127.0.0.1:$PF_SMTPD " "$PF_DIR/etc/master.cf" || die "could not set the smtpd port in master.cf"
# Postfix resolves with the system resolver: give it a private
# /etc/resolv.conf (a mount namespace) that points at the loopback DNS.
log "starting Postfix $PF_VERSION (config $PF_DIR/etc, smtpd 127.0.0.1:$PF_SMTPD)"
PF_STARTED=1
unshare --mount --propagation private -- sh -c \
	"mount --bind '$WORK/resolv.conf' /etc/resolv.conf && exec postfix -c '$PF_DIR/etc' start" \
	>"$PF_DIR/start.log" 2>&1 || { cat "$PF_DIR/start.log" >&2; die "postfix start"; }
for _ in $(seq 50); do [ -s "$PF_DIR/queue/pid/master.pid" ] && break; sleep 0.1; done
PF_PID=$(tr -d ' \n' <"$PF_DIR/queue/pid/master.pid")
[ -n "$PF_PID" ] && kill -0 "$PF_PID" || die "Postfix master is not running"
# Its DNS must be the loopback server, never the machine's resolver.
grep -q "^nameserver $DNS_IP\$" "/proc/$PF_PID/root/etc/resolv.conf" ||
	die "Postfix does not see the private resolv.conf"

}
# --- 6. The edge ---
start_edge() {
EDGE_DIR=$WORK/edge
mkdir -p "$EDGE_DIR"
cat >"$EDGE_DIR/edge.toml" <<EOF
hostname = "edge-bench.example.net"
data_dir = "$EDGE_DIR/data"

[log]
format = "text"
level = "info"

[smtp]
listen = ["127.0.0.1:$EDGE_SMTP"]
local_networks = ["127.0.0.0/8"]
affiliated_domains = ["example.edu", ".example.edu"]
max_recipients = 50
# Postfix's default per-client limit is 50 (smtpd_client_connection_count_limit).
# The edge counts a connection until it has closed it, so 50 sessions that
# reconnect at once need some room above 50.
max_connections_per_ip = $((SESS > 40 ? SESS + 20 : 50))

[dns]
resolvers = ["$DNS_ADDR"]

[policy]
messages_per_hour = 100000000
recipients_per_hour = 100000000

[delivery]
smarthost = "127.0.0.1:$EDGE_SINK"
${BENCH_EDGE_DELIVERY:-}

[admin]
listen = "127.0.0.1:$EDGE_ADMIN"
$([ -n "${BENCH_PPROF:-}" ] && echo "pprof = true")
EOF
"$EDGE_BIN" check-config -config "$EDGE_DIR/edge.toml" >/dev/null || die "edge config rejected"
log "starting postern-edge (smtp 127.0.0.1:$EDGE_SMTP, smarthost 127.0.0.1:$EDGE_SINK)"
"$EDGE_BIN" run -config "$EDGE_DIR/edge.toml" >"$EDGE_DIR/edge.log" 2>&1 &
EDGE_PID=$!
PIDS+=($EDGE_PID)

}

# --- 7. Exim 4 (unpacked .deb) as the same relay ---
start_exim() {
	local d=$WORK/exim
	mkdir -p "$d/spool" "$d/log"
	chown -R Debian-exim:Debian-exim "$d/spool" "$d/log"
	cat >"$d/exim.conf" <<EOF
# Exim $EX_VERSION as a device relay for the Postern benchmark.
exim_path = $EXIM_BIN
primary_hostname = exim-bench.example.net
spool_directory = $d/spool
log_file_path = $d/log/%slog
exim_user = Debian-exim
exim_group = Debian-exim
daemon_smtp_ports = $EX_SMTPD
local_interfaces = 127.0.0.1
never_users = root
# No ident and no reverse lookups of clients (neither does the edge's
# baseline here: bench clients have no PTR).
rfc1413_hosts =
host_lookup =
tls_advertise_hosts =
# Comparable limits: 50 per client, 25 MiB, 50 recipients.
smtp_accept_max = 100
smtp_accept_max_per_host = 50
message_size_limit = 25M
recipients_max = 50
acl_smtp_rcpt = acl_check_rcpt
begin acl
acl_check_rcpt:
  # Only local networks may talk to it; they may relay (no open relay).
  deny    !hosts = 127.0.0.0/8
  # The sender's domain must resolve (edge: MX or A lookup).
  require verify = sender
  accept  hosts = 127.0.0.0/8
begin routers
# Used only to verify senders: a DNS lookup of the sender's domain.
dnscheck:
  driver = dnslookup
  verify_only
  self = send
  transport = remote_smtp
  no_more
# Everything is relayed to the sink, as the edge does with a smarthost.
smarthost:
  driver = manualroute
  route_list = * 127.0.0.1
  transport = remote_smtp
  self = send
begin transports
remote_smtp:
  driver = smtp
  port = $EX_SINK
  allow_localhost
  hosts_avoid_tls = *
EOF
	log "starting Exim $EX_VERSION (config $d/exim.conf, smtpd 127.0.0.1:$EX_SMTPD)"
	unshare --mount --propagation private -- sh -c \
		"mount --bind '$WORK/resolv.conf' /etc/resolv.conf && exec '$EXIM_BIN' -C '$d/exim.conf' -bdf -q30m" \
		>"$d/daemon.log" 2>&1 &
	EX_PID=$!
	PIDS+=($EX_PID)
}

# --- 8. OpenSMTPD (unpacked .deb) as the same relay. Its queue
# (/var/spool/smtpd), privsep chroot (/var/lib/opensmtpd/empty) and control
# socket (/run) are compiled in: a private mount namespace puts private
# folders there, as it puts the private resolv.conf in place.
start_opensmtpd() {
	local d=$WORK/opensmtpd
	mkdir -p "$d/spool" "$d/lib/opensmtpd/empty" "$d/run"
	cat >"$d/smtpd.conf" <<EOF
# OpenSMTPD $OS_VERSION as a device relay for the Postern benchmark. It has
# no sender-domain DNS check to configure (no built-in filter does it).
smtp max-message-size 25M
listen on 127.0.0.1 port $OS_SMTPD hostname opensmtpd-bench.example.net
action "relay" relay host smtp://127.0.0.1:$OS_SINK
match from src 127.0.0.0/8 for any action "relay"
EOF
	chmod 644 "$d/smtpd.conf"
	"$OS_BIN" -n -f "$d/smtpd.conf" >/dev/null 2>&1 || die "OpenSMTPD rejects its config"
	log "starting OpenSMTPD $OS_VERSION (config $d/smtpd.conf, smtpd 127.0.0.1:$OS_SMTPD)"
	unshare --mount --propagation private -- sh -c \
		"mount --bind '$d/spool' /var/spool && mount --bind '$d/lib' /var/lib && mount --bind '$d/run' /run &&
		 mount --bind '$WORK/resolv.conf' /etc/resolv.conf && exec '$OS_BIN' -d -f '$d/smtpd.conf'" \
		>"$d/daemon.log" 2>&1 &
	OS_PID=$!
	PIDS+=($OS_PID)
}

# --- 8b. decke/smtprelay as the same relay. It forwards each message to
# its remote inside the client's DATA and answers with the remote's reply:
# no queue, nothing on disk, so a remote that is down fails the client's
# transaction instead of being retried. It has no sender-domain DNS check;
# allowed_sender restricts senders to the organisation's domain.
start_smtprelay() {
	local d=$WORK/smtprelay
	mkdir -p "$d"
	log "starting smtprelay $SR_VERSION (smtpd 127.0.0.1:$SR_SMTPD, remote 127.0.0.1:$SR_SINK)"
	"$SMTPRELAY_BIN" -listen "127.0.0.1:$SR_SMTPD" -hostname smtprelay-bench.example.net \
		-allowed_nets 127.0.0.0/8 -allowed_sender '@example\.edu$' \
		-remotes "smtp://127.0.0.1:$SR_SINK" -max_connections -1 \
		-max_message_size 26214400 -max_recipients 50 -log_level warn >"$d/daemon.log" 2>&1 &
	SR_PID=$!
	PIDS+=($SR_PID)
}

wait_port() { # port
	for _ in $(seq 100); do
		if ss -Hltn "sport = :$1" | grep -q .; then return 0; fi
		sleep 0.1
	done
	return 1
}

has postfix && start_postfix
has edge && start_edge
has exim && start_exim
has opensmtpd && start_opensmtpd
has smtprelay && start_smtprelay
has postfix && { wait_port "$PF_SMTPD" || die "Postfix smtpd does not listen on $PF_SMTPD (see $PF_DIR/maillog)"; }
has edge && { wait_port "$EDGE_SMTP" || { tail -20 "$EDGE_DIR/edge.log" >&2; die "edge does not listen on $EDGE_SMTP"; }; }
has exim && { wait_port "$EX_SMTPD" || { cat "$WORK/exim/daemon.log" "$WORK"/exim/log/* >&2; die "Exim does not listen on $EX_SMTPD"; }; }
has opensmtpd && { wait_port "$OS_SMTPD" || { tail -20 "$WORK/opensmtpd/daemon.log" >&2; die "OpenSMTPD does not listen on $OS_SMTPD"; }; }
has smtprelay && { wait_port "$SR_SMTPD" || { tail -20 "$WORK/smtprelay/daemon.log" >&2; die "smtprelay does not listen on $SR_SMTPD"; }; }
has raw && { wait_port "$RAW_SINK" || die "raw sink does not listen"; }
sleep 1

# Per system: its SMTP port, sink counter, root process, message count.
declare -A PORT SINKF RPID NMSG LABEL
PORT[raw]=$RAW_SINK SINKF[raw]=$WORK/raw-sink.count RPID[raw]=$RAW_PID NMSG[raw]=$N LABEL[raw]="raw ceiling (no relay)"
PORT[postfix]=$PF_SMTPD SINKF[postfix]=$WORK/pf-sink.count RPID[postfix]=${PF_PID:-0} NMSG[postfix]=$N LABEL[postfix]="Postfix $PF_VERSION"
PORT[edge]=$EDGE_SMTP SINKF[edge]=$WORK/edge-sink.count RPID[edge]=${EDGE_PID:-0} NMSG[edge]=$N LABEL[edge]="Postern edge"
PORT[exim]=$EX_SMTPD SINKF[exim]=$WORK/exim-sink.count RPID[exim]=${EX_PID:-0} NMSG[exim]=$NSLOW LABEL[exim]="Exim ${EX_VERSION:-}"
PORT[opensmtpd]=$OS_SMTPD SINKF[opensmtpd]=$WORK/opensmtpd-sink.count RPID[opensmtpd]=${OS_PID:-0} NMSG[opensmtpd]=$NSLOW LABEL[opensmtpd]="OpenSMTPD ${OS_VERSION:-}"
PORT[smtprelay]=$SR_SMTPD SINKF[smtprelay]=$WORK/smtprelay-sink.count RPID[smtprelay]=${SR_PID:-0} NMSG[smtprelay]=$N LABEL[smtprelay]="decke/smtprelay ${SR_VERSION:-}"

pss_once() { "$BT" pss -once -root "$1" | sed -n 's/.*peak_kb=\([0-9]*\).*peak_procs=\([0-9]*\).*/\1 \2/p'; }
sink_count() { "$BT" count -file "$1"; }

# run_load NAME SYSTEM MESSAGES [TRACE]
#   -> sets R_ACCEPT_S R_E2E_S R_PEAK R_PROCS R_CPU R_FAILED R_SYNCS
#   TRACE: "syncs" counts fsync/fdatasync/msync of the system's processes.
run_load() {
	local name=$1 sys=$2 n=$3 trace=${4:-}
	local port=${PORT[$sys]} sinkfile=${SINKF[$sys]} pid=${RPID[$sys]}
	local base target t0 t1 t2 out
	base=$(sink_count "$sinkfile")
	target=$((base + n))
	"$BT" pss -root "$pid" -interval 100ms -out "$WORK/$name-pss.samples" >"$WORK/$name-pss.out" &
	local sampler=$!
	local tracer="" pprof=""
	R_SYNCS=""
	if [ "$trace" = syncs ]; then
		# Every process of the system, also those started before; -f
		# follows the ones it forks.
		strace -c -f -q -e trace=fsync,fdatasync,msync,sync_file_range \
			$("$BT" tree -root "$pid" | sed 's/^/-p /') -o "$WORK/$name.strace" &
		tracer=$!
		sleep 1
	elif [ "$name" = edge-r1 ] && [ "${BENCH_PERF:-0}" = 1 ]; then
		perf record -q -F 999 -g -p "$pid" -o "$WORK/$name.perf.data" >/dev/null 2>&1 &
		tracer=$!
		sleep 0.5
	elif [ "$name" = edge-r1 ] && [ -n "${BENCH_PPROF:-}" ]; then
		curl -s -o "$WORK/edge-cpu.pprof" "http://127.0.0.1:$EDGE_ADMIN/debug/pprof/profile?seconds=$BENCH_PPROF" &
		pprof=$!
	fi
	t0=$(now_ns)
	out=$(smtp-source -s "$SESS" -l "$SIZE" -m "$n" -M bench-client.example.edu \
		-f sender@example.edu -t rcpt@example.edu "127.0.0.1:$port" 2>&1) || true
	t1=$(now_ns)
	R_FAILED=$(printf '%s\n' "$out" | grep -c 'smtp-source' || true)
	if [ "$R_FAILED" != 0 ]; then
		log "$name: smtp-source reported errors:"
		printf '%s\n' "$out" | head -5 >&2
	fi
	if t2=$("$BT" waitcount -file "$sinkfile" -n "$target" -timeout "${TIMEOUT_S}s"); then
		R_E2E_S=$(awk -v a="$t0" -v b="$t2" 'BEGIN{printf "%.3f", (b-a)/1e9}')
	else
		log "$name: sink saw $(sink_count "$sinkfile") of $target messages after ${TIMEOUT_S}s"
		R_E2E_S=""
	fi
	kill -TERM "$sampler"
	wait "$sampler" || true
	if [ -n "$tracer" ]; then
		kill -INT "$tracer" 2>/dev/null
		wait "$tracer" || true
	fi
	if [ -n "$pprof" ]; then
		wait "$pprof" || true
		curl -s -o "$WORK/edge-allocs.pprof" "http://127.0.0.1:$EDGE_ADMIN/debug/pprof/allocs" || true
	fi
	if [ "$trace" = syncs ] && [ -s "$WORK/$name.strace" ]; then
		# strace -c columns: % time, seconds, usecs/call, calls, [errors,] syscall.
		R_SYNCS=$(awk -v n="$n" '$NF ~ /^(fsync|fdatasync|msync|sync_file_range)$/ { c += $4 }
			END { printf "%.2f", c / n }' "$WORK/$name.strace")
	fi
	R_ACCEPT_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", (b-a)/1e9}')
	# smtp-source stops at the first refusal: such a round measured nothing.
	[ "$R_FAILED" != 0 ] && R_ACCEPT_S=""
	read -r R_PEAK R_PROCS R_CPU < <(sed -n 's/.*peak_kb=\([0-9]*\).*peak_procs=\([0-9]*\).*cpu_s=\([0-9.]*\).*/\1 \2 \3/p' "$WORK/$name-pss.out")
}

# smaps_by_file PID: Pss per mapping (file name, or [heap]/anonymous),
# largest first: where a process's memory is.
smaps_by_file() {
	awk '/^[0-9a-f]+-[0-9a-f]+ / { name = (NF >= 6) ? $6 : "[anonymous]"; next }
		/^Pss:/ { pss[name] += $2 }
		END { for (n in pss) if (pss[n] > 0) printf "%10d kB  %s\n", pss[n], n }' "/proc/$1/smaps" | sort -rn | head -12
}

# --- 9. Sanity: the relays with a sender-domain check refuse a sender
# domain that does not exist (so they really do the DNS lookup), then
# warm-up: prove each relays end to end, and let caches fill.
for sys in postfix edge exim; do
	has $sys || continue
	if out=$(smtp-source -m 1 -l 100 -M bench-client.example.edu -f sender@nonexistent.invalid \
		-t rcpt@example.edu "127.0.0.1:${PORT[$sys]}" 2>&1); then
		die "$sys accepted MAIL FROM a domain that does not exist"
	fi
	log "$sys refuses an unknown sender domain: $(printf '%s' "$out" | tail -1)"
done
for sys in $SYSTEMS; do
	[ $sys = raw ] && continue
	run_load "warm-$sys" $sys "$WARMUP"
	log "warm-up $sys: $WARMUP messages accepted in ${R_ACCEPT_S:-(refused)}s, relayed in ${R_E2E_S:-(not all)}s"
done
sleep 2
declare -A IDLE FRESH
for sys in $SYSTEMS; do
	[ $sys = raw ] && continue
	read -r IDLE[$sys] _ < <(pss_once "${RPID[$sys]}")
done
EDGE_RSS=""
has edge && EDGE_RSS=$(awk '/^VmRSS:/ {print $2}' "/proc/$EDGE_PID/status")

# --- 10. Measured rounds, alternating; rates are medians over rounds ---
declare -A ACC E2E PEAK PROCS FAILS CPU SYNCS
for sys in $SYSTEMS; do ACC[$sys]=""; E2E[$sys]=""; PEAK[$sys]=0; PROCS[$sys]=0; FAILS[$sys]=0; CPU[$sys]=""; SYNCS[$sys]="-"; done
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$(date +%s)
for round in $(seq "$ROUNDS"); do
	for sys in $SYSTEMS; do
		n=${NMSG[$sys]}
		log "round $round: $sys, $n messages x $SIZE bytes, $SESS sessions"
		run_load "$sys-r$round" $sys "$n"
		[ $sys = edge ] && { smaps_by_file "$EDGE_PID" >"$WORK/edge-r$round.smaps" || true; }
		log "round $round $sys: accept ${R_ACCEPT_S:-invalid}s, end-to-end ${R_E2E_S:-pending}s, peak PSS ${R_PEAK} kB in ${R_PROCS} processes, CPU ${R_CPU}s, errors ${R_FAILED}, load $(cut -d' ' -f1 /proc/loadavg)"
		[ -n "$R_ACCEPT_S" ] && ACC[$sys]+="$(awk -v n="$n" -v s="$R_ACCEPT_S" 'BEGIN{printf "%.1f", n/s}') "
		[ -n "$R_E2E_S" ] && [ -n "$R_ACCEPT_S" ] && E2E[$sys]+="$(awk -v n="$n" -v s="$R_E2E_S" 'BEGIN{printf "%.1f", n/s}') "
		[ -n "$R_E2E_S" ] && CPU[$sys]+="$(awk -v c="$R_CPU" -v n="$n" 'BEGIN{printf "%.3f", c*1000/n}') "
		[ "$R_PEAK" -gt "${PEAK[$sys]}" ] && PEAK[$sys]=$R_PEAK
		[ "$R_PROCS" -gt "${PROCS[$sys]}" ] && PROCS[$sys]=$R_PROCS
		FAILS[$sys]=$((FAILS[$sys] + R_FAILED))
		sleep 1
	done
done
T_ROUNDS=$(($(date +%s) - T_START))
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
if [ "${BENCH_SYNCS:-0}" = 1 ]; then
	for sys in $SYSTEMS; do
		[ $sys = raw ] && continue
		ns=${BENCH_SYNC_MESSAGES:-500}
		[ "${NMSG[$sys]}" = "$NSLOW" ] && ns=$((ns < NSLOW ? ns : NSLOW))
		log "sync count: $sys, $ns messages under strace"
		run_load "$sys-syncs" $sys "$ns" syncs
		SYNCS[$sys]=${R_SYNCS:--}
		log "sync count $sys: ${SYNCS[$sys]} per message"
	done
fi

# --- 11. Report ---
median() { # values...
	[ $# = 0 ] && { echo ""; return; }
	printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END{ if (NR%2) print v[(NR+1)/2]; else printf "%.1f\n", (v[NR/2]+v[NR/2+1])/2 }'
}
ratio() { # a b -> a/b
	if [ -z "$1" ] || [ -z "$2" ] || [ "$1" = - ] || [ "$2" = - ]; then echo "-"; return; fi
	awk -v a="$1" -v b="$2" 'BEGIN{ if (b == 0) print "-"; else printf "%.2f", a/b }'
}
verdict() { # value op target
	[ "$1" = "-" ] && { echo "PENDING"; return; }
	awk -v v="$1" -v t="$3" -v op="$2" 'BEGIN{ ok = (op == ">=") ? (v >= t) : (op == "<") ? (v < t) : (v <= t); print ok ? "PASS" : "FAIL" }'
}
declare -A MACC ME2E MCPU
for sys in $SYSTEMS; do
	# shellcheck disable=SC2086
	MACC[$sys]=$(median ${ACC[$sys]}); ME2E[$sys]=$(median ${E2E[$sys]}); MCPU[$sys]=$(median ${CPU[$sys]})
	[ -z "${MACC[$sys]}" ] && MACC[$sys]=-
	[ -z "${ME2E[$sys]}" ] && ME2E[$sys]=-
	[ -z "${MCPU[$sys]}" ] && MCPU[$sys]=-
done
# The raw ceiling's accept and end-to-end are one: the sink is the end.
has raw && { PEAK[raw]=-; IDLE[raw]=-; }
PFA=${MACC[postfix]:--} PFE=${ME2E[postfix]:--} PFP=${PEAK[postfix]:--} RAWE=${ME2E[raw]:--}
queue_note() {
	case $1 in
	raw) echo "none (sink only)" ;;
	postfix) echo "yes; fsync before 250" ;;
	edge) echo "yes; msync before 250" ;;
	exim) echo "yes; fsync before 250" ;;
	opensmtpd) echo "yes; 250 before fsync" ;;
	smtprelay) echo "none; remote's 250" ;;
	esac
}
{
	echo
	echo "Device relays side by side — $SIZE-byte messages, $SESS parallel sessions, one message per connection, $ROUNDS alternating round(s), medians"
	echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r), $(go version | awk '{print $3}'); load average before $LOAD_BEFORE, after $LOAD_AFTER; rounds took ${T_ROUNDS}s"
	echo
	printf '| %-24s | %-22s | %5s | %8s | %7s | %7s | %7s | %8s | %11s | %7s | %8s | %9s |\n' \
		"system" "queue, durability" "msgs" "accept/s" "e2e/s" "acc/PF" "e2e/PF" "e2e/raw" "peak PSS kB" "PSS/PF" "CPU s/1k" "syncs/msg"
	printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' "--------------------------" "------------------------" "-------" "----------" "---------" "---------" "---------" "----------" "-------------" "---------" "----------" "-----------"
	for sys in $SYSTEMS; do
		pct=$(ratio "${ME2E[$sys]}" "$RAWE"); [ "$pct" != - ] && pct=$(awk -v r="$pct" 'BEGIN{printf "%.0f%%", r*100}')
		printf '| %-24s | %-22s | %5s | %8s | %7s | %7s | %7s | %8s | %11s | %7s | %8s | %9s |\n' \
			"${LABEL[$sys]}" "$(queue_note $sys)" "${NMSG[$sys]}" "${MACC[$sys]}" "${ME2E[$sys]}" \
			"$(ratio "${MACC[$sys]}" "$PFA")" "$(ratio "${ME2E[$sys]}" "$PFE")" "$pct" "${PEAK[$sys]}" \
			"$(ratio "${PEAK[$sys]}" "$PFP")" "${MCPU[$sys]}" "${SYNCS[$sys]}"
	done
	echo
	echo "Per-round rates (accept / end-to-end msg/s):"
	for sys in $SYSTEMS; do echo "- ${LABEL[$sys]}: ${ACC[$sys]:--}/ ${E2E[$sys]:--}"; done
	echo
	if has edge && has postfix; then
		EA=${MACC[edge]} EE=${ME2E[edge]}
		printf '| %-44s | %9s | %-8s | %s\n' "target (edge)" "measured" "target" "verdict"
			printf '|%s|%s|%s|%s\n' "----------------------------------------------" "-----------" "----------" "--------"
		printf '| %-44s | %9s | %-8s | %s\n' "accept rate / Postfix's" "$(ratio "$EA" "$PFA")" ">= 5" "$(verdict "$(ratio "$EA" "$PFA")" '>=' 5)"
		printf '| %-44s | %9s | %-8s | %s\n' "end-to-end rate / Postfix's" "$(ratio "$EE" "$PFE")" ">= 4" "$(verdict "$(ratio "$EE" "$PFE")" '>=' 4)"
		if has raw; then
			printf '| %-44s | %9s | %-8s | %s\n' "end-to-end rate / raw ceiling" "$(ratio "$EE" "$RAWE")" ">= 0.45" "$(verdict "$(ratio "$EE" "$RAWE")" '>=' 0.45)"
		fi
		if has smtprelay; then
			printf '| %-44s | %9s | %-8s | %s\n' "end-to-end rate / smtprelay's (no queue)" "$(ratio "$EE" "${ME2E[smtprelay]}")" "> 1" "$(verdict "$(ratio "$EE" "${ME2E[smtprelay]}")" '>=' 1.005)"
		fi
		printf '| %-44s | %9s | %-8s | %s\n' "peak PSS / Postfix's (target: 10k burst x 50)" "$(ratio "${PEAK[edge]}" "$PFP")" "<= 0.5" "$(verdict "$(ratio "${PEAK[edge]}" "$PFP")" '<=' 0.5)"
		printf '| %-44s | %9s | %-8s | %s\n' "idle RSS after warm-up (kB)" "$EDGE_RSS" "< 25600" "$(verdict "$EDGE_RSS" '<' 25600)"
		printf '| %-44s | %9s | %-8s | %s\n' "idle PSS after warm-up / Postfix's" "$(ratio "${IDLE[edge]}" "${IDLE[postfix]}")" "info" ""
		echo
	fi
	echo "smtp-source errors: $(for sys in $SYSTEMS; do printf '%s %s; ' "$sys" "${FAILS[$sys]}"; done)"
	has smtprelay || echo "Not measured: decke/smtprelay (forwards inside DATA, keeps no queue): set BENCH_SMTPRELAY_BIN to a binary of it."
} | tee "$WORK/results.md"
if [ "${BENCH_KEEP:-0}" = 1 ]; then log "results in $WORK/results.md"; fi
