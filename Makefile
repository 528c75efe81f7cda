# Every target bootstraps .venv itself: `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The LiteLLM peer of `make bench` (bench/litellm_peer.py): its own venv, never a dependency of the project.
LITELLM_VENV    := bench/.litellm-venv
LITELLM_VERSION := 1.106.2
LITELLM_STAMP   := $(LITELLM_VENV)/.installed-$(LITELLM_VERSION)

.PHONY: run test lint unit e2e check clean deploy-envoy bench bench-tools bench-litellm soak fuzz

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,test,lint]'
	@touch $(STAMP)

## run: Envoy + the sidecar + the mock upstream on http://127.0.0.1:10000 (Ctrl-C stops all three)
run: $(STAMP)
	$(BIN)/llm-extproc dev --config examples/config.yaml

## test: lint, then every test (unit, gRPC, end to end through a real Envoy)
test: $(STAMP) lint
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check extproc handlers tests examples
	$(BIN)/ruff format --check extproc handlers
	$(BIN)/mypy extproc handlers

unit: $(STAMP)
	$(BIN)/pytest -q -m "not e2e"

e2e: $(STAMP)
	$(BIN)/pytest -q -m e2e

check: $(STAMP)
	$(BIN)/llm-extproc check --config examples/config.yaml

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis

## deploy-envoy: regenerate deploy/envoy/envoy.yaml (a test fails if it drifts from the generator)
deploy-envoy: $(STAMP)
	$(BIN)/llm-extproc envoy-config --config deploy/envoy/config.yaml --upstream http://upstream:8000 > deploy/envoy/envoy.yaml

## bench: load tests (h2load, loopback, 3-5 min; not part of `make test`) -> bench/results/latest.{json,md,png}
## (with the LiteLLM peer line once `make bench-litellm` has installed LiteLLM)
bench: bench-tools
	$(BIN)/python -m bench.run

bench-tools: $(STAMP)
	command -v h2load >/dev/null || (apt-get update && apt-get install -y nghttp2-client)
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || \
		$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[bench]'

## bench-litellm: LiteLLM into bench/.litellm-venv (git-ignored), then the peer line only (+ envoy-alone)
bench-litellm: bench-tools $(LITELLM_STAMP)
	$(BIN)/python -m bench.run --only litellm-peer

$(LITELLM_STAMP):
	@test -x $(LITELLM_VENV)/bin/python || $(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'litellm[proxy]==$(LITELLM_VERSION)'
	@rm -f $(LITELLM_VENV)/.installed-*
	@touch $@

## soak: 10 minutes of mixed load through Envoy + a real Valkey; errors 0, RSS flat, counters back to 0
soak: $(STAMP)
	SOAK_SECONDS=$${SOAK_SECONDS:-600} $(BIN)/python tests/soak/run.py

## fuzz: the request-path fuzzer for FUZZ_SECONDS (default 60); non-zero exit on a failure (smoke run in `make test`)
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz.fuzz_request_path --seconds $${FUZZ_SECONDS:-60}
