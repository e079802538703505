# Two entry points for a fresh machine (see README):
#   make run    set up .venv (if missing), make Fashion-MNIST available, run the main job
#   make test   set up .venv (if missing) with the test extras, make the data available, run ruff, mypy and the tests
#   make docs   set up .venv (if missing) with the docs extra, build the documentation site into site/
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.advspatial-installed
TEST_STAMP := $(VENV)/.advspatial-test-installed
DOCS_STAMP := $(VENV)/.advspatial-docs-installed
PYTEST_ARGS ?= -n 2 --dist loadgroup

.PHONY: run test docs setup setup-test setup-docs data clean-venv

run: setup data
	$(VENV)/bin/advspatial run

test: setup-test data
	$(PY) -m ruff check src tests benchmarks scripts examples
	$(PY) -m mypy
	$(PY) -m pytest -q $(PYTEST_ARGS)

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	bash scripts/setup-venv.sh "$(PYTHON)" "$(VENV)"
	touch $@

setup-test: $(TEST_STAMP)

$(TEST_STAMP): $(STAMP)
	bash scripts/setup-venv.sh "$(PYTHON)" "$(VENV)" test
	touch $@

setup-docs: $(DOCS_STAMP)

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[docs]"
	touch $@

# strict: a broken link, anchor or docstring reference fails the build; offline (no web fonts, no social cards)
docs: setup-docs
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

data:
	bash scripts/ensure-data.sh

clean-venv:
	rm -rf $(VENV)
