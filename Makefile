# Two commands do all the set-up on a fresh machine (see README.md):
#   make book   -- install, execute every notebook (papermill, ci profile), build the website (_build/html)
#   make test   -- install, run the unit tests and nbval over the committed executed notebooks in book/
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The exact torch pair this project is tested with (the library itself accepts torch>=2.1).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PROFILE ?= ci
NOTEBOOKS := $(wildcard notebooks/*.md)
export PYTHONHASHSEED := 0
export OMP_NUM_THREADS ?= 2
export MPLBACKEND := Agg
# The official MNIST test files, when they sit beside the checkout (CI: ../shared); the library never searches
# for them, and without them the MNIST chapter loads MNIST through torchvision (a download).
SHARED_MNIST := $(abspath ../shared/data/mnist)
export ADVBOUND_MNIST_DIR ?= $(if $(wildcard $(SHARED_MNIST)/t10k-images-idx3-ubyte.gz),$(SHARED_MNIST),)

.PHONY: install book notebooks html test clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test,book]'
	touch $@

install: $(VENV)/.installed

# Execute the jupytext sources into book/*.ipynb (the committed, published outputs).
notebooks: install
	$(PY) scripts/execute_notebooks.py --profile $(PROFILE) $(NOTEBOOKS)

html: install
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

book: notebooks html

test: install
	$(PY) -m pytest tests book --nbval-lax -p no:cacheprovider

clean:
	rm -rf _build
