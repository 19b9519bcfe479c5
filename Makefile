# minerfleet: thin wrappers. `make up` runs the fleet, `make test` runs the tests; both set up what is missing.
SHELL := /bin/bash
PY := .venv/bin/python
CONFIG ?= config/miners.yaml
MODEL := models/gemma-3-270m-q4_k_m.gguf

.PHONY: venv model model-hf test test-unit check lint types layers clean

venv: .venv/.installed
.venv/.installed: pyproject.toml scripts/setup.sh
	@bash scripts/setup.sh

model: venv $(MODEL)
$(MODEL):
	@$(PY) scripts/model.py

model-hf: model
	@$(PY) scripts/model.py --hf

test: venv model
	$(PY) -m pytest -ra

test-unit: venv
	$(PY) -m pytest -ra tests/unit

check: lint types layers

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check . || true

types: venv
	.venv/bin/mypy

layers: venv
	.venv/bin/lint-imports

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
