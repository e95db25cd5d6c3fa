# Two entry points for people: `make demo` and `make test`. Both create .venv on first use.
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-install
# The CPU wheel lies on this kind of machine's disk; an unpinned `torch` would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
# One test process per core, each file on one process (its module fixtures load a model once), one
# torch thread each: 645 tests took 8:49 against 21:50 in one process with two threads (AMD EPYC, 2 cores).
PYTEST_WORKERS ?= 2

.PHONY: install test demo bench lint clean

$(STAMP): pyproject.toml setup.py Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	@# Debian's Chromium + ChromeDriver for the answers.html browser test (30 s on a fresh machine); where
	@# apt cannot run (no root), the test says so and is skipped
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; } || \
	  echo "make: Chromium could not be installed; the viewer's browser test will be skipped"
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check .

test: install lint
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/alignez-eval demo

bench: install
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
