#!/usr/bin/env bash
# Side-by-side benchmark: the Postern edge against Postfix 3.7 configured as
# the same device relay on the same machine, in one run. See README.md next
# to this file for the method and the last results.
#
#   deploy/bench/compare.sh                  # 5000 x 10 KB, 20 sessions
#   BENCH_MESSAGES=2000 deploy/bench/compare.sh
#
# Environment:
#   BENCH_MESSAGES   messages per measured run          (default 5000)
#   BENCH_SESSIONS   parallel SMTP sessions              (default 20)
#   BENCH_SIZE       message payload in bytes            (default 10240)
#   BENCH_ROUNDS     measured rounds per system; the best round counts
#                    (default 1; rounds alternate Postfix / edge)
#   BENCH_ONLY       "postfix" or "edge" to run just one side (no ratios)
#   BENCH_KEEP       1 = keep the work folder (logs, configs) after the run
#   BENCH_PERF       1 = record a CPU profile of the edge (perf record -g)
#                    over its first measured round: WORK/edge-r1.perf.data
#   BENCH_STRACE     1 = count system calls (strace -c -f) of each system
#                    in round 1: WORK/NAME.strace. Slows both down a lot:
#                    the round's rates are then not comparable to others.
#   BENCH_EDGE_DELIVERY  extra TOML lines for the edge's [delivery] section,
#                    e.g. "per_domain_concurrency = 20" (experiments)
#   BENCH_WARMUP     warm-up messages per system         (default 200)
#   BENCH_TIMEOUT    seconds to wait for the sink per round (default 240)
#   BENCH_BASE_PORT  first of the loopback ports used   (default 10025)
#
# Everything listens on loopback only. A system Postfix (port 25,
# /etc/postfix) is never touched: ours runs with `postfix -c` from a private
# config folder, its own queue, and is stopped on exit.
set -euo pipefail

N=${BENCH_MESSAGES:-5000}
SESS=${BENCH_SESSIONS:-20}
SIZE=${BENCH_SIZE:-10240}
ROUNDS=${BENCH_ROUNDS:-1}
ONLY=${BENCH_ONLY:-}
BASE=${BENCH_BASE_PORT:-10025}
PF_SMTPD=$BASE              # Postfix smtpd
PF_SINK=$((BASE + 1))       # smtp-sink behind Postfix
EDGE_SMTP=$((BASE + 2))     # postern-edge SMTP
EDGE_SINK=$((BASE + 3))     # smtp-sink behind the edge (its smarthost)
EDGE_ADMIN=$((BASE + 4))    # postern-edge admin endpoint
DNS_IP=127.0.0.153          # loopback DNS server for example.edu
DNS_ADDR=$DNS_IP:53
WARMUP=${BENCH_WARMUP:-200}
TIMEOUT_S=${BENCH_TIMEOUT:-240}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

log() { printf '%s bench: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
now_ns() { date +%s%N; }

[ "$(id -u)" = 0 ] || die "run as root (Postfix's master needs it)"
[ "$SESS" -le 50 ] || die "BENCH_SESSIONS above 50 exceeds Postfix's default per-client limit"

# --- 1. Postfix (Debian package; brings smtp-source and smtp-sink) ---
if ! command -v smtp-source >/dev/null || ! [ -x /usr/sbin/postfix ]; then
	log "installing postfix (No configuration: the system instance is not set up or started)"
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >/dev/null ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >/dev/null; } ||
		die "apt-get install postfix failed"
fi
PF_VERSION=$(postconf -d -h mail_version)

for p in $PF_SMTPD $PF_SINK $EDGE_SMTP $EDGE_SINK $EDGE_ADMIN; do
	if ss -Hltn "sport = :$p" | grep -q .; then die "port 127.0.0.1:$p is in use (set BENCH_BASE_PORT)"; fi
done
if ss -Hlun "sport = :53" | grep -q "$DNS_IP"; then die "$DNS_ADDR is in use"; fi

WORK=$(mktemp -d /tmp/postern-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
PF_DIR=$WORK/postfix
PF_STARTED=0

cleanup() {
	local rc=$?
	set +e
	if [ "$PF_STARTED" = 1 ]; then postfix -c "$PF_DIR/etc" stop >/dev/null 2>&1; fi
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
	sleep 0.5
	for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
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
if [ -z "${BENCH_EDGE_BIN:-}" ]; then
	go build -trimpath -ldflags "$LDFLAGS" -o bin/postern-edge ./edge/cmd/postern-edge || die "go build postern-edge"
fi
go build -o "$WORK/benchtool" ./deploy/bench/benchtool || die "go build benchtool"
BT=$WORK/benchtool

# --- 3. Loopback DNS: example.edu (and subdomains) have MX and A ---
"$BT" dns -listen "$DNS_ADDR" -zone example.edu -a 127.0.0.1 2>"$WORK/dns.log" &
PIDS+=($!)

# --- 4. Sinks: one smtp-sink behind each system, counting messages ---
start_sink() { # port counterfile
	smtp-sink -u nobody -c "127.0.0.1:$1" 1024 >"$2" 2>&1 &
	PIDS+=($!)
}
start_sink "$PF_SINK" "$WORK/pf-sink.count"
start_sink "$EDGE_SINK" "$WORK/edge-sink.count"

# --- 5. Postfix as a device relay, from a private config folder ---
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
echo "nameserver $DNS_IP" >"$PF_DIR/resolv.conf"
log "starting Postfix $PF_VERSION (config $PF_DIR/etc, smtpd 127.0.0.1:$PF_SMTPD)"
PF_STARTED=1
unshare --mount --propagation private -- sh -c \
	"mount --bind '$PF_DIR/resolv.conf' /etc/resolv.conf && exec postfix -c '$PF_DIR/etc' start" \
	>"$PF_DIR/start.log" 2>&1 || { cat "$PF_DIR/start.log" >&2; die "postfix start"; }
for _ in $(seq 50); do [ -s "$PF_DIR/queue/pid/master.pid" ] && break; sleep 0.1; done
PF_PID=$(tr -d ' \n' <"$PF_DIR/queue/pid/master.pid")
[ -n "$PF_PID" ] && kill -0 "$PF_PID" || die "Postfix master is not running"
# Its DNS must be the loopback server, never the machine's resolver.
grep -q "^nameserver $DNS_IP\$" "/proc/$PF_PID/root/etc/resolv.conf" ||
	die "Postfix does not see the private resolv.conf"

# --- 6. The edge ---
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
max_connections_per_ip = 50

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
EOF
"$EDGE_BIN" check-config -config "$EDGE_DIR/edge.toml" >/dev/null || die "edge config rejected"
log "starting postern-edge (smtp 127.0.0.1:$EDGE_SMTP, smarthost 127.0.0.1:$EDGE_SINK)"
"$EDGE_BIN" run -config "$EDGE_DIR/edge.toml" >"$EDGE_DIR/edge.log" 2>&1 &
EDGE_PID=$!
PIDS+=($EDGE_PID)

wait_port() { # port
	for _ in $(seq 100); do
		if ss -Hltn "sport = :$1" | grep -q .; then return 0; fi
		sleep 0.1
	done
	return 1
}
wait_port "$PF_SMTPD" || die "Postfix smtpd does not listen on $PF_SMTPD (see $PF_DIR/maillog)"
wait_port "$EDGE_SMTP" || { tail -20 "$EDGE_DIR/edge.log" >&2; die "edge does not listen on $EDGE_SMTP"; }
sleep 1

pss_once() { "$BT" pss -once -root "$1" | sed -n 's/.*peak_kb=\([0-9]*\).*peak_procs=\([0-9]*\).*/\1 \2/p'; }
read -r PF_IDLE0 PF_PROCS0 < <(pss_once "$PF_PID")
read -r EDGE_IDLE0 EDGE_PROCS0 < <(pss_once "$EDGE_PID")
log "fresh-start PSS: postfix ${PF_IDLE0} kB in $PF_PROCS0 processes, edge ${EDGE_IDLE0} kB"

sink_count() { "$BT" count -file "$1"; }

# run_load NAME PORT SINKFILE ROOTPID MESSAGES
#   -> sets R_ACCEPT_S R_E2E_S R_PEAK R_PROCS R_CPU R_FAILED
run_load() {
	local name=$1 port=$2 sinkfile=$3 pid=$4 n=$5
	local base target t0 t1 t2 out
	base=$(sink_count "$sinkfile")
	target=$((base + n))
	"$BT" pss -root "$pid" -interval 100ms -out "$WORK/$name-pss.samples" >"$WORK/$name-pss.out" &
	local sampler=$!
	local tracer=""
	case "$name" in
	*-r1)
		if [ "${BENCH_STRACE:-0}" = 1 ]; then
			# Every process of the system, also those started before.
			strace -c -f -q $("$BT" tree -root "$pid" | sed 's/^/-p /') -o "$WORK/$name.strace" &
			tracer=$!
			sleep 1
		elif [ "${BENCH_PERF:-0}" = 1 ] && [ "$name" = edge-r1 ]; then
			perf record -q -F 999 -g -p "$pid" -o "$WORK/$name.perf.data" >/dev/null 2>&1 &
			tracer=$!
			sleep 0.5
		fi
		;;
	esac
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

# --- 7. Sanity: both refuse a sender domain that does not exist (so both
# really do the sender-domain DNS check), then warm up: prove both relay end
# to end, and let caches fill.
for sys in postfix edge; do
	[ -n "$ONLY" ] && [ "$ONLY" != "$sys" ] && continue
	port=$PF_SMTPD; [ $sys = edge ] && port=$EDGE_SMTP
	if out=$(smtp-source -m 1 -l 100 -M bench-client.example.edu -f sender@nonexistent.invalid \
		-t rcpt@example.edu "127.0.0.1:$port" 2>&1); then
		die "$sys accepted MAIL FROM a domain that does not exist"
	fi
	log "$sys refuses an unknown sender domain: $(printf '%s' "$out" | tail -1)"
done
# --- 7b. Warm-up: prove both relay end to end, and let caches fill ---
for sys in postfix edge; do
	[ -n "$ONLY" ] && [ "$ONLY" != "$sys" ] && continue
	if [ $sys = postfix ]; then run_load warm-postfix "$PF_SMTPD" "$WORK/pf-sink.count" "$PF_PID" "$WARMUP"
	else run_load warm-edge "$EDGE_SMTP" "$WORK/edge-sink.count" "$EDGE_PID" "$WARMUP"; fi
	log "warm-up $sys: $WARMUP messages accepted in ${R_ACCEPT_S}s, relayed in ${R_E2E_S:-(not all)}s"
done
sleep 2
read -r PF_IDLE1 _ < <(pss_once "$PF_PID")
read -r EDGE_IDLE1 _ < <(pss_once "$EDGE_PID")

# --- 8. Measured rounds ---
declare -A BEST_ACC BEST_E2E PEAK PROCS FAILS CPU
for sys in postfix edge; do BEST_ACC[$sys]=""; BEST_E2E[$sys]=""; PEAK[$sys]=0; PROCS[$sys]=0; FAILS[$sys]=0; CPU[$sys]=""; done
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
better() { awk -v a="$1" -v b="$2" 'BEGIN{exit !(a!="" && (b=="" || a+0<b+0))}'; }
for round in $(seq "$ROUNDS"); do
	for sys in postfix edge; do
		[ -n "$ONLY" ] && [ "$ONLY" != "$sys" ] && continue
		log "round $round: $sys, $N messages x $SIZE bytes, $SESS sessions"
		if [ $sys = postfix ]; then
			run_load "postfix-r$round" "$PF_SMTPD" "$WORK/pf-sink.count" "$PF_PID" "$N"
		else
			run_load "edge-r$round" "$EDGE_SMTP" "$WORK/edge-sink.count" "$EDGE_PID" "$N"
			smaps_by_file "$EDGE_PID" >"$WORK/edge-r$round.smaps" || true
		fi
		log "round $round $sys: accept ${R_ACCEPT_S:-invalid}s, end-to-end ${R_E2E_S:-pending}s, peak PSS ${R_PEAK} kB in ${R_PROCS} processes, CPU ${R_CPU}s, smtp-source errors ${R_FAILED}, load $(cut -d' ' -f1 /proc/loadavg)"
		if [ -n "$R_E2E_S" ] && better "$R_CPU" "${CPU[$sys]}"; then CPU[$sys]=$R_CPU; fi
		if better "$R_ACCEPT_S" "${BEST_ACC[$sys]}"; then BEST_ACC[$sys]=$R_ACCEPT_S; fi
		if [ -n "$R_E2E_S" ] && better "$R_E2E_S" "${BEST_E2E[$sys]}"; then BEST_E2E[$sys]=$R_E2E_S; fi
		[ "$R_PEAK" -gt "${PEAK[$sys]}" ] && PEAK[$sys]=$R_PEAK
		[ "$R_PROCS" -gt "${PROCS[$sys]}" ] && PROCS[$sys]=$R_PROCS
		FAILS[$sys]=$((FAILS[$sys] + R_FAILED))
		sleep 2
	done
done

# --- 9. Report ---
rate() { [ -n "$1" ] && awk -v n="$N" -v s="$1" 'BEGIN{printf "%.0f", n/s}' || echo "pending"; }
ratio() { # a b -> a/b
	if [ -z "$1" ] || [ -z "$2" ] || [ "$1" = pending ] || [ "$2" = pending ]; then echo "-"; return; fi
	awk -v a="$1" -v b="$2" 'BEGIN{ if (b == 0) print "-"; else printf "%.2f", a/b }'
}
verdict() { # value op target
	[ "$1" = "-" ] && { echo "PENDING"; return; }
	awk -v v="$1" -v t="$3" -v op="$2" 'BEGIN{ ok = (op == ">=") ? (v >= t) : (v <= t); print ok ? "PASS" : "FAIL" }'
}
PF_ACC=$(rate "${BEST_ACC[postfix]}"); EDGE_ACC=$(rate "${BEST_ACC[edge]}")
PF_E2E=$(rate "${BEST_E2E[postfix]}"); EDGE_E2E=$(rate "${BEST_E2E[edge]}")
R_ACC=$(ratio "$EDGE_ACC" "$PF_ACC")
R_E2E=$(ratio "$EDGE_E2E" "$PF_E2E")
R_PEAK=$(ratio "${PEAK[edge]}" "${PEAK[postfix]}")
R_IDLE=$(ratio "$EDGE_IDLE1" "$PF_IDLE1")
per1k() { [ -n "$1" ] && awk -v c="$1" -v n="$N" 'BEGIN{printf "%.2f", c*1000/n}' || echo "-"; }
PF_CPU=$(per1k "${CPU[postfix]}"); EDGE_CPU=$(per1k "${CPU[edge]}")
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

{
	echo
	echo "Postern edge vs Postfix $PF_VERSION — $N messages x $SIZE bytes, $SESS parallel sessions, one message per connection"
	echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r), $(go version | awk '{print $3}'), best of $ROUNDS round(s); load average before $LOAD_BEFORE, after $LOAD_AFTER"
	echo
	printf '| %-34s | %12s | %12s | %7s | %-8s | %s\n' "measure" "Postfix" "edge" "ratio" "target" "verdict"
	printf '|%s|%s|%s|%s|%s|%s\n' "------------------------------------" "--------------" "--------------" "---------" "----------" "--------"
	printf '| %-34s | %12s | %12s | %7s | %-8s | %s\n' "accept rate (msg/s, all 250s)" "$PF_ACC" "$EDGE_ACC" "$R_ACC" ">= 2x" "$(verdict "$R_ACC" '>=' 2)"
	printf '| %-34s | %12s | %12s | %7s | %-8s | %s\n' "end-to-end relay rate (msg/s)" "$PF_E2E" "$EDGE_E2E" "$R_E2E" ">= 1.5x" "$(verdict "$R_E2E" '>=' 1.5)"
	printf '| %-34s | %12s | %12s | %7s | %-8s | %s\n' "peak PSS under load (kB)" "${PEAK[postfix]}" "${PEAK[edge]}" "$R_PEAK" "<= 1x" "$(verdict "$R_PEAK" '<=' 1)"
	printf '| %-34s | %12s | %12s | %7s | %-8s | %s\n' "idle PSS after warm-up (kB)" "$PF_IDLE1" "$EDGE_IDLE1" "$R_IDLE" "<= 1x" "$(verdict "$R_IDLE" '<=' 1)"
	printf '| %-34s | %12s | %12s | %7s | %-8s | %s\n' "fresh-start PSS (kB)" "$PF_IDLE0" "$EDGE_IDLE0" "$(ratio "$EDGE_IDLE0" "$PF_IDLE0")" "info" ""
	printf '| %-34s | %12s | %12s | %7s | %-8s | %s\n' "CPU s per 1000 msgs (end to end)" "$PF_CPU" "$EDGE_CPU" "$(ratio "$EDGE_CPU" "$PF_CPU")" "info" ""
	printf '| %-34s | %12s | %12s | %7s | %-8s | %s\n' "processes (peak)" "${PROCS[postfix]}" "${PROCS[edge]}" "" "info" ""
	printf '| %-34s | %12s | %12s | %7s | %-8s | %s\n' "accept wall time (s)" "${BEST_ACC[postfix]:--}" "${BEST_ACC[edge]:--}" "" "info" ""
	printf '| %-34s | %12s | %12s | %7s | %-8s | %s\n' "end-to-end wall time (s)" "${BEST_E2E[postfix]:--}" "${BEST_E2E[edge]:--}" "" "info" ""
	printf '| %-34s | %12s | %12s | %7s | %-8s | %s\n' "smtp-source errors" "${FAILS[postfix]}" "${FAILS[edge]}" "" "info" ""
	echo
} | tee "$WORK/results.md"
if [ "${BENCH_KEEP:-0}" = 1 ]; then log "results in $WORK/results.md"; fi
