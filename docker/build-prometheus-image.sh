#!/usr/bin/env bash
# Builds a Prometheus image from Debian's `prometheus` package on the debootstrap base, for the
# monitoring profile where no registry can be reached (CPU flavor, CI). Skipped when the tag exists and
# was built from the same inputs.
#
# Usage: docker/build-prometheus-image.sh [IMAGE_TAG]     (default qwen-kit/prometheus:debian)
# Env:   DEBIAN_BASE_IMAGE, FORCE=1 to rebuild.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGE="${1:-qwen-kit/prometheus:debian}"
DEBIAN_BASE_IMAGE="${DEBIAN_BASE_IMAGE:-qwen-kit/debian:bookworm}"
FORCE="${FORCE:-0}"

log() { printf '[build-prometheus-image] %s\n' "$*" >&2; }

"$here/build-debian-base.sh" "$DEBIAN_BASE_IMAGE"

inputs="$(cat "$here/prometheus.Dockerfile" <(docker image inspect -f '{{.Id}}' "$DEBIAN_BASE_IMAGE") | sha256sum | cut -c1-16)"
if [[ "$FORCE" != 1 ]] \
  && [[ "$(docker image inspect -f '{{index .Config.Labels "qwen-kit.inputs"}}' "$IMAGE" 2>/dev/null || true)" == "$inputs" ]]; then
  log "$IMAGE present and built from the same inputs ($inputs); skipping (FORCE=1 rebuilds)"
  exit 0
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$here/prometheus.Dockerfile" "$ctx/"
start=$SECONDS
docker build --network host -f "$ctx/prometheus.Dockerfile" \
  --build-arg "DEBIAN_IMAGE=$DEBIAN_BASE_IMAGE" --label "qwen-kit.inputs=$inputs" -t "$IMAGE" "$ctx" >&2
log "built $IMAGE in $((SECONDS - start)) s: $(docker run --rm --entrypoint /usr/bin/prometheus "$IMAGE" --version 2>&1 | head -1)"
