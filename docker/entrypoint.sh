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
set -euo pipefail

if [[ $# -gt 0 && "$1" != -* ]]; then
  exec "$@"
fi

log() { printf '[kit-entrypoint] %s\n' "$*" >&2; }

sets=(--set "serving.host=0.0.0.0" --set "serving.port=${SERVE_CONTAINER_PORT:-8000}")

if [[ -n "${SERVE_TINY_MODEL_DIR:-}" ]]; then
  if [[ ! -f "$SERVE_TINY_MODEL_DIR/config.json" ]]; then
    log "writing a tiny random model to $SERVE_TINY_MODEL_DIR"
    # shellcheck disable=SC2086  # SERVE_TINY_MODEL_ARGS is a list of flags, split on purpose
    python3 -m serve tiny-model "$SERVE_TINY_MODEL_DIR" ${SERVE_TINY_MODEL_ARGS:-}
  fi
  sets+=(--set "model.path=$SERVE_TINY_MODEL_DIR")
fi

case "${SERVE_DOWNLOAD:-auto}" in
  0 | false | no | off) ;;
  auto) python3 -m serve.download "${sets[@]}" ;;
  *) python3 -m serve.download "$SERVE_DOWNLOAD" ;;
esac

exec python3 -m serve launch "${sets[@]}" "$@"
