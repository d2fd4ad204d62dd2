#!/usr/bin/env bash
# Entrypoint of the kit's image.
#   (no args or flags)  prepare the model, then `exec python -m serve launch [flags]`, which execs vLLM:
#                       no shell or Python process stays in between, so vLLM gets the stop signal.
#   anything else       exec it as given (`docker compose run vllm python -m serve render ...`).
# Environment:
#   SERVE_PROFILE, SERVE_SET, SERVE_PLAN_FILE   read by the launcher itself.
#   SERVE_CONTAINER_PORT   port vLLM listens on in the container (passed as --set serving.port), so the
#                          compose port mapping holds whatever the profile says.
#   SERVE_DOWNLOAD         auto (default): download the profile's model.id into HF_HOME first, with a
#                          progress bar, unless model.path is set or the snapshot is complete already;
#                          a repo id: download that one; 0: never (vLLM resolves the model itself).
#   SERVE_TINY_MODEL_DIR   write a tiny random model there if it holds none, and serve it (CPU flavor).
#   SERVE_TINY_MODEL_ARGS  extra arguments of `python -m serve tiny-model` (e.g. "--arch qwen3").
#   KIT_API_KEY_FILE       file holding the API key (compose: written by the kit-secrets service); its
#                          content becomes VLLM_API_KEY, which vLLM honours; empty file = no key.
#   HF_TOKEN_FILE          read by the download step only (compose gives it to the download service).
# `download` as the only argument runs the download step alone and exits (compose's download service):
# there the Hugging Face token is read; vLLM's container gets no token, and after a download step that
# found the snapshot complete vLLM runs with HF_HUB_OFFLINE=1 (it reads the cache, never the Hub).
set -euo pipefail

if [[ $# -gt 0 && "$1" != -* && "$1" != download ]]; then
  exec "$@"
fi

log() { printf '[kit-entrypoint] %s\n' "$*" >&2; }

sets=(--set "serving.host=0.0.0.0" --set "serving.port=${SERVE_CONTAINER_PORT:-8000}")
[[ -z "${SERVE_TINY_MODEL_DIR:-}" ]] || sets+=(--set "model.path=$SERVE_TINY_MODEL_DIR")

download_off() { [[ "${SERVE_DOWNLOAD:-auto}" =~ ^(0|false|no|off)$ ]]; }
download_step() {
  if [[ "${SERVE_DOWNLOAD:-auto}" == auto ]]; then
    python3 -m serve.download "${sets[@]}"
  else
    python3 -m serve.download "$SERVE_DOWNLOAD"
  fi
}

if [[ "${1:-}" == download ]]; then
  if download_off; then
    log "SERVE_DOWNLOAD=${SERVE_DOWNLOAD}: nothing to download"
    exit 0
  fi
  download_step
  exit 0
fi

if [[ -n "${SERVE_TINY_MODEL_DIR:-}" && ! -f "$SERVE_TINY_MODEL_DIR/config.json" ]]; then
  log "writing a tiny random model to $SERVE_TINY_MODEL_DIR"
  # shellcheck disable=SC2086  # SERVE_TINY_MODEL_ARGS is a list of flags, split on purpose
  python3 -m serve tiny-model "$SERVE_TINY_MODEL_DIR" ${SERVE_TINY_MODEL_ARGS:-}
fi

if ! download_off; then
  # In compose the download service ran first: this finds the snapshot complete on disk (no Hub call).
  download_step
  export HF_HUB_OFFLINE=1
fi
unset HF_TOKEN HF_TOKEN_FILE

if [[ -n "${KIT_API_KEY_FILE:-}" ]]; then
  if [[ ! -r "$KIT_API_KEY_FILE" ]]; then
    log "error: KIT_API_KEY_FILE=$KIT_API_KEY_FILE cannot be read by uid $(id -u); start the stack with docker compose (its kit-secrets service writes it) or unset KIT_API_KEY_FILE"
    exit 2
  fi
  key="$(<"$KIT_API_KEY_FILE")"
  if [[ -n "$key" ]]; then
    export VLLM_API_KEY="$key"
    log "API key required (Authorization: Bearer; from $KIT_API_KEY_FILE)"
  else
    unset VLLM_API_KEY
  fi
  unset key
fi

exec python3 -m serve launch "${sets[@]}" "$@"
