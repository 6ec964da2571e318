# The clinic calendar sync daemon (`clinic-sync run`), one replica per container.
#
#   docker build -t clinic-sync .
#   docker run --env-file .env -p 9108:9108 clinic-sync            # the daemon; SIGTERM drains, exits 0
#   docker run --env-file .env clinic-sync migrate                  # any other subcommand instead of `run`
#
# Metrics, /healthz and /readyz are served on METRICS_HOST:METRICS_PORT (0.0.0.0:9108 by default).
# CI has no Docker engine: this file is checked statically (hadolint + tests/test_dockerfile.py).
# Both stages must use the same base image: the venv's interpreter links to /usr/local/bin/python3.

FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /src
# The dependencies first, each pinned and hash-checked by the lock (`make lock`): this layer is rebuilt only
# when the lock changes, not when the code does. The lock also pins the build backend (setuptools).
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock

# Then the project alone: nothing is resolved or downloaded here.
# README.md is the project's `readme` in pyproject.toml: the build needs it.
COPY pyproject.toml README.md ./
COPY daemon ./daemon
RUN pip install --no-cache-dir --no-deps --no-build-isolation .

# What the daemon never runs stays out of the image (tests/test_dockerfile.py runs this same command on a
# copy of a venv): google-api-python-client's discovery documents of ~600 other Google APIs (~110 MB; the
# daemon builds only calendar v3, offline, from calendar.v3.json), and pip and setuptools (~25 MB).
RUN site="$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
    && find "$site/googleapiclient/discovery_cache/documents" -type f ! -name calendar.v3.json -delete \
    && test -f "$site/googleapiclient/discovery_cache/documents/calendar.v3.json" \
    && python -m pip uninstall --yes --quiet pip setuptools


FROM python:3.11.14-slim-bookworm

# A fixed numeric uid/gid, so that `runAsNonRoot` and volume permissions can rely on it.
RUN groupadd --system --gid 10001 clinic \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin clinic

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# A non-editable install has no supabase/ next to the package: `migrate` reads MIGRATIONS_DIR.
COPY supabase/migrations /app/supabase/migrations

ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOG_FORMAT=json \
    MIGRATIONS_DIR=/app/supabase/migrations

# 9108: metrics and health; 8080: the public listener (PUBLIC_URL: Google's push notifications).
EXPOSE 9108 8080

# Liveness only (readiness is /readyz, for the orchestrator). Slim images have no curl, and the exec form
# expands no variables, so Python reads the settings the daemon reads: nothing to check (healthy) with
# METRICS_ENABLED=false; METRICS_HOST unless it is every interface (then loopback); METRICS_PORT. urlopen
# raises on a refused connection or a non-2xx answer. tests/test_dockerfile.py runs it for each case.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; e = os.environ.get; e('METRICS_ENABLED', 'true').strip().lower() in ('0', 'false', 'f', 'no', 'n', 'off') and sys.exit(0); h = e('METRICS_HOST', '').strip().strip('[]'); h = {'': '127.0.0.1', '0.0.0.0': '127.0.0.1', '::': '::1'}.get(h, h); urllib.request.urlopen('http://' + ('[' + h + ']' if ':' in h else h) + ':' + e('METRICS_PORT', '9108') + '/healthz', timeout=4)"]

USER 10001:10001

# Exec form: PID 1 is the Python process itself and receives SIGTERM (drain, then exit 0).
STOPSIGNAL SIGTERM
ENTRYPOINT ["clinic-sync"]
CMD ["run"]
