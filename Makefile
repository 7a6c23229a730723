# Set-up and everyday commands. `make demo` and `make test` work on a fresh clone: they create
# .venv with Python 3.12 when it is missing and (re)install the package when pyproject.toml changes.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Python 3.12 may be on PATH, or installed by pyenv without being the active version.
PYTHON312 ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 && { echo $$p; break; }; done)
PYTEST_ARGS ?=
# Two workers: CI and the developers' machines have 2 cores.
XDIST ?= -n 2

.PHONY: venv demo test test-slow lint docs bench clean

$(VENV)/.installed: pyproject.toml
	@if [ ! -x $(PY) ]; then \
		if [ -z "$(PYTHON312)" ]; then echo "error: python3.12 not found; install it or set PYTHON312=/path/to/python3.12" >&2; exit 1; fi; \
		echo "Creating $(VENV) with $(PYTHON312)"; $(PYTHON312) -m venv $(VENV); fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/ctcdyn demo --out out/demo

lint: venv
	$(VENV)/bin/ruff check ctcdyn tests benchmarks notebooks docs/api
	$(VENV)/bin/ruff format --check ctcdyn tests benchmarks notebooks docs/api
	$(VENV)/bin/mypy

# The documentation site (mkdocs.yml) into build/site. Strict: any warning (a broken link or
# anchor, a docstring that does not match its signature) fails the build, in CI too.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir build/site

test: lint docs
	$(VENV)/bin/pytest $(XDIST) $(PYTEST_ARGS)

test-slow: venv
	$(VENV)/bin/pytest $(XDIST) -m slow $(PYTEST_ARGS)

# Sizes per engine so the whole run takes a few minutes on 2 cores (see docs/benchmarks.md).
bench: venv
	$(PY) benchmarks/simulate_engines.py --patients 5000 --years 5 --engines FastClearance --chunk 1000
	$(PY) benchmarks/simulate_engines.py --patients 5000 --years 5 --engines FastClearance --chunk 1000 --float32
	$(PY) benchmarks/simulate_engines.py --patients 50 --years 1 --engines ODE

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
