"""`python -m daemon`: the same as the `clinic-sync` command (runs the daemon when no subcommand is given)."""

from __future__ import annotations

import sys

from daemon.cli import main

if __name__ == "__main__":
    sys.exit(main())
