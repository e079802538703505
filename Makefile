# Two entry points for a fresh machine (see README):
#   make run    set up .venv (if missing), make Fashion-MNIST available, run the main job
#   make test   set up .venv (if missing) with the test extras, make the data available, run the tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.advspatial-installed
TEST_STAMP := $(VENV)/.advspatial-test-installed
PYTEST_ARGS ?= -n 2 --dist loadgroup

.PHONY: run test setup setup-test data clean-venv

run: setup data
	$(VENV)/bin/advspatial run

test: setup-test data
	$(PY) -m pytest -q $(PYTEST_ARGS)

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	bash scripts/setup-venv.sh "$(PYTHON)" "$(VENV)"
	touch $@

setup-test: $(TEST_STAMP)

$(TEST_STAMP): $(STAMP)
	bash scripts/setup-venv.sh "$(PYTHON)" "$(VENV)" test
	touch $@

data:
	bash scripts/ensure-data.sh

clean-venv:
	rm -rf $(VENV)
