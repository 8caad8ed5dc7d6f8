#!/usr/bin/env bash
# Starts postern-central and one postern-edge on loopback with embedded
# defaults (SQLite, the in-process MQTT broker, Badger under ./data) and
# stops both on Ctrl-C. Used by `make run`.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p data
pids=()
stop() {
	trap - INT TERM EXIT
	echo
	echo "stopping…"
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	echo "stopped."
}
trap stop INT TERM EXIT

bin/postern-central serve -dev 2> >(sed -u 's/^/[central] /' >&2) &
pids+=($!)
bin/postern-edge run -dev 2> >(sed -u 's/^/[edge]    /' >&2) &
pids+=($!)

cat <<'MSG'

Postern is running (Ctrl-C stops both):
  central web console   http://127.0.0.1:8480/
  central MQTT broker   127.0.0.1:18883
  edge SMTP             127.0.0.1:2525
  edge admin            http://127.0.0.1:9025/healthz  (metrics: /metrics)

Send a test message:
  curl smtp://127.0.0.1:2525 --mail-from scanner@example.edu \
       --mail-rcpt someone@example.edu -T - <<<$'From: scanner@example.edu\r\nSubject: test\r\n\r\nhello\r\n'
  postern-edge queue list   (bin/postern-edge queue list -dev) shows it in the spool.

MSG
wait -n "${pids[@]}" || true
