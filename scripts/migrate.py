"""Apply the Supabase migrations to DATABASE_URL, or report their status (`clinic-sync migrate`).

python -m scripts.migrate            # apply pending migrations (safe to run again)
python -m scripts.migrate status     # list applied / pending migrations; exits 1 unless all applied
"""

from __future__ import annotations

import sys

from daemon.cli import main as clinic_sync


def main(argv: list[str] | None = None) -> int:
    return clinic_sync(["migrate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
