# One command per task, the same locally and in CI.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
JSDIR  := tests/e2e/js

.PHONY: help install check format test test-unit test-e2e e2e-deps demo bench clean

help:
	@echo "make demo       run Strapi, the sidecar and a page to try it (Ctrl-C stops all)"
	@echo "make test       lint, type-check and run every test (unit + end-to-end)"
	@echo "make test-unit  the fast suite only (no Strapi, no node)"
	@echo "make check      ruff + mypy"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

check: install
	$(BIN)/ruff format --check adapter webhooks tests demo strapi-fixtures/launcher.py
	$(BIN)/ruff check adapter webhooks tests demo strapi-fixtures/launcher.py
	$(BIN)/mypy

format: install
	$(BIN)/ruff format adapter webhooks tests demo strapi-fixtures/launcher.py
	$(BIN)/ruff check --fix adapter webhooks tests demo strapi-fixtures/launcher.py

e2e-deps:
	bash strapi-fixtures/install.sh
	bash $(JSDIR)/install.sh
	bash demo/install.sh
	@command -v chromium >/dev/null || (set -x; apt-get update && apt-get install -y chromium)
	@command -v redis-server >/dev/null || (set -x; apt-get update && apt-get install -y redis-server)

test-unit: install
	$(BIN)/pytest tests/unit

test-e2e: install e2e-deps
	$(BIN)/pytest tests/e2e

# One pytest run for the whole suite, after the static checks.
test: check e2e-deps
	$(BIN)/pytest tests

demo: install e2e-deps
	$(BIN)/python -m demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artifacts

# The benchmark suite (bench/README.md): fan-out, connections, storms, reads and scale-out (2
# processes sharing a Redis), for the sidecar and a Node socket.io baseline, against a fast fake
# Strapi and the real one. Flags: BENCH_ARGS.
bench: install
	bash strapi-fixtures/install.sh
	bash bench/install.sh
	@command -v redis-server >/dev/null || (set -x; apt-get update && apt-get install -y redis-server)
	$(BIN)/python -m bench $(BENCH_ARGS)
