#!/usr/bin/env bash
# Install test of the Debian packages (`make packages-test`; needs root).
#
# For postern-edge and postern-central (amd64): dpkg -i, then check
#   - the system user, the data folder (owner, 0750), the conffile
#     (registered, 0640, group-readable by the service only);
#   - the installed units pass `systemd-analyze verify` and score "OK" or
#     better in `systemd-analyze security`;
#   - the installed binary, as the service user, accepts the packaged
#     configuration (check-config);
#   - it runs in the foreground on loopback ports (a temporary copy of the
#     packaged configuration with only listen addresses and data_dir
#     changed) and answers: the edge's 220 banner and /healthz, central's
#     HTTP listener; SIGTERM stops it with status 0;
#   - reinstalling keeps an administrator's change to the configuration;
#   - dpkg --purge removes binary, configuration, data and user.
#
# Environment: DIST_DIR (default dist), BIN_DIR (see packages.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
dist="${DIST_DIR:-$repo/dist}"
work="$(mktemp -d /tmp/postern-packages-test.XXXXXX)"
chmod 0755 "$work"
pids=()
log() { printf 'packages-test: %s\n' "$*" >&2; }
fail() {
	log "FAILED: $*"
	for f in "$work"/*.log; do [ -f "$f" ] && { log "--- $f"; tail -20 "$f" >&2; }; done
	exit 1
}
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for n in postern-edge postern-central; do
		dpkg -s "$n" >/dev/null 2>&1 && dpkg --purge "$n" >/dev/null 2>&1 || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || fail "run as root (it installs packages)"
if ! command -v systemd-analyze >/dev/null; then
	log "installing systemd (for systemd-analyze)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null 2>&1 ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null; } ||
		fail "apt-get install systemd"
fi
command -v curl >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null || fail "install curl"

deb_of() { ls -t "$dist"/"$1"_*_amd64.deb 2>/dev/null | head -1; }
if [ -z "$(deb_of postern-edge)" ] || [ -z "$(deb_of postern-central)" ]; then
	log "no amd64 packages in $dist: building them"
	ARCHES=amd64 DIST_DIR="$dist" "$repo/deploy/packages.sh" || fail "deploy/packages.sh"
fi

free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
}
# banner PORT: the first line the server sends.
banner() { timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1; head -1 <&3; printf 'QUIT\r\n' >&3" 2>/dev/null | tr -d '\r'; }

check_common() { # check_common NAME CONF
	local n="$1" conf="/etc/postern/$2" st
	getent passwd "$n" >/dev/null || fail "$n: no system user"
	[ "$(getent passwd "$n" | cut -d: -f7)" = /usr/sbin/nologin ] || fail "$n: user has a login shell"
	st="$(stat -c '%U:%G %a' "/var/lib/$n")" || fail "$n: no /var/lib/$n"
	[ "$st" = "$n:$n 750" ] || fail "$n: /var/lib/$n is $st, want $n:$n 750"
	st="$(stat -c '%U:%G %a' "$conf")" || fail "$n: no $conf"
	[ "$st" = "root:$n 640" ] || fail "$n: $conf is $st, want root:$n 640"
	dpkg-query -W -f='${Conffiles}\n' "$n" | grep -q " $conf " || fail "$n: $conf is not a conffile"
	local unit="/usr/lib/systemd/system/$n.service" out score
	out="$(systemd-analyze verify "$unit" 2>&1)" || fail "$n: systemd-analyze verify: $out"
	[ -z "$out" ] || fail "$n: systemd-analyze verify warns: $out"
	score="$(systemd-analyze security --offline=true "$unit" 2>&1 | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\) .*/\1/p')"
	[ -n "$score" ] || fail "$n: no security score"
	awk -v s="$score" 'BEGIN { exit !(s <= 3.0) }' || fail "$n: exposure $score > 3.0"
	log "$n: user, folders, conffile ok; unit verifies, exposure $score"
	runuser -u "$n" -- "/usr/bin/$n" check-config -config "$conf" >"$work/$n-check.log" 2>&1 ||
		fail "$n: check-config of the packaged $conf: $(cat "$work/$n-check.log")"
	"/usr/bin/$n" version >/dev/null || fail "$n version"
}

# run_foreground NAME CONFIG ARGS...: starts the installed binary as the
# service user; sets $fg_pid.
run_foreground() {
	local n="$1" cfg="$2"
	shift 2
	# setpriv execs (runuser would stay in between and eat the exit status).
	setpriv --reuid="$n" --regid="$n" --init-groups -- "/usr/bin/$n" "$@" -config "$cfg" >"$work/$n-run.log" 2>&1 &
	fg_pid=$!
	pids+=("$fg_pid")
}
stop_foreground() { # stop_foreground NAME
	kill -TERM "$fg_pid"
	local rc=0
	timeout 30 tail --pid="$fg_pid" -f /dev/null || fail "$1 did not stop within 30s of SIGTERM"
	wait "$fg_pid" || rc=$?
	[ $rc = 0 ] || fail "$1 exited with status $rc after SIGTERM"
}

for n in postern-edge postern-central; do
	dpkg -s "$n" >/dev/null 2>&1 && dpkg --purge "$n" >/dev/null
done
log "installing $(basename "$(deb_of postern-edge)") and $(basename "$(deb_of postern-central)")"
dpkg -i "$(deb_of postern-edge)" "$(deb_of postern-central)" >"$work/dpkg-install.log" 2>&1 || fail "dpkg -i"

# --- edge
check_common postern-edge edge.toml
smtp_port=$(free_port)
admin_port=$(free_port)
mkdir -m 0750 "$work/edge-data" && chown postern-edge: "$work/edge-data"
sed -e "s#^data_dir = .*#data_dir = \"$work/edge-data\"#" \
	-e "s#^listen = \[\"0.0.0.0:25\"\]#listen = [\"127.0.0.1:$smtp_port\"]#" \
	-e "s#^listen = \"127.0.0.1:9025\"#listen = \"127.0.0.1:$admin_port\"#" \
	/etc/postern/edge.toml >"$work/edge.toml"
grep -q "127.0.0.1:$smtp_port" "$work/edge.toml" || fail "could not point the edge configuration at a loopback port"
chmod 0644 "$work/edge.toml"
run_foreground postern-edge "$work/edge.toml" run
got=""
for _ in $(seq 60); do
	kill -0 "$fg_pid" 2>/dev/null || fail "postern-edge exited: $(tail -5 "$work/postern-edge-run.log")"
	got="$(banner "$smtp_port" || true)"
	case "$got" in 220*) break ;; esac
	got=""
	sleep 0.5
done
[ -n "$got" ] || fail "postern-edge: no 220 banner on 127.0.0.1:$smtp_port"
log "postern-edge: banner: $got"
health="$(curl -s -m 3 "http://127.0.0.1:$admin_port/healthz" || true)"
[ "$health" = ok ] || fail "postern-edge: /healthz answered '$health'"
stop_foreground postern-edge
log "postern-edge: /healthz ok, clean stop on SIGTERM"

# --- central
check_common postern-central central.toml
http_port=$(free_port)
mqtt_port=$(free_port)
mkdir -m 0750 "$work/central-data" && chown postern-central: "$work/central-data"
sed -e "s#^data_dir = .*#data_dir = \"$work/central-data\"#" \
	-e "s#^listen = \"0.0.0.0:8443\"#listen = \"127.0.0.1:$http_port\"#" \
	-e "s#^base_url = \"\"#base_url = \"http://127.0.0.1:$http_port\"#" \
	-e "s#^listen = \"0.0.0.0:8883\"#listen = \"127.0.0.1:$mqtt_port\"#" \
	/etc/postern/central.toml >"$work/central.toml"
grep -q "127.0.0.1:$http_port\"" "$work/central.toml" || fail "could not point the central configuration at a loopback port"
chmod 0644 "$work/central.toml"
run_foreground postern-central "$work/central.toml" serve
code=""
for _ in $(seq 60); do
	kill -0 "$fg_pid" 2>/dev/null || fail "postern-central exited: $(tail -5 "$work/postern-central-run.log")"
	code="$(curl -s -o /dev/null -w '%{http_code}' -m 3 "http://127.0.0.1:$http_port/" || true)"
	case "$code" in [1-5]??) break ;; esac
	code=""
	sleep 0.5
done
[ -n "$code" ] || fail "postern-central: no HTTP answer on 127.0.0.1:$http_port"
stop_foreground postern-central
log "postern-central: HTTP $code on its listener, clean stop on SIGTERM"

# --- an administrator's change survives a reinstall
echo "# changed by the administrator" >>/etc/postern/edge.toml
dpkg -i "$(deb_of postern-edge)" >"$work/dpkg-reinstall.log" 2>&1 || fail "dpkg -i (reinstall)"
grep -q "changed by the administrator" /etc/postern/edge.toml || fail "reinstall overwrote a changed /etc/postern/edge.toml"
log "reinstall kept the changed configuration"

# --- purge
dpkg --purge postern-edge postern-central >"$work/dpkg-purge.log" 2>&1 || fail "dpkg --purge"
for p in /usr/bin/postern-edge /usr/bin/postern-central /etc/postern /var/lib/postern-edge /var/lib/postern-central \
	/usr/lib/systemd/system/postern-edge.service /usr/lib/systemd/system/postern-central.service; do
	[ ! -e "$p" ] || fail "$p is left after purge"
done
for u in postern-edge postern-central; do
	! getent passwd "$u" >/dev/null || fail "user $u is left after purge"
	! getent group "$u" >/dev/null || fail "group $u is left after purge"
done
log "purge removed binaries, configuration, data and users"
log "PASS"
