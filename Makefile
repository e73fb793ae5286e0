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

# The notebooks whose checked outputs come from trained networks (the three data chapters and "What the
# theory allows"): nbval re-checks them under another CPU
# capability (ATEN_CPU_CAPABILITY=default: plain C++ kernels, which every x86 CPU runs), so every test run
# shows that their printed numbers do not depend on the processor's vector instructions.
CAPABILITY_CHECKED := book/mnist.ipynb book/svhn.ipynb book/cifar10.ipynb book/theory_allows.ipynb
OTHER_NOTEBOOKS := $(filter-out $(CAPABILITY_CHECKED),$(wildcard book/*.ipynb))
ARTIFACT_DATASETS := mnist svhn cifar10

.PHONY: install book notebooks html test artifacts clean

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

# Two workers (the CI machine has 2 cores); each notebook and each test file stays on one worker.
test: install
	$(PY) -m pytest -n 2 --dist loadfile -p no:cacheprovider --nbval-lax tests $(OTHER_NOTEBOOKS)
	ATEN_CPU_CAPABILITY=default $(PY) -m pytest -n 2 --dist loadfile -p no:cacheprovider --nbval-lax $(CAPABILITY_CHECKED)

# Retrain the committed ci networks (book/artifacts/, with their manifests); then `make book` re-analyses them.
artifacts: install
	for d in $(ARTIFACT_DATASETS); do $(PY) -m advbound artifacts --dataset $$d --profile ci --out book/artifacts --quiet || exit 1; done

clean:
	rm -rf _build
