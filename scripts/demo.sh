#!/usr/bin/env bash
# The CPU demo: no GPU needed. `scripts/demo.sh start` installs what it needs (scripts/bootstrap.sh),
# makes the model, starts vLLM's CPU build through the launcher and the readiness sidecar, asks the
# model the sidecar's question and prints its answer, runs the smoke suite, and leaves both running.
# `scripts/demo.sh stop` stops them.
#
# DEMO_PROFILE picks the profile (default cpu-real):
#   cpu-real       SmolLM2-135M-Instruct, a real trained model built from a PyPI wheel (python -m serve
#                  real-model): it answers, and the sidecar is ready only when the answer is right
#   cpu-real-int4  the same, quantized with auto-round (W4A16), where that profile exists
#   cpu-tiny       a tiny random-weight Qwen3: gibberish; the answer check is off, the plumbing is shown
#   cpu-tiny-mtp   a tiny random-weight Qwen3.5 hybrid with MTP speculative decoding
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
RUN=run/demo
PROFILE="${DEMO_PROFILE:-cpu-real}"
VLLM_PORT="${DEMO_VLLM_PORT:-8000}"
SIDECAR_PORT="${DEMO_SIDECAR_PORT:-8001}"
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
  curl -sS "$1" >&2 || true  # the sidecar's /readyz says why it is not ready
  return 1
}

make_model() {  # profile -> model dir on stdout (the profile's model.path), made if missing
  local dir
  dir=$("$PY" -c 'import sys; from serve.launch.layering import load_profile
print(load_profile(sys.argv[1]).profile.model.path or "")' "$1")
  [[ -n "$dir" ]] || { echo "profile $1 has no model.path: the demo needs local weights" >&2; return 2; }
  case "$1" in
    cpu-real) "$PY" -m serve real-model "$dir" >&2 ;;
    cpu-real-int4) "$PY" -m serve real-model --int4 "$dir" >&2 ;;
    cpu-tiny) "$PY" -m serve tiny-model "$dir" --arch qwen3 >&2 ;;
    cpu-tiny-mtp) "$PY" -m serve tiny-model "$dir" --arch qwen3_5 >&2 ;;
    *) [[ -f "$dir/config.json" ]] || { echo "no model in $dir for profile $1" >&2; return 2; } ;;
  esac
  echo "$dir"
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
    MODEL_DIR=$(make_model "$PROFILE")
    setsid "$PY" -m serve launch --profile "$PROFILE" --engine auto \
      --set "model.path=$MODEL_DIR" --set "serving.port=$VLLM_PORT" --set serving.host=127.0.0.1 \
      --plan-file "$RUN/plan.json" >"$RUN/vllm.log" 2>&1 &
    echo $! >"$RUN/vllm.pid"
    echo "vLLM (CPU build) starting with profile $PROFILE, log $RUN/vllm.log; about a minute on 2 cores"
    wait_http "http://127.0.0.1:$VLLM_PORT/health" 420 vLLM
    setsid "$PY" -m healthcheck --vllm-url "http://127.0.0.1:$VLLM_PORT" --port "$SIDECAR_PORT" \
      --host 127.0.0.1 --plan-file "$RUN/plan.json" --probe-interval-s 5 >"$RUN/sidecar.log" 2>&1 &
    echo $! >"$RUN/sidecar.pid"
    wait_http "http://127.0.0.1:$SIDECAR_PORT/readyz" 120 "the sidecar's readiness"
    # What "ready" means here, and a real answer to the sidecar's own question.
    "$PY" - "$RUN/plan.json" "http://127.0.0.1:$SIDECAR_PORT/readyz" <<'PYTHON'
import json, sys, urllib.request

import openai

plan = json.load(open(sys.argv[1]))
readyz = json.load(urllib.request.urlopen(sys.argv[2], timeout=10))
question = plan["readiness"]["prompt"]
client = openai.OpenAI(base_url=plan["base_url"] + "/v1", api_key="EMPTY")
reply = client.chat.completions.create(
    model=plan["served_model_name"],
    messages=[{"role": "user", "content": question}],
    max_tokens=64,
    temperature=0,
    extra_body=plan["readiness"].get("extra_body") or None,
)
print(f"\nsidecar /readyz: ready={readyz['ready']} reason={readyz['reason']}")
print(f"  answer check:  {readyz['answer_check']}")
print(f"  probe sample:  {readyz['last_probe']['sample']!r}")
message = reply.choices[0].message
reasoning = getattr(message, "reasoning", None) or getattr(message, "reasoning_content", None)
answer = message.content if message.content is not None else f"(no content; reasoning: {reasoning!r})"
print(f"\nQ: {question}\nA: {answer}\n")
PYTHON
    "$PY" -m serve smoke --base-url "http://127.0.0.1:$VLLM_PORT" --plan-file "$RUN/plan.json" \
      --report "$RUN/smoke.json"
    MODEL=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["served_model_name"])' "$RUN/plan.json")
    OTHER="make demo DEMO_PROFILE=cpu-tiny   (random weights: plumbing only, answer check off)"
    [[ "$PROFILE" == cpu-real* ]] || OTHER="make demo   (cpu-real: a trained model; readiness checks its answer)"
    cat <<MSG

The CPU demo is running (profile $PROFILE; stop it with: make demo-stop)
  OpenAI API      http://127.0.0.1:$VLLM_PORT/v1   (model: $MODEL)
  vLLM metrics    http://127.0.0.1:$VLLM_PORT/metrics
  sidecar         http://127.0.0.1:$SIDECAR_PORT/readyz  /livez  /metrics
  plan            $RUN/plan.json   smoke report $RUN/smoke.json
  other models    $OTHER

Try:
  curl -s http://127.0.0.1:$VLLM_PORT/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "$MODEL", "messages": [{"role": "user", "content": "What is 2 + 3?"}], "max_tokens": 32}'
MSG
    ;;
  *)
    echo "usage: [DEMO_PROFILE=cpu-real|cpu-tiny|...] scripts/demo.sh start|stop" >&2
    exit 2
    ;;
esac
