"""The daemon as a process: stopped with SIGTERM mid-batch, fair between clinics, quiet in logs.

SIGKILL at random points while a backlog drains is in test_faults.py."""

from __future__ import annotations

import signal
import sys

import psycopg
import pytest
from loguru import logger

from daemon.logs import configure_logging
from tests.conftest import Clinic, Database
from tests.daemon_harness import (
    Backend,
    all_synced,
    appointment_events,
    connect_google,
    daemon_process,
    make_settings,
    running,
    settings_env,
    sync_states,
    wait_until,
)
from tests.dates import upcoming
from tests.standins.clinics import create_clinic, issue_key
from tests.standins.google import Fault, GoogleStandIn
from tests.standins.postgres import MIGRATOR, scalar
from tests.standins.vapi import Assistant, VapiCall

TUESDAY = 2


@pytest.fixture
def backend(database: Database) -> Backend:
    return Backend("postgres", {"DATABASE_URL": database.dsn(MIGRATOR)})


def fill_diary(assistant: Assistant, count: int, weekday: int = TUESDAY) -> None:
    day = upcoming(weekday)
    for n in range(count):
        hour, minute = divmod(9 * 60 + 30 * n, 60)
        result = assistant.use(
            "book_appointment", {"start": f"{day}T{hour:02d}:{minute:02d}", "patient_name": f"Patient {n}"}
        )
        assert "result" in result, result


def synced_count(admin: psycopg.Connection) -> int:
    return int(scalar(admin, "select count(*) from public.appointments where sync_state = 'synced'"))


def interrupt_mid_batch(
    how: signal.Signals,
    backend: Backend,
    google: GoogleStandIn,
    admin: psycopg.Connection,
    assistant: Assistant,
    clinic: Clinic,
) -> tuple[str, int, str]:
    """Book 14, start `python -m daemon`, send `how` once some are synced and others are stuck in
    flight (Google slowed to longer than the wait). Returns the account, exit code and output."""
    account = connect_google(admin, google, clinic.id)
    fill_diary(assistant, 14)
    google.latency = 0.25
    process = daemon_process(settings_env(backend, google, sync_workers=4, sync_batch_size=4))
    try:
        wait_until(lambda: synced_count(admin) >= 2, what="the first pushes")
        google.latency = 5.0  # whatever Google receives from now on hangs past the signal
        slowed = len(google.requests())
        wait_until(lambda: any(r.status == 0 for r in google.requests()[slowed:]), what="a push stuck in flight")
    finally:
        process.send_signal(how)
        output, _ = process.communicate(timeout=30)
    google.latency = 0.0
    return account, process.returncode, output.decode(errors="replace")


def test_sigterm_finishes_or_hands_back_in_flight_work_and_exits_cleanly(
    backend: Backend,
    google: GoogleStandIn,
    admin: psycopg.Connection,
    assistant: Assistant,
    clinic: Clinic,
) -> None:
    account, returncode, output = interrupt_mid_batch(signal.SIGTERM, backend, google, admin, assistant, clinic)
    assert returncode == 0, output
    assert "stopped" in output
    states = sync_states(admin)
    assert "in_flight" not in states and sum(states.values()) == 14

    with running(make_settings(backend, google)):
        wait_until(all_synced(admin), what="the rest synced")
    assert len(appointment_events(admin, google, account, clinic.id)) == 14


def test_a_busy_clinic_does_not_starve_a_quiet_one_or_exceed_its_google_quota(
    backend: Backend,
    google: GoogleStandIn,
    admin: psycopg.Connection,
    gateway: psycopg.Connection,
    assistant: Assistant,
    clinic: Clinic,
) -> None:
    connect_google(admin, google, clinic.id)
    quiet_id = create_clinic(admin, "Quiet Clinic")
    quiet_account = connect_google(admin, google, quiet_id)
    fill_diary(assistant, 16)
    # The busy clinic has more bookings than its account's budget for a minute: the rest must wait.
    google.requests_per_minute = 12
    with running(make_settings(backend, google, google_requests_per_minute=12)):
        wait_until(lambda: synced_count(admin) >= 8, what="the busy clinic's first burst")
        fill_diary(Assistant(gateway, issue_key(admin, quiet_id), VapiCall()), 1)
        wait_until(lambda: len(google.events(quiet_account)) == 1, timeout=5, what="the quiet clinic's booking")
        busy_waiting = scalar(
            admin,
            "select count(*) from public.appointments where clinic_id = %s and sync_state <> 'synced'",
            (clinic.id,),
        )
        assert busy_waiting > 0  # the quiet clinic went ahead of the busy clinic's queue
    assert not any(r.status == 403 for r in google.requests())


def test_patient_details_never_reach_the_logs(
    backend: Backend,
    google: GoogleStandIn,
    admin: psycopg.Connection,
    assistant: Assistant,
    clinic: Clinic,
) -> None:
    connect_google(admin, google, clinic.id)
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format="{message} {extra} {exception}")
    try:
        for clock, name in (("10:00", "Zelda Quux"), ("11:00", "Yorick Quux")):
            assistant.use(
                "book_appointment",
                {
                    "start": f"{upcoming(TUESDAY)}T{clock}",
                    "patient_name": name,
                    "patient_phone": "07700 900987",
                    "notes": "allergic to penicillin",
                },
            )
        google.inject(Fault.error(503, "backendError"), times=1, method="POST")
        google.inject(Fault.error(400, "invalid"), times=1, method="POST")
        with running(make_settings(backend, google)):
            wait_until(lambda: sync_states(admin) == {"synced": 1, "failed": 1}, what="one synced, one failed")
    finally:
        logger.remove(sink)
    text = "\n".join(lines)
    assert "synced" in text and "retry in" in text and "failed" in text and str(clinic.id) in text
    for secret in ("Zelda", "Yorick", "Quux", "900987", "penicillin"):
        assert secret not in text


def test_production_logging_never_prints_variable_values(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging()
    try:

        def push(patient_name: str) -> None:
            raise RuntimeError("unexpected")

        patient = "".join(["Zel", "da"])  # a value at run time, as real patient data is, not a literal
        try:
            push(patient)
        except RuntimeError:
            logger.exception("appointment {} clinic {}: unexpected error", "a-id", "c-id")
    finally:
        logger.remove()
        assert sys.__stderr__ is not None
        logger.add(sys.__stderr__)  # not this test's captured stream, which closes after it
    err = capsys.readouterr().err
    assert "RuntimeError: unexpected" in err and "appointment a-id clinic c-id" in err
    assert "Zelda" not in err
