#!/usr/bin/env bash
# Builds the Postern edge appliance images with gokrazy (`make firmware`).
#
#   firmware/build.sh [vm] [pi]            build images (default: both)
#   firmware/build.sh update HOST pi|vm    build and install on a running edge
#                                          over HTTP (A/B root, then reboot)
#   firmware/build.sh logs HOST pi|vm      stream postern-edge's log lines
#
# Output: firmware/out/postern-edge-<instance>.img (sparse raw disk images
# with a formatted /perm partition), ready for `dd`, Raspberry Pi Imager or
# qemu. Instance definitions live in firmware/instances/<instance>/
# (config.json + builddir/ pinning every gokrazy package version); gok itself
# is pinned in firmware/tools/go.mod. The instance is copied to
# firmware/out/gokrazy/<instance>/ and completed there, so the tree stays
# clean.
#
# Environment:
#   VERSION            version stamped into the binaries (default: git describe)
#   POSTERN_SEED_DIR   folder baked into the image as /etc/postern: an
#                      edge.toml, enroll-token and/or central-url used at
#                      first boot (see deploy/README.md). Never commit one.
#   FIRMWARE_OVERLAY   a jq filter file applied to config.json (tests)
#   FIRMWARE_OUT       output folder (default firmware/out)
#   VM_STORAGE_BYTES / PI_STORAGE_BYTES  image sizes (defaults 1.5 GiB / 4 GiB)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
out="${FIRMWARE_OUT:-$here/out}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

log() { printf 'firmware/build: %s\n' "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

need() { # need COMMAND DEBIAN-PACKAGE
	command -v "$1" >/dev/null 2>&1 && return 0
	[ "$(id -u)" = 0 ] || die "$1 is missing: apt-get install $2"
	log "installing $2"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null 2>&1 ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null; } ||
		die "apt-get install $2"
}
need go golang
need jq jq
need mkfs.ext4 e2fsprogs

version="${VERSION:-$(git -C "$repo" describe --tags --always --dirty 2>/dev/null || echo dev)}"
instances=("$@")
[ ${#instances[@]} -gt 0 ] || instances=(vm pi)

# prepare INSTANCE [HOST]: copies the instance to $out/gokrazy and completes
# it (builddir for our module, version, seed, overlay, update host).
prepare() {
	local inst="$1" host="${2:-}" work
	[ -f "$here/instances/$inst/config.json" ] || die "no firmware/instances/$inst/config.json"
	work="$out/gokrazy/$inst"
	rm -rf "$work"
	mkdir -p "$out/gokrazy"
	cp -r "$here/instances/$inst" "$work"

	# Our own packages build from this working tree: a per-module builddir
	# whose replace points at the repository.
	local bd="$work/builddir/github.com/postern/postern"
	mkdir -p "$bd"
	printf 'module gokrazy/build/postern\n\ngo %s\n\nrequire github.com/postern/postern v0.0.0-00010101000000-000000000000\n\nreplace github.com/postern/postern => %s\n' \
		"$(sed -n 's/^go //p' "$repo/go.mod")" "$repo" >"$bd/go.mod"
	cp "$repo/go.sum" "$bd/go.sum"

	local ldflags="-ldflags=-s -w -X github.com/postern/postern/shared/version.Version=$version"
	local filter='(.PackageConfig[] | select(.GoBuildFlags != null) | .GoBuildFlags) |= (map(select(startswith("-ldflags") | not)) + [$ld])'
	if [ -n "${POSTERN_SEED_DIR:-}" ]; then
		local seed
		seed="$(cd "$POSTERN_SEED_DIR" && pwd)" || die "POSTERN_SEED_DIR $POSTERN_SEED_DIR"
		filter="$filter | .PackageConfig[\"github.com/postern/postern/firmware/cmd/postern-appliance\"].ExtraFilePaths[\"/etc/postern\"] = \"$seed\""
		log "baking $seed into /etc/postern of the $inst image"
	fi
	if [ -n "$host" ]; then
		filter="$filter | .Update.Hostname = \"$host\""
	fi
	jq --arg ld "$ldflags" "$filter" "$work/config.json" >"$work/config.json.new"
	if [ -n "${FIRMWARE_OVERLAY:-}" ]; then
		jq -f "$FIRMWARE_OVERLAY" "$work/config.json.new" >"$work/config.json"
		rm "$work/config.json.new"
	else
		mv "$work/config.json.new" "$work/config.json"
	fi
}

build_one() {
	local inst="$1" size img
	case "$inst" in
	vm) size="${VM_STORAGE_BYTES:-1610612736}" ;;
	pi) size="${PI_STORAGE_BYTES:-4294967296}" ;;
	*) die "unknown instance $inst (vm or pi)" ;;
	esac
	img="$out/postern-edge-$inst.img"
	prepare "$inst"
	log "building $img ($inst, version $version)"
	local t0=$SECONDS gokout
	rm -f "$img"
	gokout="$out/gok-$inst.log"
	# gok prints the web interface URL with its password: keep that out of
	# logs (the password is in ~/.config/gokrazy/http-password.txt).
	if ! (cd "$here/tools" && go tool gok --parent_dir "$out/gokrazy" -i "$inst" \
		overwrite --full "$img" --target_storage_bytes "$size") >"$gokout" 2>&1; then
		sed -E 's#//gokrazy:[^@]*@#//gokrazy:***@#' "$gokout" | tail -40 >&2
		die "gok overwrite $inst"
	fi
	# /perm: gok prints the mkfs line with the partition's offset and size.
	local off blocks
	off="$(sed -n 's/.*mkfs\.ext4 .*offset=\([0-9]*\) .*/\1/p' "$gokout" | head -1)"
	blocks="$(sed -n 's/.*mkfs\.ext4 .* \([0-9][0-9]*\)$/\1/p' "$gokout" | head -1)"
	[ -n "$off" ] && [ -n "$blocks" ] || die "gok did not print the /perm geometry (see $gokout)"
	mkfs.ext4 -q -F -L perm -E offset="$off" "$img" "$blocks" || die "mkfs.ext4 /perm"
	sed -i -E 's#//gokrazy:[^@]*@#//gokrazy:***@#' "$gokout"
	log "built $img in $((SECONDS - t0))s: $(du -h --apparent-size "$img" | cut -f1) image, $(du -h "$img" | cut -f1) used"
}

gok() { (cd "$here/tools" && go tool gok --parent_dir "$out/gokrazy" "$@"); }

case "${1:-}" in
update | logs)
	[ $# = 3 ] || die "usage: firmware/build.sh $1 HOST pi|vm"
	case "$3" in vm | pi) ;; *) die "unknown instance $3 (vm or pi)" ;; esac
	prepare "$3" "$2"
	if [ "$1" = update ]; then
		log "updating $2 ($3, version $version)"
		gok -i "$3" update || die "gok update $2"
	else
		gok -i "$3" logs -s postern-appliance
	fi
	exit 0
	;;
esac
for inst in "${instances[@]}"; do
	build_one "$inst"
done
