# Every target builds .venv on first use; nothing needs activating.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BOARD  ?= ulx3s
DESIGN ?= soc

.PHONY: all demo test sim bitstream bench clean distclean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

CHECKPOINT ?= models/checkpoints/mmfree-tiny.safetensors
PROMPT     ?= ROMEO:

DEVICE     ?= sim
N          ?= 120

# The shipped model on the accelerator gateware: the cycle-accurate board model by default
# (DEVICE=/dev/ttyUSB0 for a ULX3S running `python build.py --board ulx3s`).
demo: $(STAMP)
	$(PY) -m sw.run --device $(DEVICE) --checkpoint $(CHECKPOINT) --prompt "$(PROMPT)" -n $(N) \
		--temperature 0.8 --top-k 40 --seed 1 --verify

test: $(STAMP)
	$(PY) -m pytest -q tests

sim: $(STAMP)
	$(PY) -m pytest -q -m sim tests

bitstream: $(STAMP)
	$(PY) build.py --board $(BOARD) --design $(DESIGN)

clean:
	rm -rf build sim_build .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
