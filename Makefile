# Quick start:  make bench  (the headline benchmark table)   make test  (the test suite)
# Each creates .venv on first use, installs the torch 2.14.1 / torchvision 0.29.1 pair and
# this package with its C++ extension, then runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ost-kernels-installed
BUILD_INPUTS := setup.py pyproject.toml $(shell find csrc -type f 2>/dev/null)
# torch guesses CUDA_HOME from the nvcc on PATH, which may be a wrapper; point it at the toolkit.
export CUDA_HOME ?= $(if $(wildcard /usr/local/cuda/bin/nvcc),/usr/local/cuda,)
PYTEST_ARGS ?=
BENCH_ARGS ?=
# The headline: od_solve at the default stop, forward and forward + backward, A = 51 (HMDB) and
# 400 (K400), T = 8 and 32, each backend against the paper's einops algorithm and the bare matmul
# (32 cases on a CPU; README.md gives its time). BENCH_ARGS come after, so they can widen it.
BENCH_HEADLINE := benchmarks/test_bench_od_solve.py --bench-classes 51,400 \
	-k "tol and not unrolled and not weights and not reg_m and not implicit"
# -v: a line per case as it finishes (progress); --benchmark-quiet: the project's summary table
# is the last thing printed, not pytest-benchmark's own.
BENCH_FLAGS := --benchmark-only -v --benchmark-quiet

.PHONY: install test test-heavy coverage bench bench-full clean gpu-wheels triton-aot cuda-resources

install: $(STAMP)

$(STAMP): $(BUILD_INPUTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet --disable-pip-version-check "setuptools>=77" wheel ninja
	# --no-build-isolation: the extension must build against the torch installed above.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-build-isolation -e ".[dev,train]"
	# The other end of the supported Triton range, for compiling the kernels under it too
	# (tests/kernels/test_triton_compile.py); not on the import path.
	test -d $(VENV)/triton-3.6/triton || $(PY) -m pip install --quiet --disable-pip-version-check --no-deps \
	  --target $(VENV)/triton-3.6 triton==3.6.0
	$(PY) -c "import ost_kernels, ost_kernels.backends as b; print('ost_kernels backends on cpu:', b.available_backends('cpu'))"
	touch $(STAMP)

# The daily suite (about 7 minutes on 2 cores); test-heavy: the full compile gates, the GPU check's
# dry run and the longest interpreter cases (about 5 minutes); CI (.ci/run) runs both.
test: $(STAMP)
	$(PY) -m pytest tests -m "not heavy" $(PYTEST_ARGS)

test-heavy: $(STAMP)
	$(PY) -m pytest tests -m heavy $(PYTEST_ARGS)

# Line coverage of ost_kernels/ and ost/ by the daily suite (pytest-cov), as the README states it.
coverage: $(STAMP)
	$(PY) -m pytest tests -m "not heavy" --cov=ost_kernels --cov=ost --cov-report=term $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m pytest $(BENCH_HEADLINE) $(BENCH_FLAGS) $(BENCH_ARGS)

# Every benchmark: 859 cases (328 of them skip without a GPU); README.md says how long it takes.
bench-full: $(STAMP)
	$(PY) -m pytest benchmarks --benchmark-only -v $(BENCH_ARGS)

# Compile every Triton kernel variant for sm_80 and sm_90 (no GPU needed), write the resource
# table (benchmarks/out/triton_resources.md) and the pruning data (ost_kernels/triton/resources.json).
triton-aot: $(STAMP)
	$(PY) -m ost_kernels.triton.aot --all --write-table $(AOT_ARGS)

# ptxas's registers / spills / shared memory of every CUDA kernel for sm_80 and sm_90 (no GPU
# needed), written to benchmarks/out/cuda_resources.md; fails on a spill.
cuda-resources: $(STAMP)
	$(PY) -m ost_kernels.cuda_resources --arch 80 --arch 90 --write-table

clean:
	rm -rf build *.egg-info ost_kernels/_C*.so benchmarks/out .pytest_cache .benchmarks

# Wheels the GPU machine's image lacks, for benchmarks/gpu_check.sh (carry .whl with the run).
gpu-wheels:
	grep -qx '/.whl/' .git/info/exclude || echo '/.whl/' >> .git/info/exclude
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux2014_x86_64 --platform any -d .whl open_clip_torch==3.3.0 ftfy wcwidth
