# Prometheus from Debian's package, on the debootstrap base (docker/build-debian-base.sh): the monitoring
# profile's Prometheus where no registry can be reached (the CPU flavor, CI). The GPU compose file uses
# the upstream image by default; both take the same command-line flags.
ARG DEBIAN_IMAGE=qwen-kit/debian:bookworm
FROM ${DEBIAN_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# wget: the compose healthcheck probes /-/ready with it, as it does in the upstream (busybox) image.
# Versions are bookworm's, fixed by the suite.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus wget \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus \
 && chown 65534:65534 /prometheus

# nobody (65534:65534), as in the upstream image: Debian's prometheus user gets a uid chosen at install
# time, and the compose stack's kit-secrets service hands the scrape's API-key file to a known uid
# (PROMETHEUS_UID).
USER 65534:65534
WORKDIR /prometheus
EXPOSE 9090
VOLUME ["/prometheus"]
HEALTHCHECK --interval=10s --timeout=5s --retries=3 CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9090/-/ready"]
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
