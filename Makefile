# The two commands a newcomer needs: `make run` and `make test`.
# scripts/ensure-uv finds uv or installs it into .tools/; it says why on stderr when it can't.
UV := $(shell ./scripts/ensure-uv)
ifeq ($(strip $(UV)),)
$(error uv is needed and could not be found or installed (see the line above); install uv and run make again)
endif
export UV
CONFIG ?= switchboard.example.toml

.PHONY: run test lint sync bench build system-deps fuzz

sync:
	$(UV) sync --all-packages --frozen

## Start the service on SQLite with the example configuration (http://127.0.0.1:8080/docs).
run: sync
	$(UV) run --frozen switchboard serve --config $(CONFIG)

## The Debian packages the tests use (scripts/system-deps is their one list): installed
## when missing (as root or with password-less sudo), else the command to run is printed.
system-deps:
	./scripts/system-deps

## Install what the tests need, then run every test (PostgreSQL at 127.0.0.1:5432 is used
## when it is there; under CI=true it must be, and any skipped test is a failure).
test: system-deps sync
	$(UV) run --frozen pytest

## The fuzz tests alone, long (50,000 inputs each instead of the 400 of `make test`;
## 500 schemathesis requests per API operation and token instead of 12).
fuzz: sync
	SWITCHBOARD_FUZZ=long $(UV) run --frozen pytest -k fuzz --timeout=0

## ruff (lint + format) and mypy over the core and the plugins.
lint: sync
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy

## Build a wheel and an sdist of every workspace member into dist/.
build:
	$(UV) build --all-packages --out-dir dist

## Benchmarks (not part of the tests); figures go to docs/benchmarks.md by hand.
bench: sync
	$(UV) run --frozen python bench/ingest.py
	$(UV) run --frozen python bench/lookup.py
	$(UV) run --frozen python bench/api.py
	$(UV) run --frozen python bench/sse.py
	$(UV) run --frozen python bench/telegram_bench.py
	$(UV) run --frozen python bench/sip_bench.py
	$(UV) run --frozen python bench/sip_bridge_bench.py
	$(UV) run --frozen python bench/ivr_check.py
	$(UV) run --frozen python bench/mailing_bench.py
	$(UV) run --frozen python bench/analytics_bench.py
	$(UV) run --frozen python bench/console_pop.py
	$(UV) run --frozen python bench/console_session.py
	$(UV) run --frozen python bench/whatsapp_bench.py
	$(UV) run --frozen python bench/whatsapp_outbound_bench.py
	$(UV) run --frozen python bench/vk_bench.py
	$(UV) run --frozen python bench/max_bench.py
	$(UV) run --frozen python bench/meta_bench.py
	$(UV) run --frozen python bench/crm_bench.py
	$(UV) run --frozen python bench/nodes_bench.py
