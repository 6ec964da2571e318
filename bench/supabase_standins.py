"""The Supabase stand-ins (REST gateway and Realtime) in a process of their own, for the benchmark.

    .venv/bin/python -m bench.supabase_standins AUTHENTICATOR_DSN SUPERUSER_DSN

Prints one JSON line ({"url", "realtime_url", "service_role_key"}) once both serve, and serves
until its standard input closes. Run apart from the Google stand-in, so the Supabase path's
gateway does not slow Google's answers down by sharing an interpreter lock with them: the
floor and the direct path face the same Google stand-in as the Supabase path does.
"""

from __future__ import annotations

import json
import sys

from tests.standins.realtime import RealtimeStandIn
from tests.standins.supabase_rest import SupabaseRestStandIn


def main(argv: list[str] | None = None) -> int:
    rest_dsn, realtime_dsn = argv or sys.argv[1:]
    with SupabaseRestStandIn(rest_dsn) as rest, RealtimeStandIn(realtime_dsn) as realtime:
        print(
            json.dumps({"url": rest.url, "realtime_url": realtime.url, "service_role_key": rest.service_role_key}),
            flush=True,
        )
        sys.stdin.read()  # until the benchmark closes our input (or ends)
    return 0


if __name__ == "__main__":
    sys.exit(main())
