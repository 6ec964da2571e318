"""Clinic links in SQL: only hashes stored, single use under concurrency, expiry and revocation, one clinic per
link, bad input refused with nothing changed, and the API roles kept out."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import errors

from tests.conftest import Clinic, Database
from tests.standins.clinics import create_clinic
from tests.standins.postgres import scalar
from tests.test_tenancy import FERNET_LIKE, acting_as

STATE = "s" * 43


def issue(admin: psycopg.Connection, clinic_id: uuid.UUID, purpose: str = "connect", valid: str = "1 hour") -> str:
    return str(
        scalar(admin, "select secret from public.issue_clinic_link(%s, %s, %s::interval)", (clinic_id, purpose, valid))
    )


def opened(admin: psycopg.Connection, secret: str, purpose: str = "connect") -> dict[str, Any]:
    result: dict[str, Any] = scalar(admin, "select public.open_clinic_link(%s, %s)", (secret, purpose))
    return result


def complete(conn: psycopg.Connection, state: str = STATE) -> str:
    return str(
        scalar(
            conn,
            "select public.complete_connect_consent(%s, 'manager@example.com', %s, array['x'])",
            (state, FERNET_LIKE),
        )
    )


def test_a_link_is_stored_as_its_hash_and_opens_its_own_clinic_only(admin: psycopg.Connection, clinic: Clinic) -> None:
    other = create_clinic(admin, "Hillside Surgery")
    secret = issue(admin, clinic.id)
    assert (
        len(secret) == 43
        and scalar(
            admin, "select count(*) from public.clinic_links where strpos(clinic_links::text, %s) > 0", (secret,)
        )
        == 0
    )
    link = opened(admin, secret)
    assert link["state"] == "open" and link["clinic_id"] == str(clinic.id) and link["clinic_name"] == "Riverside Clinic"
    assert opened(admin, secret, "status") == {"state": "unknown"}  # a connect link is no status link
    assert opened(admin, secret[:-1]) == {"state": "unknown"}
    assert str(other) not in str(opened(admin, secret))


def test_a_consent_completes_once_even_when_two_callbacks_race(
    database: Database, admin: psycopg.Connection, clinic: Clinic
) -> None:
    secret = issue(admin, clinic.id)
    assert scalar(admin, "select public.begin_connect_consent(%s, %s, %s)", (secret, STATE, FERNET_LIKE)) == "open"
    answers: list[str] = []
    with database.connect() as first, database.connect() as second:
        with first.transaction():
            answers.append(complete(first))
            racer = threading.Thread(target=lambda: answers.append(complete(second)))
            racer.start()
            racer.join(0.5)
            assert racer.is_alive(), "the second callback waits for the first"
        racer.join(10)
    assert answers == ["open", "used"]
    assert scalar(admin, "select count(*) from public.calendar_connections where clinic_id = %s", (clinic.id,)) == 1
    assert opened(admin, secret) == {"state": "used"}
    assert scalar(admin, "select public.connect_consent(%s)", (STATE,)) == {"state": "used"}
    assert scalar(admin, "select code_verifier_encrypted from public.clinic_links") is None


@pytest.mark.parametrize("ending", ["expired", "revoked"])
def test_an_ended_link_starts_no_consent_and_completes_none(
    ending: str, admin: psycopg.Connection, clinic: Clinic
) -> None:
    secret = issue(admin, clinic.id)
    assert scalar(admin, "select public.begin_connect_consent(%s, %s, %s)", (secret, STATE, FERNET_LIKE)) == "open"
    if ending == "expired":
        admin.execute(
            "update public.clinic_links"
            " set created_at = now() - interval '2 days', expires_at = now() - interval '1 second'"
        )
    else:
        admin.execute("select public.revoke_clinic_link(id) from public.clinic_links")
    assert scalar(admin, "select public.begin_connect_consent(%s, %s, %s)", (secret, "t" * 43, FERNET_LIKE)) == ending
    assert complete(admin) == ending
    assert scalar(admin, "select count(*) from public.calendar_connections") == 0
    assert opened(admin, secret) == {"state": ending}


def test_the_status_page_shows_its_own_clinic_only(admin: psycopg.Connection, clinic: Clinic) -> None:
    other = create_clinic(admin, "Hillside Surgery")
    for clinic_id, name in ((clinic.id, "Own Patient"), (other, "Other Patient")):
        admin.execute(
            "insert into public.appointments (clinic_id, reference, patient, service, starts_at, ends_at)"
            " values (%s, 'REF' || upper(substr(md5(random()::text), 1, 4)), jsonb_build_object('name', %s::text,"
            " 'phone', '+447700900999'), 'Check-up', now() + interval '1 day', now() + interval '1 day 30 minutes')",
            (clinic_id, name),
        )
    page = scalar(admin, "select public.clinic_status_page(%s)", (issue(admin, clinic.id, "status"),))
    assert [b["patient_name"] for b in page["upcoming"]] == ["Own Patient"]
    assert "Other Patient" not in str(page) and "Hillside" not in str(page) and "+447700900999" not in str(page)
    assert page["connection"] is None
    assert scalar(admin, "select public.clinic_status_page(%s)", (issue(admin, clinic.id),)) == {"state": "unknown"}
    reconnect = admin.execute("select * from public.reconnect_link(%s)", ("nonsense",)).fetchall()
    assert reconnect == []


@pytest.mark.parametrize(
    ("purpose", "valid", "message"),
    [
        ("admin", "1 hour", "A link is for connect or status, not admin"),
        ("connect", "1 minute", "A link lasts from 5 minutes to 90 days"),
        ("status", "1 year", "A link lasts from 5 minutes to 90 days"),
    ],
)
def test_bad_link_requests_are_refused_and_change_nothing(
    purpose: str, valid: str, message: str, admin: psycopg.Connection, clinic: Clinic
) -> None:
    with pytest.raises(errors.RaiseException, match=message):
        issue(admin, clinic.id, purpose, valid)
    with pytest.raises(errors.NoDataFound, match="No clinic with id"):
        issue(admin, uuid.uuid4())
    with pytest.raises(errors.NoDataFound, match="No clinic link with id"):
        admin.execute("select public.revoke_clinic_link(%s)", (uuid.uuid4(),))
    secret = issue(admin, clinic.id)
    with pytest.raises(errors.RaiseException, match="at least 32 characters"):
        admin.execute("select public.begin_connect_consent(%s, 'short', %s)", (secret, FERNET_LIKE))
    assert scalar(admin, "select count(*) from public.clinic_links where consent_started_at is not null") == 0
    assert scalar(admin, "select count(*) from public.clinic_links") == 1


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_the_api_roles_reach_no_link(
    role: str, gateway: psycopg.Connection, admin: psycopg.Connection, clinic: Clinic
) -> None:
    secret = issue(admin, clinic.id)
    for call in (
        "select public.open_clinic_link(%s, 'connect')",
        "select public.clinic_status_page(%s)",
        "select * from public.issue_clinic_link(gen_random_uuid(), %s, '1 hour')",
    ):
        with acting_as(gateway, role), pytest.raises(errors.InsufficientPrivilege):
            gateway.execute(call, (secret,))
    with acting_as(gateway, role), pytest.raises(errors.InsufficientPrivilege):
        gateway.execute("select count(*) from public.clinic_links")
