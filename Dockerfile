# llm-extproc: the Envoy ext_proc sidecar, runtime only (no dev/test/lint extras).
#
#   docker build -t llm-extproc:0.1.0 .
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
FROM python:3.11-slim

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
# Runtime dependencies only: pyproject's `dependencies` (no extras). The source is not needed afterwards.
RUN pip install --no-cache-dir . && rm -rf /src

WORKDIR /
USER 10001:10001
EXPOSE 50051
ENTRYPOINT ["llm-extproc"]
CMD ["serve", "--config", "/etc/llm-extproc/config.yaml"]
