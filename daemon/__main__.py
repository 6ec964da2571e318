"""`python -m daemon`: run the calendar sync daemon (or an operator subcommand)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid

from pydantic import ValidationError

from daemon.app import open_store, serve
from daemon.config import Settings


async def _retry_failed(settings: Settings, clinic: uuid.UUID | None, appointment: uuid.UUID | None) -> int:
    store = await open_store(settings)
    try:
        return await store.retry_failed(clinic, appointment)
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m daemon", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run the sync daemon (the default)")
    retry = commands.add_parser("retry-failed", help="put failed appointments back in the sync queue")
    retry.add_argument("--clinic", type=uuid.UUID, help="only this clinic's")
    retry.add_argument("--appointment", type=uuid.UUID, help="only this appointment")
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as error:
        print(f"configuration error:\n{error}", file=sys.stderr)
        return 2
    if args.command == "retry-failed":
        count = asyncio.run(_retry_failed(settings, args.clinic, args.appointment))
        print(f"re-queued {count} failed appointment(s)")
        return 0
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
