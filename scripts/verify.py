"""The production readiness report (`clinic-sync verify`).

python -m scripts.verify                                  # colour-coded, one line per check
python -m scripts.verify --json                           # for machines
python -m scripts.verify --round-trip --clinic <id>       # plus a synthetic booking through Vapi's path
"""

from __future__ import annotations

import sys

from daemon.cli import main as clinic_sync


def main(argv: list[str] | None = None) -> int:
    return clinic_sync(["verify", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
