# vireid: the two set-up commands start from nothing (README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test lint demo bench yardstick yardstick-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,faiss,onnx]"
	touch $@

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks

test: lint
	$(BIN)/python -m pytest

demo: $(VENV)/.installed
	$(BIN)/vireid demo --workdir runs/demo

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/eval_speed.py
	$(BIN)/python benchmarks/data_speed.py
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/video_step_speed.py

# The learning yardstick (docs/results.md): about 80 minutes on a 2-core machine (quick: about 7); not in `make test`.
yardstick: $(VENV)/.installed
	$(BIN)/python benchmarks/yardstick.py --markdown runs/yardstick/results.md

yardstick-quick: $(VENV)/.installed
	$(BIN)/python benchmarks/yardstick.py --quick --markdown runs/yardstick/results-quick.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
