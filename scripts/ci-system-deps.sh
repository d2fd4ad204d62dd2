#!/usr/bin/env bash
# System packages the healthcheck tests need, installed idempotently, and a Docker engine started
# when none answers. Safe to run repeatedly; the lead's CI script calls it before pytest.
#   prometheus      real Prometheus for tests/healthcheck/test_prometheus.py
#   docker.io       a real Docker engine for the autoheal test
#   busybox-static  a static busybox, imported as a tiny image (no registry is reachable)
set -euo pipefail

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
[ -x /bin/busybox ] || need+=(busybox-static)

if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends keeps prometheus from pulling in its web-console extras and node exporter.
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# Debian's prometheus package starts a service on :9090 where systemd/invoke-rc.d runs; the tests
# start their own on loopback, so stop a packaged one if it came up (ignore when there is none).
if command -v service >/dev/null 2>&1; then
  service prometheus stop >/dev/null 2>&1 || true
fi

if ! docker info >/dev/null 2>&1; then
  mkdir -p /var/log
  # No systemd here: start the daemon by hand, detached, and wait for its socket to answer.
  nohup dockerd >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "dockerd did not come up; see /var/log/dockerd.log" >&2; exit 1; }
fi
echo "ci-system-deps: prometheus=$(command -v prometheus) dockerd=$(command -v dockerd) busybox=/bin/busybox"
