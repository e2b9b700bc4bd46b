# The two commands: `make demo` and `make test`. Both create .venv and install galmoco into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench install browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when setup.cfg or pyproject.toml changed since the last install.
$(STAMP): setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check galmoco tests benchmarks notebooks

# the explorer's test drives a real headless Chromium (system package; apt-get, as root)
browser:
	scripts/install_browser.sh

test: lint browser
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	$(BIN)/galmoco demo --out runs/demo

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs *.egg-info .pytest_cache .ruff_cache
