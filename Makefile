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

EXPO := clients/expo
EXPO_STAMP := $(EXPO)/node_modules/.installed

$(EXPO_STAMP): $(EXPO)/package.json $(EXPO)/package-lock.json
	cd $(EXPO) && npm ci --no-audit --no-fund --loglevel=error
	touch $(EXPO_STAMP)

# Two pytest workers, one test file each at a time (a module's fixtures stay in one worker).
# Each worker starts its own test database server. TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2

test: $(STAMP) $(EXPO_STAMP)  ## the whole suite, as CI runs it
	$(BIN)/ruff check .
	$(BIN)/mypy
	cd $(EXPO) && npm run --silent typecheck
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile
	@if command -v promtool >/dev/null 2>&1; then \
		promtool check rules deploy/prometheus/alerts.yml && promtool test rules deploy/prometheus/alerts_test.yml; \
	else echo "promtool not found: skipped deploy/prometheus/alerts_test.yml (get it with: apt-get install prometheus)"; fi

sample-event: $(STAMP)  ## sign and post a user.created for Ada, the local Clerk's first user, to `make run`
	. .data/dev.env && $(BIN)/flask --app wsgi send-test-event user.created --url "$$WEBHOOK_URL"

bench: $(STAMP)  ## the service against the guide's few lines, side by side (ARGS="--quick" for a small run)
	$(BIN)/python -m bench $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .data .pytest_cache .hypothesis .ruff_cache $(EXPO)/node_modules $(EXPO)/dist-test
