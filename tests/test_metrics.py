"""Metrics and the health/metrics HTTP server, over real HTTP on a free local port."""

from __future__ import annotations

import math
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE
from prometheus_client.parser import text_string_to_metric_families

from daemon.domain.google_budget import BudgetSnapshot
from daemon.domain.sync_queue import BacklogSnapshot
from daemon.feed import FeedState
from daemon.metrics import Health, HealthServer, Metrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(exposition: str) -> Samples:
    """Every sample in a text exposition, keyed by (sample name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


@dataclass
class Checks:
    """Answers the server's liveness and readiness callables give; a test changes them at will."""

    live: Health = field(default_factory=lambda: Health(True, {}))
    ready: Health = field(default_factory=lambda: Health(True, {}))
    raise_on_ready: Exception | None = None

    def liveness(self) -> Health:
        return self.live

    def readiness(self) -> Health:
        if self.raise_on_ready is not None:
            raise self.raise_on_ready
        return self.ready


@dataclass
class Served:
    metrics: Metrics
    checks: Checks
    server: HealthServer
    http: httpx.Client

    def scrape(self) -> Samples:
        response = self.http.get("/metrics")
        assert response.status_code == 200
        return samples(response.text)


@pytest.fixture
def served() -> Iterator[Served]:
    metrics = Metrics()
    checks = Checks()
    server = HealthServer(metrics, host="127.0.0.1", port=0, liveness=checks.liveness, readiness=checks.readiness)
    server.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=5.0) as http:
            yield Served(metrics, checks, server, http)
    finally:
        server.stop()


# --- counters and the histogram ---------------------------------------------------------------


def test_every_counter_series_exists_at_zero_before_any_event() -> None:
    found = samples(Metrics().render().decode())
    for action in ("insert", "update", "delete"):
        assert value(found, "calendar_sync_appointments_synced_total", action=action) == 0
    for reason in ("rejected", "gave_up"):
        assert value(found, "calendar_sync_appointments_failed_total", reason=reason) == 0
    for reason in ("rate_limited", "quota", "google_error", "network", "token", "internal"):
        assert value(found, "calendar_sync_push_retries_total", reason=reason) == 0
    for result in ("ok", "needs_reauth", "error"):
        assert value(found, "calendar_sync_token_refreshes_total", result=result) == 0
    assert value(found, "calendar_sync_appointments_parked_total") == 0
    assert value(found, "calendar_sync_claims_total") == 0
    assert value(found, "calendar_sync_claimed_appointments_total") == 0
    assert value(found, "calendar_sync_booking_to_calendar_seconds_count") == 0


def test_every_family_is_prefixed_and_explained() -> None:
    families = list(text_string_to_metric_families(Metrics().render().decode()))
    assert {family.name for family in families} >= {
        "calendar_sync_appointments_synced",
        "calendar_sync_booking_to_calendar_seconds",
        "calendar_sync_appointments_failed",
        "calendar_sync_appointments_parked",
        "calendar_sync_push_retries",
        "calendar_sync_claims",
        "calendar_sync_claimed_appointments",
        "calendar_sync_token_refreshes",
        "calendar_sync_backlog",
        "calendar_sync_oldest_pending_age_seconds",
        "calendar_sync_clinics_needing_reauth",
        "calendar_sync_backlog_updated_timestamp_seconds",
        "calendar_sync_feed_state",
    }
    for family in families:
        assert family.name.startswith("calendar_sync_"), family.name
        assert len(family.documentation) > 20, family.name


def test_events_are_counted_by_label_on_the_metrics_endpoint(served: Served) -> None:
    m = served.metrics
    m.synced("insert", 0.03)
    m.synced("insert", None)
    m.synced("delete", 1.0)
    m.failed("gave_up")
    m.parked()
    m.parked()
    m.retried("quota")
    m.retried("quota")
    m.retried("network")
    m.claimed(5)
    m.claimed(0)
    m.token_refresh("needs_reauth")

    found = served.scrape()
    assert value(found, "calendar_sync_appointments_synced_total", action="insert") == 2
    assert value(found, "calendar_sync_appointments_synced_total", action="update") == 0
    assert value(found, "calendar_sync_appointments_synced_total", action="delete") == 1
    assert value(found, "calendar_sync_appointments_failed_total", reason="gave_up") == 1
    assert value(found, "calendar_sync_appointments_failed_total", reason="rejected") == 0
    assert value(found, "calendar_sync_appointments_parked_total") == 2
    assert value(found, "calendar_sync_push_retries_total", reason="quota") == 2
    assert value(found, "calendar_sync_push_retries_total", reason="network") == 1
    assert value(found, "calendar_sync_push_retries_total", reason="token") == 0
    assert value(found, "calendar_sync_claims_total") == 2  # an empty claim is still a claim query
    assert value(found, "calendar_sync_claimed_appointments_total") == 5
    assert value(found, "calendar_sync_token_refreshes_total", result="needs_reauth") == 1
    assert value(found, "calendar_sync_token_refreshes_total", result="ok") == 0


def test_latency_lands_in_the_right_buckets(served: Served) -> None:
    served.metrics.synced("insert", 0.03)  # between the 0.025 and 0.05 bounds
    served.metrics.synced("update", 42.0)  # between 30 and 60
    served.metrics.synced("delete", 700.0)  # beyond the largest bound: +Inf only
    served.metrics.synced("update", None)  # counted as synced, but no latency to observe

    found = served.scrape()
    name = "calendar_sync_booking_to_calendar_seconds"
    assert value(found, f"{name}_count") == 3
    assert value(found, f"{name}_sum") == pytest.approx(742.03)
    cumulative = {
        "0.01": 0,
        "0.025": 0,
        "0.05": 1,
        "30.0": 1,
        "60.0": 2,
        "600.0": 2,
        "+Inf": 3,
    }
    for bound, expected in cumulative.items():
        assert value(found, f"{name}_bucket", le=bound) == expected, bound


def test_skewed_or_broken_latencies_do_not_distort_the_histogram() -> None:
    metrics = Metrics()
    metrics.synced("insert", -0.5)  # database clock slightly ahead of this replica's
    metrics.synced("insert", math.nan)
    metrics.synced("insert", math.inf)

    found = samples(metrics.render().decode())
    assert value(found, "calendar_sync_appointments_synced_total", action="insert") == 3
    assert value(found, "calendar_sync_booking_to_calendar_seconds_count") == 1
    assert value(found, "calendar_sync_booking_to_calendar_seconds_sum") == 0
    assert value(found, "calendar_sync_booking_to_calendar_seconds_bucket", le="0.01") == 1


def test_unknown_label_values_and_negative_claims_are_refused() -> None:
    metrics = Metrics()
    loose: Any = metrics  # the Literal types stop this statically; check the run-time guard too
    with pytest.raises(ValueError, match="action"):
        loose.synced("upsert", None)
    with pytest.raises(ValueError, match="failure reason"):
        loose.failed("timeout")
    with pytest.raises(ValueError, match="retry reason"):
        loose.retried("teapot")
    with pytest.raises(ValueError, match="token refresh result"):
        loose.token_refresh("maybe")
    with pytest.raises(ValueError, match="negative"):
        metrics.claimed(-1)
    text = metrics.render().decode()
    for refused in ("upsert", "timeout", "teapot", "maybe"):
        assert refused not in text
    assert value(samples(text), "calendar_sync_claims_total") == 0


def test_two_instances_do_not_share_values() -> None:
    first, second = Metrics(), Metrics()
    first.synced("insert", 0.1)
    first.claimed(3)
    first.backlog(BacklogSnapshot(by_state={"pending": 7}, oldest_pending_age_seconds=1.0, clinics_needing_reauth=2))
    first.feed_state("down")

    untouched = samples(second.render().decode())
    assert value(untouched, "calendar_sync_appointments_synced_total", action="insert") == 0
    assert value(untouched, "calendar_sync_claimed_appointments_total") == 0
    assert value(untouched, "calendar_sync_backlog", state="pending") == 0
    assert value(untouched, "calendar_sync_feed_state", calendar_sync_feed_state="starting") == 1
    assert value(samples(first.render().decode()), "calendar_sync_appointments_synced_total", action="insert") == 1


def test_a_given_registry_is_used() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.parked()
    assert metrics.registry is registry
    assert registry.get_sample_value("calendar_sync_appointments_parked_total") == 1


# --- backlog gauges ---------------------------------------------------------------------------


def test_backlog_gauges_before_the_first_snapshot_are_zero_and_visibly_stale(served: Served) -> None:
    found = served.scrape()
    for state in ("pending", "in_flight", "failed", "parked"):
        assert value(found, "calendar_sync_backlog", state=state) == 0
    assert value(found, "calendar_sync_backlog_updated_timestamp_seconds") == 0


def test_backlog_snapshot_sets_gauges_and_missing_states_are_zero(served: Served) -> None:
    served.metrics.backlog(
        BacklogSnapshot(
            by_state={"pending": 4, "in_flight": 2, "failed": 1, "parked": 3},
            oldest_pending_age_seconds=99.0,
            clinics_needing_reauth=2,
        )
    )
    row = {
        "by_state": {"pending": "3", "parked": 2, "synced": 10},
        "oldest_pending_age_seconds": "12.5",
        "clinics_needing_reauth": 1,
    }
    before = time.time()
    served.metrics.backlog(BacklogSnapshot.model_validate(row))
    after = time.time()

    found = served.scrape()
    assert value(found, "calendar_sync_backlog", state="pending") == 3
    assert value(found, "calendar_sync_backlog", state="parked") == 2
    # Left out of the later snapshot: 0, not the earlier snapshot's value.
    assert value(found, "calendar_sync_backlog", state="in_flight") == 0
    assert value(found, "calendar_sync_backlog", state="failed") == 0
    assert not any(name == "calendar_sync_backlog" and ("state", "synced") in labels for name, labels in found)
    assert value(found, "calendar_sync_oldest_pending_age_seconds") == 12.5
    assert value(found, "calendar_sync_clinics_needing_reauth") == 1
    assert before <= value(found, "calendar_sync_backlog_updated_timestamp_seconds") <= after


def test_budget_snapshot_sets_gauges_and_keeps_only_the_busiest_accounts(served: Served) -> None:
    first = {"project_used": 70, "project_limit": 9000, "account_limit": 500, "throttled": 1, "held_back_clinics": 2}
    served.metrics.google_budget(
        BudgetSnapshot.model_validate({**first, "accounts": [{"key": "a@x.com", "used": 60}], "next_budget_seconds": 3})
    )
    served.metrics.google_budget(
        BudgetSnapshot.model_validate(
            {
                **first,
                "accounts": [{"key": "b@x.com", "used": "9"}],
                "held_back_clinics": 0,
                "next_budget_seconds": None,
            }
        )
    )
    found = served.scrape()
    assert value(found, "calendar_sync_google_requests_in_window", budget="project", account="") == 70
    assert value(found, "calendar_sync_google_requests_in_window", budget="account", account="b@x.com") == 9
    # An account no longer among the busiest is dropped, not left at its old value.
    assert not any(("account", "a@x.com") in labels for _, labels in found)
    assert value(found, "calendar_sync_google_requests_limit", budget="project") == 9000
    assert value(found, "calendar_sync_google_requests_limit", budget="account") == 500
    assert value(found, "calendar_sync_google_accounts_throttled") == 1
    assert value(found, "calendar_sync_clinics_held_back") == 0


def test_the_backlog_reply_accepts_json_numbers_and_numeral_strings() -> None:
    snapshot = BacklogSnapshot.model_validate(
        {
            "by_state": {"pending": 3, "in_flight": 1.0, "failed": "0", "parked": "2"},
            "oldest_pending_age_seconds": "1.5e1",
            "clinics_needing_reauth": "4",
            "computed_at": "2030-01-01T00:00:00Z",  # a field added later is no reason to stop exporting
        }
    )
    assert snapshot == BacklogSnapshot(
        by_state={"pending": 3, "in_flight": 1, "failed": 0, "parked": 2},
        oldest_pending_age_seconds=15.0,
        clinics_needing_reauth=4,
    )
    assert all(type(count) is int for count in snapshot.by_state.values())
    assert BacklogSnapshot.model_validate(
        {"by_state": {}, "oldest_pending_age_seconds": 0, "clinics_needing_reauth": 0}
    ) == BacklogSnapshot(by_state={}, oldest_pending_age_seconds=0.0, clinics_needing_reauth=0)


GOOD_ROW: dict[str, Any] = {"by_state": {"pending": 1}, "oldest_pending_age_seconds": 1.0, "clinics_needing_reauth": 0}


@pytest.mark.parametrize(
    ("change", "field_name"),
    [
        ({"by_state": None}, "by_state"),
        ({"by_state": [["pending", 1]]}, "by_state"),
        ({"by_state": {"pending": "3.5"}}, "by_state.pending"),
        ({"by_state": {"pending": 2.5}}, "by_state.pending"),
        ({"by_state": {"parked": -1}}, "by_state.parked"),
        ({"by_state": {"failed": True}}, "by_state.failed"),
        ({"by_state": {"failed": None}}, "by_state.failed"),
        ({"by_state": {"in_flight": "three"}}, "by_state.in_flight"),
        ({"by_state": {"in_flight": " 3"}}, "by_state.in_flight"),
        ({"by_state": {"in_flight": "1_000"}}, "by_state.in_flight"),
        ({"by_state": {"pending": "NaN"}}, "by_state.pending"),
        ({"oldest_pending_age_seconds": "inf"}, "oldest_pending_age_seconds"),
        ({"oldest_pending_age_seconds": math.nan}, "oldest_pending_age_seconds"),
        ({"oldest_pending_age_seconds": math.inf}, "oldest_pending_age_seconds"),
        ({"oldest_pending_age_seconds": "-2"}, "oldest_pending_age_seconds"),
        ({"oldest_pending_age_seconds": ""}, "oldest_pending_age_seconds"),
        ({"oldest_pending_age_seconds": {"seconds": 1}}, "oldest_pending_age_seconds"),
        ({"clinics_needing_reauth": 1.5}, "clinics_needing_reauth"),
        ({"clinics_needing_reauth": False}, "clinics_needing_reauth"),
    ],
)
def test_the_backlog_reply_refuses_malformed_values_naming_the_field(change: dict[str, Any], field_name: str) -> None:
    # pydantic's ValidationError (a ValueError): the reply's name, then the field's, on a line of its own.
    with pytest.raises(ValueError, match=f"for BacklogSnapshot\n{re.escape(field_name)}\n"):
        BacklogSnapshot.model_validate({**GOOD_ROW, **change})


@pytest.mark.parametrize("missing", ["by_state", "oldest_pending_age_seconds", "clinics_needing_reauth"])
def test_the_backlog_reply_refuses_a_row_missing_a_field(missing: str) -> None:
    row = {key: value for key, value in GOOD_ROW.items() if key != missing}
    with pytest.raises(ValueError, match=f"for BacklogSnapshot\n{missing}\n  Field required"):
        BacklogSnapshot.model_validate(row)


def test_the_backlog_reply_refuses_a_row_that_is_not_an_object() -> None:
    not_a_row: Any = [GOOD_ROW]
    with pytest.raises(ValueError, match="for BacklogSnapshot\n  Input should be a valid dictionary"):
        BacklogSnapshot.model_validate(not_a_row)


# --- the feed's state -------------------------------------------------------------------------


def feed_states(metrics: Metrics) -> dict[str, float]:
    found = samples(metrics.render().decode())
    return {
        dict(labels)["calendar_sync_feed_state"]: sample
        for (name, labels), sample in found.items()
        if name == "calendar_sync_feed_state"
    }


def test_feed_state_is_an_enum_of_four_states(served: Served) -> None:
    assert feed_states(served.metrics) == {"starting": 1, "subscribed": 0, "down": 0, "disabled": 0}
    served.metrics.feed_state(FeedState.SUBSCRIBED)
    found = served.scrape()
    assert value(found, "calendar_sync_feed_state", calendar_sync_feed_state="subscribed") == 1
    assert value(found, "calendar_sync_feed_state", calendar_sync_feed_state="starting") == 0
    served.metrics.feed_state("down")
    assert feed_states(served.metrics) == {"starting": 0, "subscribed": 0, "down": 1, "disabled": 0}
    served.metrics.feed_state(None)
    assert feed_states(served.metrics) == {"starting": 0, "subscribed": 0, "down": 0, "disabled": 1}


def test_an_unknown_feed_state_is_refused_and_changes_nothing() -> None:
    metrics = Metrics()
    metrics.feed_state("subscribed")
    with pytest.raises(ValueError, match="feed state"):
        metrics.feed_state("reconnecting")
    assert feed_states(metrics)["subscribed"] == 1


# --- the HTTP server --------------------------------------------------------------------------


def test_metrics_endpoint_serves_prometheus_text_and_negotiates_openmetrics(served: Served) -> None:
    served.metrics.parked()
    plain = served.http.get("/metrics")
    assert plain.status_code == 200
    # prometheus_client 0.22+ answers a scraper that asks for nothing in particular with the
    # classic text format (CONTENT_TYPE_LATEST now names the 1.0.0 format, served on request).
    assert plain.headers["content-type"] == CONTENT_TYPE_PLAIN_0_0_4
    assert value(samples(plain.text), "calendar_sync_appointments_parked_total") == 1

    openmetrics = served.http.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert openmetrics.status_code == 200
    assert openmetrics.headers["content-type"].startswith(OPENMETRICS_CONTENT_TYPE.split(";")[0])
    assert openmetrics.text.rstrip().endswith("# EOF")


def test_head_answers_like_get_without_a_body(served: Served) -> None:
    for path in ("/metrics", "/healthz", "/readyz"):
        response = served.http.head(path)
        assert response.status_code == 200, path
        assert response.content == b"", path
        assert int(response.headers["content-length"]) > 0, path


def test_health_endpoints_answer_200_with_the_detail_when_ok(served: Served) -> None:
    served.checks.live = Health(True, {"loop_lag_seconds": 0.002})
    served.checks.ready = Health(True, {"feed": "subscribed", "database": True})
    live = served.http.get("/healthz")
    ready = served.http.get("/readyz")
    assert (live.status_code, live.headers["content-type"], live.json()) == (
        200,
        "application/json",
        {"ok": True, "loop_lag_seconds": 0.002},
    )
    assert (ready.status_code, ready.json()) == (200, {"ok": True, "feed": "subscribed", "database": True})
    assert ready.headers["cache-control"] == "no-store"


def test_health_endpoints_answer_503_with_the_detail_when_not_ok(served: Served) -> None:
    served.checks.ready = Health(False, {"database": False})
    ready = served.http.get("/readyz")
    assert (ready.status_code, ready.headers["content-type"], ready.json()) == (
        503,
        "application/json",
        {"ok": False, "database": False},
    )
    # Liveness is its own check: not ready is not dead.
    assert served.http.get("/healthz").status_code == 200
    served.checks.live = Health(False, {"loop": "stalled"})
    assert (served.http.get("/healthz").status_code, served.http.get("/healthz").json()) == (
        503,
        {"ok": False, "loop": "stalled"},
    )


def test_detail_cannot_contradict_ok(served: Served) -> None:
    served.checks.ready = Health(False, {"ok": True})
    response = served.http.get("/readyz")
    assert (response.status_code, response.json()) == (503, {"ok": False})


def test_a_raising_check_is_503_naming_only_the_exception_type(
    served: Served, capfd: pytest.CaptureFixture[str]
) -> None:
    secret = "postgresql://postgres:hunter2@db.example.supabase.co"
    served.checks.raise_on_ready = ConnectionRefusedError(f"could not reach {secret}")
    response = served.http.get("/readyz")
    assert (response.status_code, response.json()) == (503, {"ok": False, "error": "ConnectionRefusedError"})
    assert "hunter2" not in response.text
    out, err = capfd.readouterr()
    assert "hunter2" not in out + err
    # The server survives it.
    served.checks.raise_on_ready = None
    assert served.http.get("/readyz").status_code == 200


def test_a_detail_that_is_not_json_is_503(served: Served) -> None:
    served.checks.live = Health(True, {"since": object()})
    response = served.http.get("/healthz")
    assert (response.status_code, response.json()) == (503, {"ok": False, "error": "TypeError"})


def test_unknown_paths_are_404_and_other_methods_405(served: Served) -> None:
    for path in ("/", "/metrics/", "/health", "/readyz/extra"):
        assert served.http.get(path).status_code == 404, path
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        for path in ("/metrics", "/healthz", "/readyz"):
            response = served.http.request(method, path)
            assert response.status_code == 405, (method, path)
            assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}


def test_requests_are_not_logged(served: Served, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    for path in ("/metrics", "/healthz", "/readyz", "/nowhere"):
        served.http.get(path)
    served.http.post("/metrics")
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_port_is_unknown_until_started() -> None:
    server = HealthServer(Metrics(), host="127.0.0.1", port=0, liveness=Checks().liveness, readiness=Checks().readiness)
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.port
    server.stop()  # stopping a server that never started is harmless


def test_stop_is_idempotent_and_frees_the_port() -> None:
    checks = Checks()
    first = HealthServer(Metrics(), host="127.0.0.1", port=0, liveness=checks.liveness, readiness=checks.readiness)
    first.start()
    port = first.port
    with httpx.Client(timeout=5.0) as http:
        assert http.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        first.stop()
        first.stop()
        with pytest.raises(httpx.ConnectError):
            http.get(f"http://127.0.0.1:{port}/healthz")
        # Binding the same port again fails while anything still listens on it.
        second = HealthServer(
            Metrics(), host="127.0.0.1", port=port, liveness=checks.liveness, readiness=checks.readiness
        )
        second.start()
        try:
            assert second.port == port
            assert http.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        finally:
            second.stop()


def test_a_taken_port_is_a_clear_oserror() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        checks = Checks()
        server = HealthServer(
            Metrics(), host="127.0.0.1", port=port, liveness=checks.liveness, readiness=checks.readiness
        )
        with pytest.raises(OSError, match=f"/metrics.*127.0.0.1:{port}.*in use"):
            server.start()
        with pytest.raises(RuntimeError):
            _ = server.port  # nothing was left half-started


def test_starting_twice_is_refused(served: Served) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        served.server.start()
    assert served.http.get("/healthz").status_code == 200
