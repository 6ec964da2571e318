"""The throughput benchmark runs end to end (its figures are printed, never asserted on)."""

from __future__ import annotations

from bench.throughput import Options, report, run_bench
from tests.standins.postgres import ThrowawayPostgres


def test_the_benchmark_produces_figures_and_every_booking_reaches_google_once(cluster: ThrowawayPostgres) -> None:
    options = Options(
        clinics=2, backlog=24, rate=10.0, steady_seconds=1.0, latencies_ms=(0.0,), booking_connections=2, timeout=120.0
    )
    result = run_bench(options, cluster)

    assert [(run.system, run.path) for run in result.runs] == [
        ("floor", "postgres"),
        ("daemon", "postgres"),
        ("daemon", "supabase"),
    ]
    for run in result.runs:
        assert run.drain.count == 24 and run.drain.rate > 0 and run.drain.peak_rss_mb > 0
        assert run.exactly_once, (run.system, run.path, run.appointments, run.events, run.inserts, run.not_ok)
        if run.system == "daemon":
            assert run.steady is not None and len(run.steady.latencies_ms) == run.steady.bookings == 10
            assert run.appointments == 24 + 10
    assert "x floor" in report(result)
