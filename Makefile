# The two commands a newcomer needs:
#   make serve   set up a virtualenv and run the service on http://127.0.0.1:8080 (SQLite, no auth)
#   make test    set up everything the tests need and run the whole suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: serve test lint bench soak clean app

# The SMART timeline app (app/): npm packages from package-lock.json, bundled by esbuild into
# app/dist, which the service serves at /app/. Rebuilt when a source changes.
APP_SOURCES := app/build.mjs $(wildcard app/src/*.js app/public/*)

app/node_modules/.package-lock.json: app/package-lock.json app/package.json
	cd app && npm ci --no-audit --no-fund --loglevel=error
	touch $@

app/dist/timeline.js: app/node_modules/.package-lock.json $(APP_SOURCES)
	cd app && npm run --silent build

app: app/dist/timeline.js

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

serve: $(VENV)/.installed app
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
	rm -rf $(VENV) var .pytest_cache .ruff_cache app/dist
