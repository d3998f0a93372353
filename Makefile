# The CPU wheel keeps installs small; point TORCH_SPEC at another build (or leave it empty)
# to use the torch you already have.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install train test bench bench-gpu lint typecheck clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	@if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/pip install -q "$(TORCH_SPEC)"; fi
	$(BIN)/pip install -q -e ".[test]"

# The README's train command: the built-in default (an MLP on scikit-learn's digits).
train: install
	$(BIN)/bz-train

# The README's test command.
test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/run_all.py

# Throughput against an autocast(bf16) + torch.compile hand loop, and syncs per step, on a
# GPU; says so and exits 0 where there is no CUDA device.
bench-gpu: install
	$(BIN)/python benchmarks/bench_gpu.py

lint: install
	$(BIN)/ruff check bz_lightning hydra_plugins tests examples benchmarks

typecheck: install
	$(BIN)/python -m mypy

clean:
	rm -rf build dist *.egg-info .pytest_cache outputs multirun runs lightning_logs
