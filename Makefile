# The two commands from the README: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint unit down clean FORCE

# Strict editable install: the venv sees `shredline.*` through a tree of links to the folders'
# files (the default mode's import hook hides them from mypy). Links are per file, so a new or
# removed module needs a re-install: the stamp depends on the list of package files.
PACKAGE_DIRS := streams processors analytics schemas keystore
PACKAGE_LIST := $(VENV)/.package-files

$(PACKAGE_LIST): FORCE
	@mkdir -p $(VENV)
	@find $(PACKAGE_DIRS) -name '*.py' -o -name '*.avsc' | LC_ALL=C sort > $@.new
	@cmp -s $@.new $@ && rm $@.new || mv $@.new $@

$(STAMP): pyproject.toml $(PACKAGE_LIST)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' --config-settings editable_mode=strict
	@touch $@

install: $(STAMP)

demo: install
	$(BIN)/shredline demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

unit: install
	$(BIN)/pytest tests/unit

down: install
	$(BIN)/shredline kafka down

clean: down
	rm -rf $(VENV) .shredline .pytest_cache .mypy_cache .ruff_cache
