# The two commands a newcomer runs: `make demo` and `make test`.
# Both create .venv and install everything they need on a fresh machine.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# mitmproxy (a real TLS-intercepting proxy for the check tests) pins its own
# dependencies, so it lives in a venv of its own; 11.x runs on Python 3.11.
MITM_VENV := .venv-mitmproxy
MITM_STAMP := $(MITM_VENV)/.installed
# px (PyPI px-proxy), the local authenticating helper local-proxy is
# benchmarked against, brings its own pinned dependencies: a venv of its own.
PX_VENV := .venv-px
PX_STAMP := $(PX_VENV)/.installed
NODE_ADAPTER := proxy/adapters/node_ws
NODE_STAMP := $(NODE_ADAPTER)/node_modules/.installed

.PHONY: demo test lint typecheck unit system-deps bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# Kerberos compiles against libkrb5-dev (make system-deps): optional on a
	# laptop (the Kerberos tests then skip), required under CI=true.
	$(BIN)/python -m pip install --quiet -e '.[kerberos]' || { \
		case "$${CI:-}" in 1|true|yes) exit 1;; esac; \
		echo "note: tunnelws[kerberos] not installed (needs libkrb5-dev and gcc)" >&2; }
	touch $@

$(MITM_STAMP):
	$(PYTHON) -m venv $(MITM_VENV)
	$(MITM_VENV)/bin/python -m pip install --quiet 'mitmproxy>=11,<12'
	touch $@

$(PX_STAMP):
	$(PYTHON) -m venv $(PX_VENV)
	$(PX_VENV)/bin/python -m pip install --quiet 'px-proxy>=0.13,<0.14'
	touch $@

$(NODE_STAMP): $(NODE_ADAPTER)/package-lock.json
	cd $(NODE_ADAPTER) && npm ci --silent --no-audit --no-fund
	touch $@

demo: $(STAMP)
	$(BIN)/tunnelws demo

system-deps:
	sh tests/install-system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check src proxy tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(MITM_STAMP) $(NODE_STAMP)
	$(BIN)/pytest

test: system-deps lint typecheck unit

bench: $(STAMP) $(PX_STAMP)
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/relay.py
	$(BIN)/python benchmarks/local_proxy.py
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/micro.py

clean:
	rm -rf $(VENV) $(MITM_VENV) $(PX_VENV) $(NODE_ADAPTER)/node_modules .pytest_cache .mypy_cache .ruff_cache
