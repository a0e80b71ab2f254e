# Developer tasks. `make build` compiles the kernels in place (VALARFAST_DEBUG=1 make build: debug build).
PYTHON ?= python3

.PHONY: build build-isolated test lint bench bench-asv clean-ext

build:  ## editable install, compiles valarfast._kernels in this environment (fetches Cython if missing)
	$(PYTHON) -m pip install -q 'setuptools>=64' wheel 'Cython>=3.1'
	$(PYTHON) -m pip install --no-build-isolation -e .

build-isolated:  ## the way a fresh machine builds: pip fetches setuptools + Cython itself
	$(PYTHON) -m pip install -e .

test:  ## the whole suite (installs/starts what it needs), refusing a stale compiled module
	bash scripts/test.sh

lint:
	$(PYTHON) -m ruff check valarfast tests scripts benchmarks
	$(PYTHON) -m mypy

bench:  ## one-run comparisons (medians, throughput, ratios), each against its baselines
	VALARFAST_REQUIRE_COMPILED=1 $(PYTHON) benchmarks/compare_blobs.py
	VALARFAST_REQUIRE_COMPILED=1 $(PYTHON) benchmarks/compare_batch.py
	VALARFAST_REQUIRE_COMPILED=1 $(PYTHON) benchmarks/compare_cache.py
	VALARFAST_REQUIRE_COMPILED=1 $(PYTHON) benchmarks/compare_tunnels.py

bench-asv:  ## asv suites against the installed valarfast (records this machine first, no prompt)
	$(PYTHON) -m asv machine --yes --config benchmarks/asv.conf.json >/dev/null
	$(PYTHON) -m asv run --python=same --config benchmarks/asv.conf.json

clean-ext:  ## remove the compiled module and generated C
	rm -rf build src_ext/*.c src_ext/*.html valarfast/_kernels*.so valarfast/_build_info.py
