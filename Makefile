PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench sample-event clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)  ## serve on http://127.0.0.1:8000 (embedded dev database unless MONGODB_URI is set)
	$(BIN)/python scripts/dev_server.py

test: $(STAMP)  ## the whole suite, as CI runs it
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

sample-event: $(STAMP)  ## sign and post a user.created for Ada, the local Clerk's first user, to `make run`
	. .data/dev.env && $(BIN)/flask --app wsgi send-test-event user.created --url "$$WEBHOOK_URL"

bench: $(STAMP)  ## the service against the guide's few lines, side by side (ARGS="--quick" for a small run)
	$(BIN)/python -m bench $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .data .pytest_cache .hypothesis .ruff_cache
