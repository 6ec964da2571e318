# Every target installs what it needs into .venv (and tools/) first, so a fresh machine needs only
# python3 (>= 3.11), make, and Node.js's npm (for the Supabase CLI the tests drive).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# The real Supabase CLI (npm `supabase`, its Linux binary an optional dependency from npm), pinned by tools/package-lock.json.
SUPABASE_CLI := tools/node_modules/.installed
# Debian's PostgreSQL 15 (what hosted projects run), for `make test-pg15` and, with plpgsql_check, the
# `supabase db lint` test of `make test`.
PG15_BIN := /usr/lib/postgresql/15/bin
# Parallel test workers, each with its own throwaway PostgreSQL cluster: most tests wait on daemons, timers and
# Google's stand-in rather than on a core, so 4 on 2 cores was the fastest measured (n2 4m23s, n3 3m31s, n4 3m24s).
TEST_WORKERS ?= 4
# The tests that exercise the SQL, run again on PostgreSQL 15 by `make test-pg15`.
PG15_TESTS := tests/test_migrations.py tests/test_supabase_cli.py tests/test_vapi_tools.py tests/test_tenancy.py \
	tests/test_sync_queue.py tests/test_time_zones.py tests/test_concurrency.py tests/test_busy_mirror.py \
	tests/test_claim_performance.py tests/test_appointment_rows.py tests/test_bad_input_properties.py \
	tests/test_supabase_rest_standin.py tests/test_realtime_standin.py tests/test_clinic_links.py \
	tests/test_google_budget.py tests/test_calendar_truth.py tests/test_advisor.py tests/test_retention.py \
	tests/test_practitioners.py tests/test_practitioner_calendars.py

.PHONY: demo test test-pg15 check schema-check migration lock postgres15 supabase-cli chromium

# The dependencies come from the hash-checked lock (`make lock` regenerates it), the project itself after them.
$(INSTALLED): pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(SUPABASE_CLI): tools/package.json tools/package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: install Node.js (apt-get install nodejs npm)" >&2; exit 1; }
	cd tools && npm ci --no-audit --no-fund --loglevel=error
	tools/node_modules/.bin/supabase --version >/dev/null
	touch $@

supabase-cli: $(SUPABASE_CLI)

demo: $(INSTALLED)
	$(BIN)/python -m scripts.demo

test: $(INSTALLED) $(SUPABASE_CLI) chromium postgres15
	$(BIN)/pytest -n $(TEST_WORKERS)

# Debian's Chromium, which the browser tests (tests/test_clinic_pages.py) drive headless through Playwright
# (Playwright's own browser download is not used). Installed when missing (as root; quiet).
chromium:
	@if ! command -v chromium >/dev/null; then \
		echo "installing Debian's chromium"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium >/dev/null; \
	fi
	@chromium --version

# CI's extra: the SQL-level tests again on Debian's PostgreSQL 15 (a private throwaway cluster, never the
# machine's own PostgreSQL service).
test-pg15: $(INSTALLED) $(SUPABASE_CLI) postgres15
	TEST_POSTGRES=15 $(BIN)/pytest -n $(TEST_WORKERS) $(PG15_TESTS)

# Installs Debian's postgresql-15 when its server is missing, and its plpgsql_check extension (which
# `supabase db lint` uses: tests/test_supabase_lint.py) when that is missing (as root; quiet; nothing when both
# are there). No cluster is created or started: the tests start their own.
PG15_PLPGSQL_CHECK := /usr/share/postgresql/15/extension/plpgsql_check.control
postgres15:
	@if [ ! -x $(PG15_BIN)/postgres ]; then \
		echo "installing Debian's postgresql-15"; \
		mkdir -p /etc/postgresql-common/createcluster.d; \
		echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/no-main-cluster.conf; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			postgresql-15 >/dev/null; \
	fi
	@if [ ! -f $(PG15_PLPGSQL_CHECK) ]; then \
		echo "installing Debian's postgresql-15-plpgsql-check"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			postgresql-15-plpgsql-check >/dev/null; \
	fi
	@$(PG15_BIN)/postgres --version

check: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/mypy

# supabase/schemas (the current state, by concern) against supabase/migrations (the history): `make schema-check`
# names every object the two disagree on; `make migration NAME=<what_changed>` writes the next migration from the
# difference (functions, privileges, policies, indexes, triggers, comments; changes that move data are refused and
# named, to be written by hand). Both build throwaway databases of their own (python -m scripts.schema).
schema-check: $(INSTALLED)
	$(BIN)/python -m scripts.schema check

migration: $(INSTALLED)
	@test -n "$(NAME)" || { echo "usage: make migration NAME=<lower_snake_name>" >&2; exit 2; }
	$(BIN)/python -m scripts.schema diff $(NAME)

# Regenerates the hash-checked locks from pyproject.toml, keeping every pin that still fits (UPGRADE=1 moves
# them all to the newest allowed): requirements.lock (the image: the runtime dependencies and the build
# backend) and requirements-dev.lock (.venv: the same plus the dev extras). From PyPI only, whatever the
# machine's pip configuration adds.
PIP_COMPILE := env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe --all-build-deps \
	--no-emit-index-url --no-emit-find-links --index-url https://pypi.org/simple \
	$(if $(UPGRADE),--upgrade)
lock: $(INSTALLED)
	$(PIP_COMPILE) --output-file requirements.lock pyproject.toml
	$(PIP_COMPILE) --extra dev --output-file requirements-dev.lock pyproject.toml
