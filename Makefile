# `make test`: fresh .venv, install, run the test suite. `make demo DATA=path/to/aclImdb[.tar.xz]`: the quickstart.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?=

.PHONY: install test demo lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	# torch first, exactly pinned, so nothing below can pull a CUDA build
	$(BIN)/pip install -q -c constraints.txt torch torchvision
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check ulmfit_lab tests benchmarks

demo: install
	@if [ -z "$(DATA)" ]; then \
	  echo "make demo needs labelled data: run 'make demo DATA=path/to/aclImdb' (a folder, or aclImdb_v1.tar.gz / .tar.xz; here: ../shared/data/imdb/aclImdb.tar.xz)"; \
	  exit 2; \
	fi
	$(BIN)/ulmfit-lab run configs/quickstart.yaml data.path=$(DATA) run.dir=runs/demo

clean:
	rm -rf $(VENV) runs .pytest_cache
