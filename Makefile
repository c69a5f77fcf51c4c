PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint lock audit bench sample-event clean

# The venv holds exactly the dev lock: every package pinned and its hash checked, nothing
# resolved on the day. Editing a lock or an .in file rebuilds it from scratch (an .in edit
# without `make lock` then fails tests/tooling/test_locks.py, which names what to relock).
$(STAMP): requirements.in requirements-dev.in requirements.txt requirements-dev.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements-dev.txt
	$(BIN)/pip check
	touch $(STAMP)

# Re-resolve both locks from the .in files (see README, "Dependencies"). ARGS passes
# pip-compile options: ARGS="--upgrade-package svix" for one package, ARGS=--upgrade for all.
LOCK := CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe \
	--strip-extras --no-emit-find-links --no-emit-index-url --no-emit-trusted-host $(ARGS)

lock: $(STAMP)  ## re-resolve requirements.txt and requirements-dev.txt from the .in files
	$(LOCK) -o requirements.txt requirements.in
	$(LOCK) -o requirements-dev.txt requirements-dev.in

run: $(STAMP)  ## serve on http://127.0.0.1:8000 (embedded dev database unless MONGODB_URI is set)
	$(BIN)/python scripts/dev_server.py

EXPO := clients/expo
EXPO_STAMP := $(EXPO)/node_modules/.installed

$(EXPO_STAMP): $(EXPO)/package.json $(EXPO)/package-lock.json
	cd $(EXPO) && npm ci --no-audit --no-fund --loglevel=error
	touch $(EXPO_STAMP)

audit: $(STAMP)  ## known vulnerabilities in both Python locks and the Expo client's lock (npm audit, pip-audit)
	$(BIN)/python scripts/audit.py

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

# The inner loop: the suite without the tests marked slow (the larger gunicorn runs, the
# dev server, the storms and faults, the bench), on the same workers; no ruff, mypy, npm
# or promtool. `make test` stays what CI runs.
test-fast: $(STAMP)  ## the suite without the slow tests, for the inner loop
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow"

sample-event: $(STAMP)  ## sign and post a user.created for Ada, the local Clerk's first user, to `make run`
	. .data/dev.env && $(BIN)/flask --app wsgi send-test-event user.created --url "$$WEBHOOK_URL"

bench: $(STAMP)  ## the service against the guide's few lines, side by side (ARGS="--quick" for a small run)
	$(BIN)/python -m bench $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .data .pytest_cache .hypothesis .ruff_cache $(EXPO)/node_modules $(EXPO)/dist-test
