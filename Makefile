# Two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install test demo clean-demo

# requirements.lock pins versions that import together (torch and torchvision
# from PyPI as one pair; a CPU-only torch wheel with PyPI's torchvision fails).
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	$(PY) -c "import open_clip, torchvision, faiss, webdataset; print('install ok: open_clip', open_clip.__version__, 'torch', __import__('torch').__version__)"
	@touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q -x --durations=10

demo: install
	bash benchmarks/../scripts_demo.sh
