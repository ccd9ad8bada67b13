# Set-up-to-result commands. Both create or reuse .venv and install what they need.
# torch is installed before the package so that a CPU-only machine gets the CPU build
# (set TORCH_SPEC / TORCH_INDEX for a specific CUDA build, e.g.
#  TORCH_INDEX=https://download.pytorch.org/whl/cu124).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.brainxl-installed
QUICKSTART_DIR ?= data/quickstart
# DeepSpeed's JIT-built CPU ops go under the venv: a build killed in the shared
# ~/.cache/torch_extensions leaves a lock that stalls every later DeepSpeed start.
export TORCH_EXTENSIONS_DIR ?= $(abspath $(VENV))/torch_extensions

.PHONY: venv quickstart test test-unit test-slurm lint format clean-quickstart

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	DS_BUILD_OPS=0 $(PY) -m pip install -q --no-build-isolation -e '.[dev]'
	touch $(STAMP)

quickstart: venv
	$(PY) -m brainxl.launch quickstart --out $(QUICKSTART_DIR)

# Everything CI runs: lint, the default suite, then the SLURM tests on a local cluster.
test: lint test-unit test-slurm

test-unit: venv
	$(PY) -m pytest -q

test-slurm: venv
	PY=$(abspath $(PY)) bash slurm/run-tests.sh

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean-quickstart:
	rm -rf $(QUICKSTART_DIR)
