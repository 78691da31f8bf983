# The two commands a newcomer needs:
#   make serve   set up a virtualenv and run the service on http://127.0.0.1:8080 (SQLite, no auth)
#   make test    set up everything the tests need and run the whole suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: serve test lint bench soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

serve: $(VENV)/.installed
	CDS_AUTH=$${CDS_AUTH:-off} $(BIN)/python -m cds_service serve --host 127.0.0.1 --port $${PORT:-8080}

test: $(VENV)/.installed
	bash scripts/setup-test-env.sh
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: $(VENV)/.installed
	$(BIN)/python bench/run.py

soak: $(VENV)/.installed
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
