# One place for the commands that the README, CI and developers run.
# `make quickstart` sets everything up from scratch and runs the main job; `make test` runs all tests.

PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)

.PHONY: quickstart setup wheel install llamacpp chromium tmux peft-venv lint fmt test test-rust test-python fuzz bench ci clean

quickstart: install
	$(BIN)/ftx quickstart --out runs/quickstart

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

setup: $(BIN)/python
	$(BIN)/python -m pip install -q "maturin>=1.7,<2"

# The tests run against the release wheel itself, installed like a user would, never an editable tree.
# Stamp files keep `make lint` followed by `make test` from building and installing twice.
SOURCES := Cargo.toml Cargo.lock pyproject.toml $(shell find rust python -type f -not -path '*/__pycache__/*')

wheel: dist/.built
dist/.built: $(SOURCES) | $(BIN)/python
	$(MAKE) setup
	rm -rf dist
	$(BIN)/maturin build --release -o dist
	touch $@

install: $(VENV)/.installed
$(VENV)/.installed: dist/.built
	$(BIN)/python -m pip install -q --force-reinstall --no-deps dist/ftx-*.whl
	$(BIN)/python -m pip install -q "$$(ls dist/ftx-*.whl)[train,dev]"
	touch $@

# llama-cpp-python (the `llamacpp` extra) for the K-quant tests against llama.cpp itself: built
# from its sdist, only the library, for any x86-64 CPU (pip caches the wheel), in about 40
# minutes on 2 busy cores the first time; those tests skip without it.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
	-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
llamacpp: install
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install -q "$$(ls dist/ftx-*.whl)[llamacpp]"

# Debian's chromium, for the run report's browser test and `ftx report --png`; installed only
# when missing (as root, or through sudo).
chromium:
	@command -v chromium >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

# Debian's tmux, for the test that drives `ftx chat` in a real terminal; installed only when missing.
tmux:
	@command -v tmux >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q tmux; }

# PyTorch, peft and transformers (ftx's `peft` extra) in an environment of their own, for the
# test that loads a `fuse --format peft` adapter with the real peft library: about 3 GB of
# wheels (torch's CUDA libraries come with it from PyPI), 5 GB installed.
PEFT_VENV ?= .venv-peft
peft-venv: $(PEFT_VENV)/.installed
$(PEFT_VENV)/.installed: pyproject.toml | dist/.built
	$(PYTHON) -m venv $(PEFT_VENV)
	$(PEFT_VENV)/bin/python -m pip install -q "$$(ls dist/ftx-*.whl)[peft]"
	touch $@

lint: install
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(BIN)/ruff check python tests benches tools
	$(BIN)/ruff format --check python tests benches tools
	$(BIN)/mypy --strict python/ftx
	$(BIN)/python -m mypy.stubtest ftx._core

fmt:
	cargo fmt --all
	$(BIN)/ruff format python tests benches tools
	$(BIN)/ruff check --fix python tests benches tools

test-rust:
	cargo test --workspace

test-python: install
	cd tests && $(BIN)/python -m pytest -q .

test: test-rust test-python

# The property harness at a longer budget than CI's: 20,000 examples of each property of
# tests/preparation/test_fuzz.py (CI runs 40) and 1,000 of each artifact property of test_prepare_safety.py
# (3 min 18 s on 2 cores).
fuzz: install
	cd tests && FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-20000} $(BIN)/python -m pytest -q preparation/test_fuzz.py preparation/test_prepare_safety.py -k "any_ or random_"

bench: install
	$(BIN)/python -m pip install -q "$$(ls dist/ftx-*.whl)[bench]"
	$(BIN)/python -m pytest benches -p no:cacheprovider -q -s

ci: lint test

clean:
	rm -rf $(VENV) $(PEFT_VENV) dist target runs
