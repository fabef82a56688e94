# kpcompile developer tasks. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= .demo
# the docs pages; their generated tables come from docs/gen.py, run by cog
PAGES  := $(wildcard docs/*.md)
COG    := $(BIN)/cog -I docs

.DEFAULT_GOAL := help
.PHONY: help install browser demo test test-long lint format docs bench bench-compare clean

help: ## Show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml setup.py $(wildcard kpcompile/*/*.c)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) browser ## Create .venv with kpcompile and its dev dependencies (as root: chromium too)

# The HTML report's browser test drives Debian's chromium (never Playwright's downloads).
# As root (CI) it is installed once; otherwise a missing chromium only skips that test.
browser: ## Install Debian's chromium for the report's browser test, when root and not there yet
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "installing chromium (apt-get) for the report's browser test"; \
	  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends chromium fonts-liberation >/dev/null; \
	else \
	  echo "note: no chromium; the report's browser test will skip (make install as root adds it)"; \
	fi

demo: $(STAMP) ## Synthesize a small dataset, compile it, print a summary and a query
	rm -rf $(DEMO)
	$(BIN)/kpcompile synth $(DEMO)/dataset --datapoints 40 --cameras 3 --layout mixed
	$(BIN)/kpcompile build $(DEMO)/dataset $(DEMO)/compiled
	$(BIN)/kpcompile info $(DEMO)/compiled
	$(BIN)/python -c "import kpcompile, polars as pl; print(kpcompile.scan('$(DEMO)/compiled') \
	  .group_by('camera').agg(pl.len().alias('landmarks'), pl.col('visible').mean().alias('visible_rate'), \
	  pl.col('z3').mean().alias('mean_z3')).sort('camera').collect())"

test: $(STAMP) ## Run the test suite (slow tests excluded)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-long: $(STAMP) ## Run every test, slow ones included
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff, mypy, docs tables current (cog --check), mkdocs build --strict
	$(BIN)/ruff check kpcompile tests benchmarks docs/gen.py
	$(BIN)/ruff format --check kpcompile tests benchmarks docs/gen.py
	$(BIN)/mypy
	$(BIN)/mypy docs/gen.py
	$(COG) --check --check-fail-msg='run `make docs`' $(PAGES)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

format: $(STAMP) ## Apply ruff's formatting and fixes
	$(BIN)/ruff check --fix kpcompile tests benchmarks docs/gen.py
	$(BIN)/ruff format kpcompile tests benchmarks docs/gen.py

docs: $(STAMP) ## Regenerate the docs' tables from the code (cog) and build the site into site/
	$(COG) -r $(PAGES)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(STAMP) ## Run the benchmarks; results in benchmarks/results/
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

BASE ?= main
bench-compare: $(STAMP) ## A/B: the working tree against BASE (a git ref), paired runs; exit 1 if >5% slower
	$(BIN)/python -m benchmarks.compare --base $(BASE) $(COMPARE_ARGS)

clean: ## Remove the virtualenv, caches and demo output
	rm -rf $(VENV) $(DEMO) site .pytest_cache .mypy_cache .ruff_cache build *.egg-info
