#!/usr/bin/env bash
# Smoke test of `make run` and the README walkthrough, in a temporary data
# folder (POSTERN_DEV_DIR), on the fixed dev ports (so not while another
# `make run` is up):
#
#   1. start `make run` in its own process group, wait for the banner and
#      the edge's /healthz;
#   2. a message to someone@example.edu reaches the sink (data/sink);
#   3. register scanner.example.edu with the CLI, approve it, send external
#      mail from 127.0.0.2: it reaches the sink;
#   4. a recipient the sink refuses (bounce@example.com): the NDR to
#      scanner@example.edu reaches the sink;
#   5. SIGINT to the process group (what Ctrl-C does): every process of the
#      group is gone within 15 s and each program logged a clean stop;
#   6. a second run in the same folder reuses the staff user and the
#      enrolment, and the device is still approved.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
tmp=$(mktemp -d /tmp/postern-smoke.XXXXXX)
log=$tmp/run.log
pgid=""
fail() {
	echo "FAIL: $*" >&2
	echo "--- make run output:" >&2
	tail -n 60 "$log" >&2 || true
	exit 1
}
cleanup() {
	if [ -n "$pgid" ] && pgrep -g "$pgid" >/dev/null; then kill -KILL -- "-$pgid" 2>/dev/null || true; fi
	if [ -n "${SMOKE_KEEP:-}" ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

for port in 2525 2526 5354 8480 9025 18883; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		echo "port $port is in use (another make run?); stop it first" >&2
		exit 1
	fi
done

# until_ok SECONDS CMD… retries CMD every 0.2 s.
until_ok() {
	local n=$(($1 * 5))
	shift
	for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
	return 1
}

# start_run starts `make run` in its own process group and waits for the
# banner and the edge's /healthz.
start_run() {
	: >"$log"
	# A background job of a script starts with SIGINT ignored, and bash
	# cannot trap a signal ignored at entry: perl restores the default
	# first, so the SIGINT of stop_run reaches run.sh's trap as a terminal's
	# Ctrl-C would.
	POSTERN_DEV_DIR=$tmp setsid perl -e '$SIG{INT} = "DEFAULT"; exec @ARGV or die "exec: $!"' make -s run >"$log" 2>&1 </dev/null &
	pgid=$! # setsid in a non-leader process execs in place: its pid is the group id
	until_ok 120 grep -q "Postern is running" "$log" || fail "no banner"
	until_ok 10 curl -fsS http://127.0.0.1:9025/healthz || fail "edge /healthz"
	grep -q "password: " "$log" || fail "banner without the staff login"
}

# stop_run sends SIGINT to the group (what Ctrl-C does) and checks that
# every process is gone within 15 s after a clean stop.
stop_run() {
	kill -INT -- "-$pgid"
	until_ok 15 bash -c "! pgrep -g $pgid" || fail "processes left after SIGINT: $(pgrep -g "$pgid" -a)"
	pgid=""
	for w in "postern-edge stopped" "postern-central stopped" "devlab stopped" "stopped."; do
		grep -qF "$w" "$log" || fail "no \"$w\" in the log (unclean stop?)"
	done
	if grep -q "a process exited" "$log"; then fail "run.sh did not see the SIGINT (its trap did not run)"; fi
}

sink_has() { grep -lq "$1" "$tmp"/data/sink/*.eml 2>/dev/null; }

# ext RCPT SUBJECT sends from the scanner's address 127.0.0.2.
ext() {
	printf 'From: scanner@example.edu\r\nSubject: %s\r\n\r\nscan\r\n' "$2" |
		curl -sS --interface 127.0.0.2 smtp://127.0.0.1:2525 --mail-from scanner@example.edu --mail-rcpt "$1" -T -
}

central() { (cd "$tmp" && "$ROOT/bin/postern-central" "$@" -dev); }

start_run
echo "ok   make run is up"

printf 'From: scanner@example.edu\r\nSubject: smoke affiliated\r\n\r\nhello\r\n' |
	curl -sS smtp://127.0.0.1:2525 --mail-from scanner@example.edu --mail-rcpt someone@example.edu -T - ||
	fail "sending to someone@example.edu"
until_ok 20 sink_has "Subject: smoke affiliated" || fail "affiliated message not in data/sink"
echo "ok   someone@example.edu -> data/sink"

if ext someone@example.com "smoke refused" 2>/dev/null; then fail "unregistered device relayed external mail"; fi
central device register -name scanner.example.edu -ip 127.0.0.2 -owner "Ada Lovelace" -department Physics \
	-contact ada@example.edu -sender scanner@example.edu -purpose "scan to mail" >"$tmp/register.out" 2>&1 ||
	{ cat "$tmp/register.out"; fail "device register"; }
grep -q "forward lookup matches" "$tmp/register.out" || fail "FCrDNS check: $(cat "$tmp/register.out")"
until_ok 10 sink_has "confirm?token=" || fail "no sender confirmation mail in data/sink"
central device approve scanner.example.edu -force -reason "smoke test" >/dev/null || fail "device approve"
until_ok 15 ext someone@example.com "smoke external" || fail "external mail from the approved device refused"
until_ok 20 sink_has "Subject: smoke external" || fail "external message not in data/sink"
echo "ok   unregistered refused; registered + approved scanner.example.edu -> someone@example.com -> data/sink"

ext bounce@example.com "smoke bounce" || fail "sending to bounce@example.com"
until_ok 20 sink_has "Final-Recipient: rfc822; bounce@example.com" || fail "no NDR in data/sink"
echo "ok   bounce@example.com refused by the sink -> NDR to scanner@example.edu -> data/sink"

stop_run
echo "ok   SIGINT stopped every process cleanly"

login=$(grep -o 'user: .*' "$log")
start_run
[ "$(grep -o 'user: .*' "$log")" = "$login" ] || fail "second run shows another staff login"
if grep -q "enrolled as edge" "$log"; then fail "second run enrolled the edge again"; fi
until_ok 15 ext someone@example.com "smoke second run" || fail "second run: the approved device is refused"
until_ok 20 sink_has "Subject: smoke second run" || fail "second run: message not in data/sink"
stop_run
echo "ok   second run in the same folder: same staff login and enrolment, device still approved"
echo PASS
