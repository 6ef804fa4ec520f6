# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create the virtual environment .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: setup data demo test test-slow lint bench bench-check timm-coverage clean-venv

setup: $(STAMP) data

# The venv is rebuilt when the pinned versions or the package metadata change.
$(STAMP): requirements/pinned.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/pinned.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Fashion-MNIST comes from Debian's package; install it when we can, explain otherwise.
data:
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ] || [ -f $(FMNIST_DIR)/train-images-idx3-ubyte ]; then \
		echo "Fashion-MNIST found in $(FMNIST_DIR)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Fashion-MNIST (Debian package dataset-fashion-mnist)..."; \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || \
		echo "WARNING: could not install dataset-fashion-mnist; the demo needs it (see README)"; \
	else \
		echo "Fashion-MNIST is missing. Install it with:"; \
		echo "  sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist"; \
		echo "or pass --data fashion-mnist:DIR pointing at the four IDX files."; \
	fi

demo: setup
	$(BIN)/python -m torchslim demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python -m pip install --quiet torch-pruning==1.6.1
	$(BIN)/python benchmarks/run_all.py

bench-check: $(STAMP)
	$(BIN)/python benchmarks/results_md.py --check

# timm's zoo against Torch-Pruning, one process per model and tool; resumes from benchmarks/cache/.
timm-coverage: setup
	$(BIN)/python -m pip install --quiet torch-pruning==1.6.1
	HF_HUB_OFFLINE=1 nice -n 15 $(BIN)/python benchmarks/timm_coverage.py --timeout 300
	$(BIN)/python benchmarks/results_md.py

clean-venv:
	rm -rf $(VENV)
