#!/usr/bin/env bash
# Builds the Debian base image every local image of this kit starts FROM, without a registry:
# debootstrap (minbase + python3) -> tar -> `docker import`. Cached twice: the image tag (skip when
# present) and the rootfs tarball under $KIT_CACHE_DIR (re-import without debootstrapping again).
#
# Usage: docker/build-debian-base.sh [IMAGE_TAG]      (default qwen-kit/debian:bookworm)
# Env:   DEBIAN_MIRROR, KIT_CACHE_DIR, FORCE=1 to rebuild.
set -euo pipefail

IMAGE="${1:-${DEBIAN_BASE_IMAGE:-qwen-kit/debian:bookworm}}"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE_DIR="${KIT_CACHE_DIR:-/var/cache/qwen-kit}"
TARBALL="$CACHE_DIR/debian-$SUITE-minbase-python3.tar"
FORCE="${FORCE:-0}"

log() { printf '[build-debian-base] %s\n' "$*" >&2; }

if [[ "$FORCE" != 1 ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "$IMAGE present; skipping (FORCE=1 rebuilds)"
  exit 0
fi

command -v debootstrap >/dev/null || { log "debootstrap missing: apt-get install debootstrap"; exit 1; }
mkdir -p "$CACHE_DIR"

if [[ "$FORCE" == 1 || ! -s "$TARBALL" ]]; then
  rootfs="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
  trap 'rm -rf "$rootfs"' EXIT
  start=$SECONDS
  log "debootstrap $SUITE minbase + python3 from $MIRROR (a few minutes)"
  debootstrap --variant=minbase --include=python3,ca-certificates "$SUITE" "$rootfs" "$MIRROR" >"$CACHE_DIR/debootstrap.log" 2>&1 \
    || { tail -30 "$CACHE_DIR/debootstrap.log" >&2; exit 1; }
  # debootstrap lists only the main suite; add updates and security so images built on this one get fixes.
  cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
SOURCES
  # Keep images small: no apt caches, no docs/man pages in later installs.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/01-nodoc" <<'NODOC'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/locale/*
NODOC
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$rootfs/etc/apt/apt.conf.d/01-norecommends"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" --numeric-owner -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
  log "rootfs ready in $((SECONDS - start)) s: $TARBALL"
fi

docker import \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  "$TARBALL" "$IMAGE" >/dev/null
log "imported $IMAGE"
