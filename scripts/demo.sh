#!/usr/bin/env bash
# The CPU demo: no GPU needed. `scripts/demo.sh start` installs what it needs (scripts/bootstrap.sh),
# writes a tiny random-weight Qwen3 (it answers gibberish: the plumbing is what is shown), starts
# vLLM's CPU build through the launcher and the readiness sidecar, runs the smoke suite, and leaves
# both running. `scripts/demo.sh stop` stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
RUN=run/demo
VLLM_PORT="${DEMO_VLLM_PORT:-8000}"
SIDECAR_PORT="${DEMO_SIDECAR_PORT:-8001}"
MODEL_DIR=run/models/tiny-qwen3
PY="$VENV/bin/python"

stop_one() {
  local pidfile="$RUN/$1.pid"
  [[ -f "$pidfile" ]] || return 0
  local pid
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "stopped $1 (pid $pid)"
  fi
  rm -f "$pidfile"
}

wait_http() {  # url seconds what
  for _ in $(seq 1 "$2"); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 1
  done
  echo "$3 did not answer at $1 within $2 s; see $RUN/*.log" >&2
  return 1
}

case "${1:-start}" in
  stop)
    stop_one sidecar
    stop_one vllm
    ;;
  start)
    scripts/bootstrap.sh
    mkdir -p "$RUN"
    stop_one sidecar
    stop_one vllm
    "$PY" -m serve tiny-model "$MODEL_DIR" --arch qwen3
    setsid "$PY" -m serve launch --profile cpu-tiny --engine auto \
      --set "model.path=$MODEL_DIR" --set "serving.port=$VLLM_PORT" --set serving.host=127.0.0.1 \
      --plan-file "$RUN/plan.json" >"$RUN/vllm.log" 2>&1 &
    echo $! >"$RUN/vllm.pid"
    echo "vLLM (CPU build) starting, log $RUN/vllm.log; this takes about a minute on 2 cores"
    wait_http "http://127.0.0.1:$VLLM_PORT/health" 420 vLLM
    setsid "$PY" -m healthcheck --vllm-url "http://127.0.0.1:$VLLM_PORT" --port "$SIDECAR_PORT" \
      --host 127.0.0.1 --plan-file "$RUN/plan.json" --probe-interval-s 5 >"$RUN/sidecar.log" 2>&1 &
    echo $! >"$RUN/sidecar.pid"
    wait_http "http://127.0.0.1:$SIDECAR_PORT/readyz" 120 "the sidecar's readiness"
    "$PY" -m serve smoke --base-url "http://127.0.0.1:$VLLM_PORT" --plan-file "$RUN/plan.json" \
      --report "$RUN/smoke.json"
    cat <<MSG

The CPU demo is running (stop it with: make demo-stop)
  OpenAI API      http://127.0.0.1:$VLLM_PORT/v1   (model: tiny-qwen3; random weights, so gibberish)
  vLLM metrics    http://127.0.0.1:$VLLM_PORT/metrics
  sidecar         http://127.0.0.1:$SIDECAR_PORT/readyz  /livez  /metrics
  plan            $RUN/plan.json   smoke report $RUN/smoke.json

Try:
  curl -s http://127.0.0.1:$VLLM_PORT/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "tiny-qwen3", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16}'
MSG
    ;;
  *)
    echo "usage: scripts/demo.sh start|stop" >&2
    exit 2
    ;;
esac
