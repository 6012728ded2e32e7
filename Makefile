# The two commands a user needs: `make run` and `make test`. Everything else is a step of theirs.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTOS := $(wildcard protos/clawdbot/v1/*.proto)
GEN := clawdbot/v1/__init__.py

.PHONY: run test setup protos lint typecheck pytest system-deps clean

run: setup
	$(BIN)/clawdbot up

test: setup system-deps lint typecheck pytest

setup: $(STAMP) $(GEN)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools>=70" wheel

# torch first, chosen for the host: the CPU build where no GPU is present, the CUDA build where one is.
$(STAMP): $(BIN)/python pyproject.toml setup.py
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(BIN)/python -m pip install -q "torch>=2.6"; \
	else \
		$(BIN)/python -m pip install -q "torch==2.13.0"; \
	fi
	$(BIN)/python -m pip install -q "grpcio-tools>=1.70" "mypy-protobuf>=3.6"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

protos: $(BIN)/python
	$(BIN)/python -c 'import runpy; runpy.run_path("setup.py", run_name="protos")["generate_protos"]()'
	@echo "generated clawdbot/v1 from $(PROTOS)"

$(GEN): $(PROTOS) | $(STAMP)
	$(MAKE) protos

system-deps:
	@bash scripts/ensure-system-packages.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy cannot follow the editable install's import hook, so it reads a symlinked view of the
# installed layout (clawdbot/{services,gateway,shared,v1}).
typecheck: setup
	@rm -rf build/typecheck && mkdir -p build/typecheck/clawdbot
	@cp clawdbot/__init__.py build/typecheck/clawdbot/__init__.py
	@for d in services gateway shared examples; do ln -s ../../../$$d build/typecheck/clawdbot/$$d; done
	@for d in v1 demo; do ln -s ../../../clawdbot/$$d build/typecheck/clawdbot/$$d; done
	cd build/typecheck && ../../$(BIN)/mypy --config-file ../../pyproject.toml -p clawdbot

pytest: setup
	$(BIN)/pytest -q -p no:cacheprovider

clean:
	rm -rf build dist *.egg-info clawdbot/v1 .mypy_cache .ruff_cache .pytest_cache
