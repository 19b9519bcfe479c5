# minerfleet: thin wrappers over scripts/ and `python -m orchestrator`.
# `make up` runs the fleet, `make test` runs the tests; both set up whatever is missing first.
SHELL := /bin/bash
PY := .venv/bin/python
CONFIG ?= config/miners.yaml
MODEL := models/gemma-3-270m-q4_k_m.gguf
ORCH := $(PY) -m orchestrator
COMPOSE := bash scripts/compose.sh
# Containers never run as root: the operator's own uid, or 1000 when make runs as root. Keys on network
# local are handed to that uid by `wallets`; the orchestrator joins the docker socket's group.
export MINERFLEET_UID ?= $(shell [ "$$(id -u)" = 0 ] && echo 1000 || id -u)
export MINERFLEET_GID ?= $(shell [ "$$(id -u)" = 0 ] && echo 1000 || id -g)
export MINERFLEET_DOCKER_GID ?= $(shell stat -c %g /var/run/docker.sock 2>/dev/null || echo 0)

.PHONY: swarm-up swarm-down up down health capacity status logs render validate wallets images bench bench-quick \
        venv model model-hf llama-server cuda-configure gpu-check test test-deps test-unit check lint types layers clean

# --- the fleet ------------------------------------------------------------------------------------
# MONITORING=1: also Prometheus with the alert rules (compose profile `monitoring`, 127.0.0.1:9090).
# ROLLING=1: replace changed miners a few at a time (rollout.max_unavailable), each streaming before the
# next; ROLLBACK=1: put back the revision the last rolling update started from.
up: venv model
	@CONFIG=$(CONFIG) MONITORING=$(MONITORING) ROLLING=$(ROLLING) ROLLBACK=$(ROLLBACK) bash scripts/up.sh

down:
	$(COMPOSE) --profile monitoring down --remove-orphans

health: venv
	$(ORCH) health --config $(CONFIG)

# Docker Swarm (README "Many machines"): run on a manager; DOCKER_HOST or MANAGER=... names its engine.
swarm-up: venv model
	$(ORCH) swarm up --config $(CONFIG) $(if $(MANAGER),--manager $(MANAGER)) $(ARGS)

swarm-down: venv
	$(ORCH) swarm down --config $(CONFIG) $(if $(MANAGER),--manager $(MANAGER))

# K concurrent requests through every miner (make capacity CONCURRENCY=16 ARGS="--rounds 3 --json")
CONCURRENCY ?= 8
capacity: venv
	$(ORCH) capacity --config $(CONFIG) --concurrency $(CONCURRENCY) $(ARGS)

status: venv
	$(ORCH) status --config $(CONFIG)

logs:
	$(COMPOSE) logs -f --tail=100

render: venv
	$(ORCH) render --config $(CONFIG)

validate: venv
	$(ORCH) validate --config $(CONFIG)

wallets: venv
	$(ORCH) wallets --config $(CONFIG)

# The images the fleet uses (ALL=1: every one but cuda, as before; MINERFLEET_IMAGES="..." names them).
images: venv
	@MINERFLEET_IMAGES="$${MINERFLEET_IMAGES:-$$([ -n "$(ALL)" ] && echo "cpu hf orchestrator prometheus" || $(ORCH) images --config $(CONFIG))}" bash scripts/images.sh

bench: venv model
	$(PY) -m bench.run $(ARGS)

bench-quick: venv model
	$(PY) -m bench.run --quick

# --- setting up ------------------------------------------------------------------------------------
venv: .venv/.installed
.venv/.installed: pyproject.toml scripts/setup.sh
	@bash scripts/setup.sh

model: venv $(MODEL)
$(MODEL):
	@$(PY) scripts/model.py

model-hf: model
	@$(PY) scripts/model.py --hf

# llama.cpp's llama-server (the fleet's model server), compiled once (3-6 min on 2 cores) and cached;
# prints where it is, built now or cached.
llama-server:
	@path="$$(bash scripts/llama-server.sh)" || exit 1; echo "llama-server: $$(printf '%s\n' "$$path" | tail -n 1)"

# CI's check that the CUDA build configures (toolkit from PyPI, no GPU); gpu-check needs a GPU.
cuda-configure:
	bash scripts/cuda-configure.sh

gpu-check: venv model
	bash scripts/gpu-check.sh $(ARGS)

# --- checks ----------------------------------------------------------------------------------------
# The tests start a real llama-server: MINERFLEET_LLAMA_SERVER says where it is.
test: venv model llama-server test-deps
	MINERFLEET_LLAMA_SERVER=$$(bash scripts/llama-server.sh) $(PY) -m pytest -ra

# Debian's prometheus/promtool and chromium for the monitoring tests (installed when missing and root).
test-deps:
	@bash scripts/test-deps.sh

test-unit: venv
	$(PY) -m pytest -ra tests/unit

check: lint types layers

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

types: venv
	.venv/bin/mypy

layers: venv
	.venv/bin/lint-imports

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
