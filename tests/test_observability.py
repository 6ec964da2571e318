"""What an operator sees of a running daemon: the metrics endpoint after real syncs, health and
readiness, and JSON logs that name ids and never patient details."""

from __future__ import annotations

import json
import signal

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from daemon.crypto import TokenCipher
from tests.conftest import Clinic, Database
from tests.daemon_harness import (
    TOKEN_KEY,
    Backend,
    DaemonThread,
    connect_google,
    daemon_process,
    make_settings,
    running,
    settings_env,
    sync_states,
    wait_until,
)
from tests.dates import upcoming
from tests.standins.google import Fault, GoogleStandIn
from tests.standins.postgres import AUTHENTICATOR, scalar
from tests.standins.supabase_rest import SupabaseRestStandIn
from tests.standins.vapi import Assistant

TUESDAY = 2


def health_url(runner: DaemonThread, path: str) -> str:
    wait_until(lambda: runner.daemon.health is not None, what="the health server")
    assert runner.daemon.health is not None
    return f"http://127.0.0.1:{runner.daemon.health.port}{path}"


def scrape(runner: DaemonThread) -> dict[str, float]:
    """Every sample as `name{label="value",...}` -> value."""
    response = httpx.get(health_url(runner, "/metrics"), timeout=5)
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def probe(runner: DaemonThread, path: str) -> httpx.Response:
    return httpx.get(health_url(runner, path), timeout=5)


def test_metrics_after_syncs_retries_and_failures(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, assistant: Assistant, clinic: Clinic
) -> None:
    connect_google(admin, google, clinic.id)
    day = upcoming(TUESDAY)
    google.inject(Fault.error(503, "backendError"), times=1, method="POST")
    with running(make_settings(backend, google)) as runner:
        references = [assistant.book(f"{day}T{hour}:00") for hour in ("09", "10", "11")]
        wait_until(lambda: sync_states(admin) == {"synced": 3}, what="three bookings synced")
        assistant.use("reschedule_appointment", {"reference": references[0], "new_start": f"{day}T14:00"})
        assistant.use("cancel_appointment", {"reference": references[1]})
        wait_until(lambda: sync_states(admin) == {"synced": 3}, what="the move and the cancellation synced")
        google.inject(Fault.error(400, "invalid"), times=1, method="POST")
        assistant.book(f"{day}T15:00")
        wait_until(lambda: sync_states(admin) == {"synced": 3, "failed": 1}, what="one refused by Google")
        wait_until(
            lambda: scrape(runner).get('calendar_sync_backlog{state="failed"}') == 1.0, what="a backlog snapshot"
        )
        metrics = scrape(runner)
        assert (probe(runner, "/healthz").status_code, probe(runner, "/readyz").status_code) == (200, 200)
        assert probe(runner, "/readyz").json()["database"] == backend.name

    synced = {
        a: metrics[f'calendar_sync_appointments_synced_total{{action="{a}"}}'] for a in ("insert", "update", "delete")
    }
    assert synced == {"insert": 3.0, "update": 1.0, "delete": 1.0}
    assert metrics['calendar_sync_appointments_failed_total{reason="rejected"}'] == 1.0
    assert metrics['calendar_sync_appointments_failed_total{reason="gave_up"}'] == 0.0
    assert metrics['calendar_sync_push_retries_total{reason="google_error"}'] == 1.0
    assert metrics["calendar_sync_booking_to_calendar_seconds_count"] == 5.0
    assert 0 < metrics["calendar_sync_booking_to_calendar_seconds_sum"] < 5 * 20
    assert metrics['calendar_sync_token_refreshes_total{result="ok"}'] >= 1.0
    assert metrics['calendar_sync_backlog{state="pending"}'] == 0.0
    assert metrics["calendar_sync_clinics_needing_reauth"] == 0.0
    assert metrics["calendar_sync_claimed_appointments_total"] >= 6.0
    assert metrics['calendar_sync_feed_state{calendar_sync_feed_state="disabled"}'] == 1.0
    assert metrics['calendar_sync_mirror_runs_total{kind="full"}'] >= 1.0  # the busy mirror read the calendar
    assert 0 <= metrics[f'calendar_sync_mirror_age_seconds{{clinic_id="{clinic.id}"}}'] < 60
    assert metrics["calendar_sync_mirrors_stale"] == 0.0


def test_a_revoked_grant_shows_as_parked_and_needing_reauth(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, assistant: Assistant, clinic: Clinic
) -> None:
    connect_google(admin, google, clinic.id)
    google.revoke(
        TokenCipher(TOKEN_KEY).decrypt(scalar(admin, "select refresh_token_encrypted from public.calendar_connections"))
    )
    # Without the mirror, which could meet the dead grant first (the claim then parks the row in SQL).
    with running(make_settings(backend, google, mirror_enabled=False)) as runner:
        assistant.book(f"{upcoming(TUESDAY)}T10:00")
        wait_until(lambda: sync_states(admin) == {"parked": 1}, what="the booking parked")
        wait_until(lambda: scrape(runner).get("calendar_sync_clinics_needing_reauth") == 1.0, what="the snapshot")
        metrics = scrape(runner)
    assert metrics["calendar_sync_appointments_parked_total"] == 1.0
    assert metrics['calendar_sync_token_refreshes_total{result="needs_reauth"}'] == 1.0
    assert metrics['calendar_sync_backlog{state="parked"}'] == 1.0


def test_readiness_follows_the_database(database: Database, google: GoogleStandIn) -> None:
    with SupabaseRestStandIn(database.dsn(AUTHENTICATOR)) as rest:
        backend = Backend("supabase", {"SUPABASE_URL": rest.url, "SUPABASE_SERVICE_ROLE_KEY": rest.service_role_key})
        with running(make_settings(backend, google)) as runner:
            wait_until(lambda: probe(runner, "/readyz").status_code == 200, what="ready")
            rest.stop()
            wait_until(lambda: probe(runner, "/readyz").status_code == 503, what="not ready")
            body = probe(runner, "/readyz").json()
            assert body["ok"] is False and "database unreachable" in body["error"]
            assert probe(runner, "/healthz").status_code == 200  # alive: restarting it would not help
            rest.start()
            wait_until(lambda: probe(runner, "/readyz").status_code == 200, what="ready again")


SECRETS = ("Zelda", "Quux", "7700 900987", "7700900987", "zelda.quux@example.org", "penicillin")


def test_json_logs_name_ids_and_never_patient_details(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, assistant: Assistant, clinic: Clinic
) -> None:
    """The daemon as a container runs it: its own process, JSON logs at DEBUG, every outcome kind."""
    connect_google(admin, google, clinic.id)
    refresh_token = TokenCipher(TOKEN_KEY).decrypt(
        scalar(admin, "select refresh_token_encrypted from public.calendar_connections")
    )
    day = upcoming(TUESDAY)
    env = settings_env(backend, google, log_format="json", log_level="DEBUG")
    google.inject(Fault.error(503, "backendError"), times=1, method="POST")
    process = daemon_process(env)
    try:
        references = [
            assistant.book(
                f"{day}T{clock}",
                "Zelda Quux",
                patient_phone="07700 900987",
                notes="allergic to penicillin; email zelda.quux@example.org",
            )
            for clock in ("10:00", "11:00")
        ]
        wait_until(lambda: sync_states(admin) == {"synced": 2}, what="both synced")
        assistant.use("reschedule_appointment", {"reference": references[0], "new_start": f"{day}T12:00"})
        assistant.use("cancel_appointment", {"reference": references[1]})
        google.inject(Fault.error(400, "invalid"), times=1, method="POST")
        assistant.book(f"{day}T15:00", "Zelda Quux", notes="penicillin")
        wait_until(lambda: sync_states(admin) == {"synced": 2, "failed": 1}, what="all outcomes")
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    text = output.decode()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is one JSON object
    outcomes = [line for line in lines if "outcome" in line]
    assert {line["outcome"] for line in outcomes} >= {"synced", "retry", "failed"}
    assert all(line["clinic_id"] == str(clinic.id) and len(line["appointment_id"]) == 36 for line in outcomes)
    assert {"time", "level", "message"} <= set(lines[0])
    for secret in (*SECRETS, refresh_token, clinic.key, TOKEN_KEY, *references):
        assert secret not in text, secret
