# `make test`: fresh .venv, install, run the test suite. `make demo [DATA=path/to/aclImdb[.tar.xz]]`: the quickstart on IMDb.
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

# without DATA: IMDb through fastai's untar_data(URLs.IMDB) (cached in ~/.fastai); offline, it says how to use a copy
demo: install
	$(BIN)/ulmfit-lab demo $(if $(DATA),--data $(DATA))

clean:
	rm -rf $(VENV) runs .pytest_cache
