# Everything sets itself up: `make demo` and `make test` work on a fresh clone, and are cheap to repeat.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
DEPS_STAMP := $(VENV)/.deps-installed
INSTALL_STAMP := $(VENV)/.gnnaccel-installed
CSRC := $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' 2>/dev/null)
export MAX_JOBS ?= 2

.PHONY: all build demo test test-fast bench report cuda-check gpu-check clean

all: build

$(DEPS_STAMP): requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# Editable install once, of the Python side (the extension is built in place by `build`, incrementally with
# ninja, so pip does not compile it a second time in a temporary directory).
$(INSTALL_STAMP): $(DEPS_STAMP) setup.py pyproject.toml
	GNNACCEL_SKIP_EXT=1 $(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

build: $(INSTALL_STAMP) $(CSRC)
	$(PY) setup.py -q build_ext --inplace 2>&1 | grep -v -E "^(running|copying)" || true
	$(PY) -c "import gnnaccel, sys; sys.exit(0 if gnnaccel.EXTENSION_LOADED else 1)"

demo: build
	$(PY) -m gnnaccel demo

test: build
	$(PY) -m pytest -q -m "not gpu" --benchmark-disable tests

# Every pytest-benchmark suite -> benchmarks/out/bench.json, then its ratio tables (benchmarks/report.py).
# `make bench BENCH_ARGS=--quick`: small graphs only; BENCH_ARGS also takes e.g. `-k aggregate`.
bench: build
	mkdir -p benchmarks/out
	$(PY) -m pytest -q benchmarks --benchmark-only --benchmark-columns=min,median,mean,rounds \
	  --benchmark-json=benchmarks/out/bench.json $(BENCH_ARGS)
	$(PY) benchmarks/report.py benchmarks/out/bench.json

# Compile check of the CUDA sources against a CUDA build of torch (no GPU needed). Separate venv.
CUDA_VENV ?= .venv-cuda
CUDA_PY := $(CUDA_VENV)/bin/python
cuda-check:
	test -x $(CUDA_PY) || $(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_PY) -c "import torch; assert torch.version.cuda" 2>/dev/null || $(CUDA_PY) -m pip install -q torch==2.14.1 numpy scipy tqdm ninja "setuptools>=64" wheel
	rm -rf build/cuda-check && mkdir -p build/cuda-check
	cd build/cuda-check && cp -r ../../setup.py ../../pyproject.toml ../../csrc ../../gnnaccel ../../kernels . && \
	  find gnnaccel -name '*.so' -delete && \
	  CUDA_HOME=/usr/local/cuda FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$${TORCH_CUDA_ARCH_LIST:-9.0}" \
	  GNNACCEL_CUDA_INCLUDE="$$(../../$(CUDA_PY) -c 'import os, nvidia; print(os.path.join(nvidia.__path__[0], "cu13", "include"))')" \
	  ../../$(CUDA_PY) setup.py -q build_ext --inplace 2>&1 | grep -v -E "^(running|copying)"; \
	  ../../$(CUDA_PY) -c "import gnnaccel, sys; from gnnaccel._library import cuda_kernel_report; ok = cuda_kernel_report(); sys.exit(0 if ok else 1)"

# On a GPU machine with no network: build with CUDA in place, run every gpu-marked test, a short benchmark;
# writes benchmarks/out/gpu_check.{json,md}. Uses the system python3 as is (no venv, installs nothing); the
# logic is in the script, which also runs where make is missing. Exits 2 with a message when there is no GPU.
gpu-check:
	bash scripts/gpu_check.sh

clean:
	rm -rf build gnnaccel/*.so *.egg-info
