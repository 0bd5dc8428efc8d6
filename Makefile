# Every target builds .venv on first use; nothing needs activating.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BOARD  ?= ulx3s

.PHONY: all demo test sim bitstream bench clean distclean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

CHECKPOINT ?= models/checkpoints/mmfree-tiny.safetensors
PROMPT     ?= ROMEO:

demo: $(STAMP)
	$(PY) -m sw.demo --checkpoint $(CHECKPOINT) --prompt "$(PROMPT)" -n 200 --temperature 0.8 --top-k 40 --seed 1

test: $(STAMP)
	$(PY) -m pytest -q tests

sim: $(STAMP)
	$(PY) -m pytest -q -m sim tests

bitstream: $(STAMP)
	$(PY) build.py --board $(BOARD)

clean:
	rm -rf build sim_build .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
