# The kit's image: vLLM plus this project, whose launcher plans the flags, writes plan.json and execs
# vLLM. One Dockerfile for both flavors:
#   GPU (default): the pinned vLLM OpenAI-server image, v0.33.0: the newest release the kit is proven on
#     (docs/gpu.md: the launcher's plans served on an H200 with the 0.33.0 wheel, 2026-12-01), and past the
#     fixes for silent wrong output on Qwen3.5/3.6 with MTP (PR 51812 in 0.28, PR 51113 in 0.27; on older
#     engines the launcher refuses MTP on this model). Built for CUDA 13 (torch 2.14.0+cu130) with sm_120 in
#     its arch list (vLLM's default CUDA since v0.20, PR 39878); CUDA 13 needs an NVIDIA driver >= 580.
#     vLLM published -cu129 variants for older drivers (v0.24.0-cu129); whether v0.33.0 has one was not
#     checked here (no registry). v0.24.0 still works for profiles without speculative decoding.
#   CPU (no GPU, CI): --build-arg BASE_IMAGE=qwen-kit/vllm-cpu:0.32.0, made by docker/build-cpu-base.sh
#     without any registry.
ARG BASE_IMAGE=vllm/vllm-openai:v0.33.0
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Extras of this project to install: gpu (NVML telemetry), download (huggingface_hub). Not docker: no
# service talks to the Docker API (restarts come from inside the vLLM container).
ARG KIT_EXTRAS=gpu,download
ARG KIT_UID=1000
ARG KIT_GID=1000

# Caches live under /data so that compose can put them on volumes: a restart neither downloads the
# weights again (HF_HOME) nor recompiles: vLLM's torch.compile artifacts (VLLM_CACHE_ROOT), Inductor and
# Triton kernels, FlashInfer's JIT kernels (nvcc, minutes on a first start; it caches under
# $FLASHINFER_WORKSPACE_BASE/.cache), Humming's NVRTC-compiled int4 kernels (rule int4-humming-sm90; its
# scratch and lock files go to the tmpfs: by default both live under ~, on the read-only root) and the
# driver's PTX JIT cache (sm_120 kernels shipped as PTX).
ENV HF_HOME=/data/hf \
    VLLM_CACHE_ROOT=/data/cache/vllm \
    TORCHINDUCTOR_CACHE_DIR=/data/cache/inductor \
    TRITON_CACHE_DIR=/data/cache/triton \
    HUMMING_CACHE_DIR=/data/cache/humming \
    HUMMING_TMP_DIR=/tmp/humming \
    FLASHINFER_WORKSPACE_BASE=/data/cache \
    CUDA_CACHE_PATH=/data/cache/nv \
    CUDA_CACHE_MAXSIZE=4294967296 \
    XDG_CACHE_HOME=/data/cache \
    SERVE_CONFIG_DIR=/app/config \
    SERVE_PLAN_FILE=/run/kit/plan.json \
    HEALTHCHECK_PLAN_FILE=/run/kit/plan.json \
    SERVE_PROFILE=qwen3.6-27b-rtx5090 \
    SERVE_CONTAINER_PORT=8000 \
    PYTHONUNBUFFERED=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY serve/ serve/
COPY healthcheck/ healthcheck/
COPY docker/kit-pins.txt docker/install-pinned.py /tmp/kit-install/
# Every version fixed: the base image's packages are frozen as constraints (installing the kit must never
# move vLLM's own pins: torch, transformers, pydantic...), what the base lacks comes at the exact version
# in docker/kit-pins.txt, and the build fails if anything else gets added (docker/install-pinned.py).
# PIP_BREAK_SYSTEM_PACKAGES: the vLLM image installs into the system Python on purpose; a venv base ignores it.
RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 /tmp/kit-install/install-pinned.py /tmp/kit-install/kit-pins.txt ".[${KIT_EXTRAS}]" \
 && rm -rf /tmp/kit-install build ./*.egg-info \
 && python3 -c "import serve, healthcheck"

COPY config/ config/
COPY docker/entrypoint.sh /usr/local/bin/kit-entrypoint
COPY docker/vllm-health.py /usr/local/bin/kit-vllm-health
COPY docker/kit-secrets.py /usr/local/bin/kit-secrets

# A non-root user owns the cache, model and plan directories; named volumes mounted there start with
# this ownership. (useradd is skipped when the base already has the uid, e.g. ubuntu:24.04's "ubuntu".)
RUN (getent group "${KIT_GID}" >/dev/null || groupadd --gid "${KIT_GID}" kit) \
 && (getent passwd "${KIT_UID}" >/dev/null || useradd --uid "${KIT_UID}" --gid "${KIT_GID}" --create-home --home-dir /home/kit --shell /bin/bash kit) \
 && mkdir -p /data/hf /data/cache /data/models /run/kit \
 && chown -R "${KIT_UID}:${KIT_GID}" /data /run/kit \
 && chmod 0755 /usr/local/bin/kit-entrypoint /usr/local/bin/kit-vllm-health /usr/local/bin/kit-secrets
USER ${KIT_UID}:${KIT_GID}

EXPOSE 8000 8889
VOLUME ["/data/hf", "/data/cache"]

# Liveness of vLLM itself (GET /health). Readiness that means "answers correctly" is the sidecar's
# /readyz; compose gives the sidecar service its own healthcheck. The start period covers a first
# start that downloads ~18 GB and compiles; compose overrides it (VLLM_START_PERIOD).
HEALTHCHECK --interval=15s --timeout=10s --start-period=30m --retries=3 CMD ["/usr/local/bin/kit-vllm-health"]

# The entrypoint ends in `exec python -m serve launch`, which execs vLLM: no shell stays in between, so
# `docker stop`'s SIGTERM reaches vLLM. Compose adds `init: true` (Docker's tini) as PID 1 to reap
# vLLM's helper processes.
ENTRYPOINT ["/usr/local/bin/kit-entrypoint"]
CMD []
