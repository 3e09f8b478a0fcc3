# Two commands set everything up on a fresh machine that has only python3:
#   make run    starts Prism's main job on the embedded store
#   make test   runs the whole test suite
PYTHON ?= python3
VENV   := .venv
UV     := .tools/bin/uv
STAMP  := $(VENV)/.installed
export UV_PROJECT_ENVIRONMENT := $(VENV)
export PYTHON

.PHONY: run test lint bench docs fmt clean screenshots

$(UV):
	sh scripts/bootstrap-uv.sh

$(STAMP): uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --all-extras --python $(PYTHON)
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/prism serve $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

bench: $(STAMP)
	$(VENV)/bin/python -m bench $(ARGS)

docs: $(STAMP)
	$(VENV)/bin/python -m prism.backends.matrix docs/backends.md

# A PNG of each admin console page into docs/images/ (needs Chromium and redis-server).
screenshots: $(STAMP)
	$(VENV)/bin/python scripts/console_screenshots.py

clean:
	rm -rf $(VENV) .tools .prism .pytest_cache .mypy_cache
