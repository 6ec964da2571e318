"""Apply the Supabase migrations to DATABASE_URL, or report their status.

python -m scripts.migrate            # apply pending migrations (safe to run again)
python -m scripts.migrate status     # list applied / pending migrations
"""

from __future__ import annotations

import argparse
import sys

import psycopg
from pydantic import ValidationError

from daemon.config import DatabaseSettings
from daemon.migrations import MigrationError, State, apply, discover, status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", choices=["apply", "status"], default="apply")
    parser.add_argument("--database-url", help="defaults to the DATABASE_URL environment variable")
    args = parser.parse_args(argv)
    try:
        overrides = {"database_url": args.database_url} if args.database_url else {}
        settings = DatabaseSettings(**overrides)
    except ValidationError:
        print("error: set DATABASE_URL or pass --database-url", file=sys.stderr)
        return 2
    try:
        if args.command == "status":
            with psycopg.connect(settings.database_url) as conn:
                states = status(conn, discover(settings.migrations_dir))
            for entry in states:
                print(f"{entry.version}  {entry.name:<32} {entry.state.value}")
            return 0 if all(s.state is State.APPLIED for s in states) else 1
        applied = apply(settings.database_url, settings.migrations_dir)
        print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else "; up to date"))
        return 0
    except MigrationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except psycopg.Error as error:
        print(f"error: database: {error}".strip(), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
