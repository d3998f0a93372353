# The CPU wheel keeps installs small; point TORCH_SPEC at another build (or leave it empty)
# to use the torch you already have.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install train test test-lowest test-slurm bench bench-gpu lint typecheck clean

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

# The SLURM tests against a real single-node cluster that tests/slurm/slurm_cluster.py
# starts on this machine (as root; it apt-get installs slurm-wlm and munge if missing) and
# stops afterwards, whatever happens. The tests get 13 minutes, all of it 15 at most.
test-slurm: install
	$(BIN)/python tests/slurm/slurm_cluster.py run --timeout 780 -- $(BIN)/python -m pytest -q -m slurm --durations=0 tests/slurm

# The suite on the lowest versions pyproject.toml allows (torch: TORCH_SPEC's), in a venv of
# its own: the lower bounds are claims, this checks them.
LOWEST_VENV ?= .venv-lowest
test-lowest:
	rm -rf $(LOWEST_VENV)
	$(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/pip install -q --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ]; then $(LOWEST_VENV)/bin/pip install -q "$(TORCH_SPEC)"; fi
	$(LOWEST_VENV)/bin/python .ci/lowest_constraints.py > $(LOWEST_VENV)/constraints.txt
	$(LOWEST_VENV)/bin/pip install -q -c $(LOWEST_VENV)/constraints.txt -e ".[test]"
	$(LOWEST_VENV)/bin/pip list --format=freeze | grep -i -E "^($$(cut -d= -f1 $(LOWEST_VENV)/constraints.txt | paste -sd'|'))=="
	$(LOWEST_VENV)/bin/python -m pytest -q

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
