"""The throughput benchmark runs end to end (its figures are printed, never asserted on)."""

from __future__ import annotations

from bench import practitioners
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


def test_the_practitioners_benchmark_measures_real_availability_answers(cluster: ThrowawayPostgres) -> None:
    options = practitioners.Options(calls=3, days=2)
    assert practitioners.parse(["--calls", "3", "--days", "2"]) == options
    result = practitioners.run_bench(options, cluster)

    assert list(result.kinds) == ["one diary", "anyone", "named"]
    for kind in result.kinds.values():
        assert kind.calls == len(kind.latencies_ms) == 3 and kind.seconds > 0
        assert kind.errors == 0, kind.error_samples  # every answer a list of free times (or "No free times")
    assert sum(kind.times_listed for kind in result.kinds.values()) > 0
    many = result.clinics["practitioners"]
    assert many.appointments > 0 and many.busy_rows > 0 and 0.4 < many.booked_minutes / many.open_minutes < 0.8
    printed = practitioners.report(result)
    assert "p99 ms" in printed and "target p99 <= 20 ms" in printed
    assert all(name in printed for name in practitioners.KIND_NAMES.values())
