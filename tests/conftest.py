from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from hypothesis import settings

from daemon.config import DEFAULT_MIGRATIONS_DIR
from daemon.migrations import apply
from tests.daemon_harness import Backend
from tests.standins.clinics import create_clinic, issue_key
from tests.standins.google import GoogleStandIn
from tests.standins.postgres import AUTHENTICATOR, MIGRATOR, SUPERUSER, ThrowawayPostgres
from tests.standins.supabase_rest import SupabaseRestStandIn
from tests.standins.vapi import Assistant

TEMPLATE = "ccs_template"

# CI runs the same examples every time, so a red run can be reproduced; local runs explore.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@dataclass
class Database:
    cluster: ThrowawayPostgres
    name: str

    def dsn(self, user: str = SUPERUSER) -> str:
        return self.cluster.dsn(self.name, user)

    def connect(self, user: str = SUPERUSER) -> psycopg.Connection:
        return psycopg.connect(self.dsn(user), autocommit=True)


@dataclass
class Clinic:
    id: uuid.UUID
    key: str


@pytest.fixture(scope="session")
def cluster() -> Iterator[ThrowawayPostgres]:
    """One throwaway server per run, with a migrated template every test database copies."""
    with ThrowawayPostgres() as pg:
        pg.create_database(TEMPLATE)
        pg.bootstrap_supabase(TEMPLATE)
        apply(pg.dsn(TEMPLATE, MIGRATOR), DEFAULT_MIGRATIONS_DIR)
        yield pg


@pytest.fixture
def empty_database(cluster: ThrowawayPostgres) -> Iterator[Database]:
    """A Supabase-like database with no migrations applied."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    cluster.create_database(name)
    cluster.bootstrap_supabase(name)
    yield Database(cluster, name)
    cluster.drop_database(name)


@pytest.fixture
def database(cluster: ThrowawayPostgres) -> Iterator[Database]:
    """A fresh, migrated database of its own for one test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    cluster.create_database(name, template=TEMPLATE)
    yield Database(cluster, name)
    cluster.drop_database(name)


@pytest.fixture
def admin(database: Database) -> Iterator[psycopg.Connection]:
    with database.connect() as conn:
        yield conn


@pytest.fixture
def gateway(database: Database) -> Iterator[psycopg.Connection]:
    """A connection as PostgREST's `authenticator` login role."""
    with database.connect(AUTHENTICATOR) as conn:
        yield conn


@pytest.fixture
def clinic(admin: psycopg.Connection) -> Clinic:
    clinic_id = create_clinic(admin, booking_horizon_days=400)
    return Clinic(clinic_id, issue_key(admin, clinic_id))


@pytest.fixture
def assistant(gateway: psycopg.Connection, clinic: Clinic) -> Assistant:
    return Assistant(gateway, clinic.key)


@pytest.fixture
def google() -> Iterator[GoogleStandIn]:
    """Google Calendar + OAuth on 127.0.0.1."""
    with GoogleStandIn() as standin:
        yield standin


@pytest.fixture
def rest(database: Database) -> Iterator[SupabaseRestStandIn]:
    """Supabase's REST gateway over this test's database."""
    with SupabaseRestStandIn(database.dsn(AUTHENTICATOR)) as standin:
        yield standin


@pytest.fixture(params=["supabase", "postgres"])
def backend(request: pytest.FixtureRequest, database: Database) -> Iterator[Backend]:
    """Each database path in turn, without a change feed (the timer sweeps)."""
    if request.param == "postgres":
        yield Backend("postgres", {"DATABASE_URL": database.dsn(MIGRATOR)})
        return
    with SupabaseRestStandIn(database.dsn(AUTHENTICATOR)) as rest:
        yield Backend("supabase", {"SUPABASE_URL": rest.url, "SUPABASE_SERVICE_ROLE_KEY": rest.service_role_key})
