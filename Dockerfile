# llm-extproc: the Envoy ext_proc sidecar, runtime only (with the `otel` extra; no dev/test/lint extras).
#
#   make image            # docker or podman: tags llm-extproc:<pyproject version>, fills the labels below
#   docker build -t llm-extproc:0.1.0 --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run --rm -p 50051:50051 -v "$PWD/examples:/etc/llm-extproc:ro" llm-extproc:0.1.0 \
#       serve --config /etc/llm-extproc/config.yaml --listen 0.0.0.0:50051
#
# The config file and the team's handler .py files are NOT baked in: mount them at /etc/llm-extproc
# (the Helm chart in deploy/helm/llm-extproc does it from a ConfigMap). `module.attribute` callbacks
# resolve relative to the config file's folder, so handlers next to config.yaml import as is.
#
# Health check: the gRPC health service (grpc.health.v1.Health, SERVING once the handlers are loaded,
# NOT_SERVING while SIGTERM drains for extproc.grace_seconds) on every address the sidecar listens on.
# Kubernetes probes it with `grpc:` probes (TCP only, hence a TCP --listen next to the unix socket).
# There is no HTTP health endpoint by design, so there is no Docker HEALTHCHECK here; with plain Docker,
# check from outside with a gRPC health client (e.g. grpc_health_probe -addr=127.0.0.1:50051).

# The base image, pinned by digest so a rebuild gets the same bytes; the tag says what it is.
# python:3.11-slim = Python 3.11.16 on Debian 13 (trixie), as published on 2026-08-25 (the multi-platform
# index digest, from docker-library/repo-info's repos/python/remote/3.11-slim.md). To move to a newer
# patch release: `docker buildx imagetools inspect python:3.11-slim` and replace the digest.
FROM python:3.11-slim@sha256:3c1dfceb3f1267d4d378e7883cddf35c58757bab98d70bba30b6e02e808fa21d

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# A fixed non-root uid/gid (10001), matching the chart's securityContext (runAsNonRoot, runAsUser).
RUN groupadd --system --gid 10001 llm-extproc \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin llm-extproc

WORKDIR /src
COPY pyproject.toml README.md ./
COPY extproc/ extproc/
COPY handlers/ handlers/
# Runtime dependencies: pyproject's `dependencies` and the `otel` extra (OpenTelemetry's SDK and OTLP
# exporter, for extproc.tracing); no dev/test/lint tools. xds-protos ships an older copy of
# opentelemetry/proto/* and pip keeps whichever package it wrote last, so opentelemetry-proto's own files
# are put back (as the Makefile does), and the build fails here if the exporter does not import.
# The source is not needed afterwards.
RUN pip install --no-cache-dir ".[otel]" \
    && proto=$(python -c "from importlib.metadata import version; print(version('opentelemetry-proto'))") \
    && pip install --no-cache-dir --no-deps --force-reinstall "opentelemetry-proto==$proto" \
    && cd / && python -c "from extproc.telemetry import tracing; tracing.require()" \
    && rm -rf /src

# OCI image labels (https://github.com/opencontainers/image-spec/blob/main/annotations.md). Declared after
# the install so a new revision only rebuilds this metadata layer. `make image` passes VERSION (pyproject's),
# REVISION (the git commit) and SOURCE (the git remote, without credentials); the defaults describe a
# plain `docker build .` of this release.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=
LABEL org.opencontainers.image.title="llm-extproc" \
      org.opencontainers.image.description="LiteLLM-compatible LLM call hooks for Envoy, as an ext_proc gRPC sidecar" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${REVISION}"

WORKDIR /
USER 10001:10001
EXPOSE 50051
ENTRYPOINT ["llm-extproc"]
CMD ["serve", "--config", "/etc/llm-extproc/config.yaml"]
