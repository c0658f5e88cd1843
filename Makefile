# Everything a fresh machine needs: `make test` and `make demo` create .venv,
# install the pinned project, then run. Re-running skips the install unless
# pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Tests simulate 8 CPU devices for the sharding checks; pytest-xdist runs
# files on all cores (CI has 2). The slowest tests are listed at the end, so
# that CI's log shows where the suite's 20-minute allowance goes.
PYTEST_ARGS ?= -n auto --dist loadfile --durations=25

.PHONY: test demo lint setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m ldattn_jax.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
