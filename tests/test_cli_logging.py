"""Every `clinic-sync` command logs as LOG_FORMAT and LOG_LEVEL say, not only `run`: the container sets
LOG_FORMAT=json, and a log collector reading `migrate`, `add-clinic` or `verify` must get JSON lines.

Each command runs as the installed console script, in a process of its own, from an empty directory (no
stray `.env`), with only the variables it is given."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from daemon.config import DEFAULT_MIGRATIONS_DIR
from daemon.migrations import discover
from tests.conftest import Database
from tests.daemon_harness import TOKEN_KEY
from tests.standins.google import GoogleStandIn
from tests.standins.postgres import MIGRATOR

CLINIC_SYNC = Path(sys.executable).parent / "clinic-sync"
# Settings that must not leak in from the developer's shell.
OURS = re.compile(r"^(SUPABASE_|DATABASE_URL|SYNC_|GOOGLE_|TOKEN_|FEED_|MIRROR_|METRICS_|LOG_|MIGRATIONS_DIR)")


def clinic_sync(tmp_path: Path, *argv: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not OURS.match(name)}
    env.update({name.upper(): value for name, value in settings.items()})
    assert CLINIC_SYNC.exists(), f"{CLINIC_SYNC}: the console script (pip install -e .)"
    return subprocess.run(
        [str(CLINIC_SYNC), *argv], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every line on stderr, each of which must be one JSON object with the fields of our JSON log lines."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing was logged"
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON log line: {line!r}\n(all of stderr:\n{stderr})")
        assert isinstance(record, dict) and {"time", "level", "message", "logger"} <= record.keys(), line
        records.append(record)
    return records


def test_migrate_logs_json_lines(empty_database: Database, tmp_path: Path) -> None:
    result = clinic_sync(tmp_path, "migrate", database_url=empty_database.dsn(MIGRATOR), log_format="json")
    assert result.returncode == 0, result.stderr
    records = json_lines(result.stderr)
    applied = [r["message"] for r in records if r["message"].startswith("applied migration ")]
    expected = [f"applied migration {m.version} {m.name}" for m in discover(DEFAULT_MIGRATIONS_DIR)]
    assert applied == expected
    assert {r["level"] for r in records} == {"INFO"}
    # What the operator reads stays plain text on stdout.
    assert result.stdout.startswith(f"applied {len(expected)} migration(s)")


def test_log_level_applies_to_every_command(empty_database: Database, tmp_path: Path) -> None:
    result = clinic_sync(
        tmp_path, "migrate", database_url=empty_database.dsn(MIGRATOR), log_format="json", log_level="WARNING"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # the INFO lines of every applied migration are below WARNING
    assert result.stdout.startswith("applied ")


def test_add_clinic_logs_json_lines(database: Database, tmp_path: Path) -> None:
    result = clinic_sync(
        tmp_path, "add-clinic", "--name", "Quayside Surgery", database_url=database.dsn(MIGRATOR), log_format="json"
    )
    assert result.returncode == 0, result.stderr
    clinic_id = uuid.UUID(re.search(r"^clinic id:\s+(\S+)$", result.stdout, re.MULTILINE)[1])  # type: ignore[index]
    messages = [r["message"] for r in json_lines(result.stderr)]
    assert f"created clinic {clinic_id} with its first key" in messages
    # The key is printed once for the operator, never logged.
    key = re.search(r"^clinic key:\s+(\S+)$", result.stdout, re.MULTILINE)
    assert key and key[1] not in result.stderr


def test_verify_logs_json_lines(database: Database, google: GoogleStandIn, tmp_path: Path) -> None:
    result = clinic_sync(
        tmp_path,
        "verify",
        "--json",
        database_url=database.dsn(MIGRATOR),
        google_client_id="test-client-id",
        google_client_secret="test-client-secret",
        token_encryption_key=TOKEN_KEY,
        google_api_endpoint=google.api_endpoint,
        google_token_uri=google.token_uri,
        log_format="json",
    )
    report = json.loads(result.stdout)
    assert result.returncode == (0 if report["passed"] else 1), result.stderr
    messages = [r["message"] for r in json_lines(result.stderr)]
    [summary] = [m for m in messages if m.startswith("readiness report: ")]
    verdict = "ready" if report["passed"] else "not ready"
    assert summary.startswith(f"readiness report: {verdict} ({len(report['checks'])} check(s)"), summary


def test_a_failing_command_reports_why_as_a_json_line(tmp_path: Path) -> None:
    result = clinic_sync(tmp_path, "add-clinic", "--name", "Nowhere", log_format="json")
    assert result.returncode == 2
    [record] = json_lines(result.stderr)
    assert record["level"] == "ERROR"
    assert record["message"].startswith("configuration error: ") and "SUPABASE_URL" in record["message"]


def test_an_unknown_log_format_is_refused_by_name_before_anything_runs(database: Database, tmp_path: Path) -> None:
    result = clinic_sync(tmp_path, "add-clinic", "--name", "Never Made", database_url=database.dsn(), log_format="xml")
    assert result.returncode == 2
    assert "LOG_FORMAT" in result.stderr and "clinic id" not in result.stdout
    with database.connect() as conn:
        row = conn.execute("select count(*) from public.clinics where name = 'Never Made'").fetchone()
    assert row == (0,)
