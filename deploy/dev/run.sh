#!/usr/bin/env bash
# Starts the whole Postern loop on loopback and stops it on Ctrl-C. Used by
# `make run` (which builds bin/ first):
#
#   postern-devlab   DNS for the dev zone (127.0.0.1:5354) and a mail sink
#                    (127.0.0.1:2526) that saves every message in data/sink/
#   postern-central  serve -dev: SQLite, the embedded MQTT broker, web console
#   postern-edge     run -dev, enrolled with central
#
# Nothing leaves loopback: the -dev defaults of both programs resolve names
# at devlab and send all mail to its sink. The first run creates a dev edge
# in central, enrols it and creates a staff user; everything persists under
# ./data, so later runs start where the last one stopped (rm -rf data for a
# clean slate). POSTERN_DEV_DIR runs it in another folder instead (the
# smoke test, deploy/dev/smoke.sh, uses a temporary one).
set -euo pipefail
BIN=$(cd "$(dirname "$0")/../.." && pwd)/bin
cd "${POSTERN_DEV_DIR:-$(dirname "$0")/../..}"

CENTRAL=http://127.0.0.1:8480
EDGE_ID=dev-edge
STAFF_FILE=data/dev-staff.txt

for b in postern-devlab postern-central postern-edge; do
	[ -x "$BIN/$b" ] || { echo "$BIN/$b is missing: run make run (or make build)" >&2; exit 1; }
done
mkdir -p data

pids=()
stopping=""
stop() {
	[ -n "$stopping" ] && return
	stopping=1
	trap - INT TERM
	echo
	echo "stopping…"
	# Edge first (it flushes its outbox to central), devlab last.
	local i p
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		p=${pids[i]}
		kill -TERM "$p" 2>/dev/null || continue
		for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$p" 2>/dev/null; then
			echo "pid $p did not stop in 10 s; killing it" >&2
			kill -KILL "$p" 2>/dev/null || true
		fi
	done
	wait 2>/dev/null || true
	echo "stopped."
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT

# start PREFIX CMD… runs CMD in the background with its log lines
# prefixed. The prefixing seds ignore SIGINT: Ctrl-C goes to the whole
# process group, and a dead sed would lose the programs' last log lines
# (and break their stderr).
start() {
	local prefix=$1
	shift
	"$@" 2> >(trap '' INT; exec sed -u "s/^/$prefix /" >&2) > >(trap '' INT; exec sed -u "s/^/$prefix /") &
	pids+=($!)
}

# wait_for WHAT URL|HOST:PORT waits up to 20 s for an HTTP 2xx or a TCP
# listener, and gives up if a started process died meanwhile.
wait_for() {
	local what=$1 target=$2 p
	for _ in $(seq 200); do
		if [[ $target == http* ]]; then
			curl -fsS -o /dev/null --max-time 1 "$target" 2>/dev/null && return 0
		else
			(exec 3<>"/dev/tcp/${target%:*}/${target#*:}") 2>/dev/null && return 0
		fi
		for p in "${pids[@]}"; do
			kill -0 "$p" 2>/dev/null || { echo "$what: a process exited during start-up (see its log above)" >&2; exit 1; }
		done
		sleep 0.1
	done
	echo "$what did not come up at $target within 20 s" >&2
	exit 1
}

start "[devlab] " "$BIN/postern-devlab" -dns 127.0.0.1:5354 -smtp 127.0.0.1:2526 -sink data/sink
wait_for devlab 127.0.0.1:2526
start "[central]" "$BIN/postern-central" serve -dev
wait_for central "$CENTRAL/"

# First run: a staff user and an enrolled edge. The CLI works while serve runs.
if [ ! -s "$STAFF_FILE" ]; then
	user=admin
	if ! out=$("$BIN/postern-central" user add "$user" -dev 2>/dev/null); then
		user=admin-$(date +%s) # "admin" exists but its password was not kept
		out=$("$BIN/postern-central" user add "$user" -dev)
	fi
	pw=${out##*password: }
	(umask 077 && printf '%s %s\n' "$user" "$pw" >"$STAFF_FILE")
fi
read -r staff_user staff_pw <"$STAFF_FILE"

if [ ! -s data/edge/enrolment.json ]; then
	id=$EDGE_ID
	if ! out=$("$BIN/postern-central" edge add "$id" -name "dev edge" -site loopback -dev 2>/dev/null); then
		id=$EDGE_ID-$(date +%s) # the edge exists in central but data/edge was removed
		out=$("$BIN/postern-central" edge add "$id" -name "dev edge" -site loopback -dev)
	fi
	token=$(sed -n 's/.*-token \([^ ]*\).*/\1/p' <<<"$out" | tail -n1)
	"$BIN/postern-edge" enroll -central "$CENTRAL" -token "$token" -dev -allow-http | sed 's/^/[enroll]  /'
fi

start "[edge]   " "$BIN/postern-edge" run -dev
wait_for edge http://127.0.0.1:9025/healthz

cat <<MSG

Postern is running (Ctrl-C stops everything):
  central web console   $CENTRAL/   (registration form: $CENTRAL/register)
  staff console         $CENTRAL/staff/login   user: $staff_user   password: $staff_pw
  central MQTT broker   127.0.0.1:18883
  edge SMTP             127.0.0.1:2525
  edge admin            http://127.0.0.1:9025/healthz  (metrics: /metrics)
  dev DNS               127.0.0.1:5354   (example.edu; scanner.example.edu = 127.0.0.2)
  mail sink             127.0.0.1:2526   saves every delivered message in data/sink/

Send a test message:
  printf 'From: scanner@example.edu\r\nSubject: test\r\n\r\nhello\r\n' |
    curl smtp://127.0.0.1:2525 --mail-from scanner@example.edu --mail-rcpt someone@example.edu -T -
  ls data/sink/   bin/postern-edge queue list -dev
The README's "Walkthrough" goes on: register -> approve -> send -> delivered or bounced.

MSG
set +e
wait -n "${pids[@]}"
# Ctrl-C reaches the programs too; give the INT trap its turn before
# blaming a program for exiting on its own.
sleep 0.5
echo "a process exited; stopping the others" >&2
