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
# the longest chapter (theory_allows, about 3 minutes) first, then the data chapters, so that two workers finish at
# about the same time (in `make book` and in `make test`)
SLOW_NOTEBOOKS := notebooks/theory_allows.md notebooks/fashion_mnist.md notebooks/mnist.md notebooks/svhn.md \
	notebooks/cifar10.md
# the claims page reads what every other chapter saved: it runs last, on its own
NOTEBOOKS := $(SLOW_NOTEBOOKS) $(filter-out $(SLOW_NOTEBOOKS) notebooks/claims.md,$(wildcard notebooks/*.md))
export PYTHONHASHSEED := 0
# one OpenMP thread per process: `make book` and `make test` run two processes on two cores, and oversubscribed
# OpenMP threads spin
export OMP_NUM_THREADS ?= 1
export MPLBACKEND := Agg
# glibc hands every allocation above its mmap threshold straight back to the kernel when freed, so the float64
# activations of each batch (tens of MB) were mapped and zeroed anew: a third of a data chapter's time was page
# faults.  Keeping freed memory in the heap (a setting of the allocator only: no number changes) removes it.
export MALLOC_MMAP_THRESHOLD_ ?= 33554432
export MALLOC_TRIM_THRESHOLD_ ?= 4294967296
export MALLOC_TOP_PAD_ ?= 536870912
# The official MNIST test files, when they sit beside the checkout (CI: ../shared); the library never searches
# for them, and without them the MNIST chapter loads MNIST through torchvision (a download).
SHARED_MNIST := $(abspath ../shared/data/mnist)
export ADVBOUND_MNIST_DIR ?= $(if $(wildcard $(SHARED_MNIST)/t10k-images-idx3-ubyte.gz),$(SHARED_MNIST),)
# The official Fashion-MNIST files (60,000 / 10,000), likewise; without them the chapter downloads them through
# torchvision.
SHARED_FASHION_MNIST := $(abspath ../shared/data/fashion-mnist)
export ADVBOUND_FASHION_MNIST_DIR ?= $(if $(wildcard $(SHARED_FASHION_MNIST)/train-images-idx3-ubyte.gz),$(SHARED_FASHION_MNIST),)

# Every committed page is re-executed once by `make test`, in a kernel that runs torch on other CPU kernels than
# this machine's: plain C++ instead of vector instructions (ATEN_CPU_CAPABILITY=default, which every x86 CPU runs)
# and oneDNN limited to SSE4.1; its checked outputs must print exactly as committed.  So every test run shows that
# the printed numbers do not depend on the processor.  The kernel is installed into the virtual environment by
# `make install`.  nbval re-executes the pages, except those that tests/test_colab.py re-executes anyway (on
# simulated Colab, in the same portable environment) and compares there: the theory chapters that read nothing
# from the checkout and the MNIST chapter's Colab rerun (NBVAL_BY_COLAB; tests/test_colab.py checks that each
# page is compared exactly once).
PORTABLE_KERNEL := advbound-portable-cpu
NBVAL_BY_COLAB := book/isoperimetry.ipynb book/circle.ipynb book/tightness.ipynb book/mnist.ipynb
# longest first (the Colab simulation, the theory chapter with trained networks, the data chapters), then the
# many short test files, so that the two workers finish together
TEST_FIRST := tests/test_colab.py book/theory_allows.ipynb book/fashion_mnist.ipynb book/svhn.ipynb book/cifar10.ipynb
TEST_ORDER := $(TEST_FIRST) $(filter-out $(TEST_FIRST) $(NBVAL_BY_COLAB),$(wildcard book/*.ipynb)) tests
ARTIFACT_DATASETS := mnist fashion_mnist svhn cifar10

.PHONY: install book notebooks html test print-test-order artifacts witnesses mutation clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test,book]'
	$(PY) -m ipykernel install --sys-prefix --name $(PORTABLE_KERNEL) --display-name "Python 3 (portable CPU kernels)" \
		--env ATEN_CPU_CAPABILITY default --env ONEDNN_MAX_CPU_ISA SSE41 > /dev/null
	touch $@

install: $(VENV)/.installed

# Execute the jupytext sources into book/*.ipynb (the committed, published outputs).
notebooks: install
	$(PY) scripts/execute_notebooks.py --jobs 2 --profile $(PROFILE) $(NOTEBOOKS)
	$(PY) scripts/execute_notebooks.py --profile $(PROFILE) notebooks/claims.md

html: install
	$(VENV)/bin/jupyter-book build . -W -n --keep-going

book: notebooks html

# Two workers (the CI machine has 2 cores); each notebook and each test file stays on one worker; the unit tests
# run natively, the notebooks in the portable kernel.  What the re-executed chapters write (figures, results)
# goes to a scratch output folder ($ADVBOUND_OUTPUT), so a test run leaves the committed book/ untouched.
# (From a fresh clone on 2 cores the suite took 7 min 31 s, most of it the data chapters, theory_allows and the
# Colab simulation.)
test: install
	out=$$(mktemp -d) && trap 'rm -rf "$$out"' EXIT && ADVBOUND_OUTPUT=$$out \
	$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder -p no:cacheprovider --nbval-lax \
		--nbval-kernel-name $(PORTABLE_KERNEL) $(TEST_ORDER)

print-test-order:
	@echo $(TEST_ORDER)

# Retrain the committed ci networks and search their witnesses anew (book/artifacts/, with their manifests);
# then `make book` re-analyses them.  `make witnesses` re-runs only the searches on the committed networks, and
# `make witnesses SEARCHES=r_unc` only the named ones (keeping the committed points of the others).
SEARCHES ?=
artifacts witnesses: install
	for d in $(ARTIFACT_DATASETS); do $(PY) -m advbound artifacts --dataset $$d --profile ci --out book/artifacts \
		$(if $(filter witnesses,$@),--keep-networks $(foreach s,$(SEARCHES),--searches $(s))) --quiet || exit 1; done
	$(PY) scripts/index_artifacts.py

# Mutation testing (mutmut 3) of the bounds' formulas, the Monte Carlo intervals and the DeepFool loop with its
# refinement, each module against its own test file; not part of `make test` (about 10 minutes on 2 cores).  Each
# module runs in a scratch copy with the src/ layout mutmut expects, on one worker; nothing is written to the
# checkout.  It prints, per module, the counts, the score with and without message-only mutants and every mutant
# not killed (scripts/mutation_summary.py); tests/MUTATION.md records the last run and why each survivor is harmless.
# One module: make mutation MUTATION=bounds=tests/test_bounds.py
MUTATION ?= bounds=tests/test_bounds.py montecarlo=tests/test_montecarlo.py \
	attacks/deepfool=tests/test_attacks.py attacks/refine=tests/test_attacks.py
mutation: install
	$(PY) -m pip install -q 'mutmut>=3.8,<4'
	set -e; for pair in $(MUTATION); do module=$${pair%%=*}; tests=$${pair#*=}; \
		work=$$(mktemp -d); mkdir -p $$work/src; cp -r lib/advbound $$work/src/; cp -r tests pyproject.toml $$work/; \
		printf '[mutmut]\nsource_paths = src\nonly_mutate = src/advbound/%s.py\npytest_add_cli_args_test_selection = %s\n' \
			"$$module" "$$tests" > $$work/setup.cfg; \
		echo "== mutmut: $$module.py against $$tests"; \
		(cd $$work && nice -n 10 $(abspath $(VENV))/bin/mutmut run --max-children 1 > mutmut.log 2>&1 \
			|| { tail -40 mutmut.log; exit 1; }; \
			$(abspath $(PY)) $(CURDIR)/scripts/mutation_summary.py $$module); \
		rm -rf $$work; \
	done

clean:
	rm -rf _build
