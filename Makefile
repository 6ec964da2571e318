# Every target installs what it needs into .venv first, so a fresh machine needs only
# python3 (>= 3.11) and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test check schema

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(INSTALLED)
	$(BIN)/python -m scripts.demo

test: $(INSTALLED)
	$(BIN)/pytest

check: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/mypy

# supabase/schema.sql, every object as it stands after all migrations (a test fails while it is stale).
schema: $(INSTALLED)
	$(BIN)/python -m scripts.schema
