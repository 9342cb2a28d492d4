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

DEMO := runs/demo
CLI := $(VENV)/bin/clipline

demo: install
	@command -v npm >/dev/null || { echo "make demo: npm is needed for the emoji corpus (apt-get install npm)"; exit 2; }
	$(CLI) data build emoji --split train --out $(DEMO)/data/emoji-train
	$(CLI) data build emoji --split val --out $(DEMO)/data/emoji-val
	$(CLI) data inspect $(DEMO)/data/emoji-train --grid $(DEMO)/data/emoji-train-grid.png
	@echo "demo: shards in $(DEMO)/data, contact sheet $(DEMO)/data/emoji-train-grid.png"
