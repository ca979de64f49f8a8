# Bespoke's everyday commands. `make run` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint check demo serve install browser clean

# Create the virtualenv, migrate, load the demo once, and serve web, worker and beat
# (on 127.0.0.1:8000; `make run PORT=8001` for another port; `make run DEMO=no` makes
# only the demo sign-in and write key, with no demo data).
PORT ?= 8000
DEMO ?= yes
run: export BESPOKE_PORT = $(PORT)
run: install
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py demo $(if $(filter no,$(DEMO)),--empty,--once)
	$(BIN)/python manage.py collectstatic --no-input -v 0
	$(BIN)/python manage.py welcome
	$(BIN)/honcho start -f Procfile

# Run the whole test suite against PostgreSQL and Redis on 127.0.0.1.
test: install browser
	$(BIN)/pytest

# Lint, format check and the missing-migrations check that CI also runs.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run

# Everything CI runs: lint, then the tests.
check: lint test

# Run the demo story again and print what happened (the data is kept).
demo: install
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py demo

# Install the pinned dependencies into .venv (again only when a requirements file changed).
install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

# Install Debian's Chromium for the browser tests when it is missing and we may.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	@command -v chromium >/dev/null 2>&1 || echo "chromium is not installed: browser tests will be skipped"

# Remove the virtualenv and the embedded defaults' data (SQLite file, queue, outbox).
clean:
	rm -rf $(VENV) var
