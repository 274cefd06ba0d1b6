# Two commands do everything: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo demo-web web-bundle test lint typecheck unit clean interop bench bench-quick

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/secsync demo

# A browser and a Python backend edit one document: open the link it prints.
demo-web: $(STAMP)
	$(BIN)/secsync demo --web

# Needs Node.js: rebuild the demo page's committed bundle (secsync/apps/web/app.js) from web/.
web-bundle:
	cd web && npm ci --no-audit --no-fund && npm run build

lint: $(STAMP)
	$(BIN)/ruff check secsync tests interop benchmarks
	$(BIN)/ruff format --check secsync tests interop benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck unit

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Optional, needs Node.js: seal with secsync JS and Python, verify each with the other.
interop: $(STAMP)
	cd interop/js && npm ci --silent && node generate.mjs
	$(BIN)/python interop/make_python_sealed.py
	cd interop/js && node verify.mjs
	$(BIN)/pytest -q tests/interop

# Benchmarks (not part of `make test`): results go to docs/benchmarks.md and .png.
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run --json benchmarks/out/results.json

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run --quick
