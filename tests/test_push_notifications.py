"""Google's push notifications end to end: the real daemon keeps an events.watch channel per calendar,
the Google stand-in POSTs its notifications to the daemon's public listener, and a receptionist's change
in Google reaches what the assistant offers without waiting for a poll."""

from __future__ import annotations

import datetime as dt
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import Clinic
from tests.daemon_harness import (
    Backend,
    DaemonThread,
    make_settings,
    running,
    store_connection,
    wait_until,
)
from tests.dates import upcoming
from tests.standins.google import Channel, GoogleStandIn
from tests.standins.postgres import scalar
from tests.standins.receptionist import Receptionist
from tests.standins.service import free_port
from tests.standins.vapi import Assistant
from tests.test_busy_mirror import TUESDAY, account, free_times, mirrored_at, receptionist

__all__ = ["account", "receptionist"]  # the busy mirror's fixtures, used here too

NOTIFICATIONS = "/google/calendar-notifications"


@contextmanager
def pushing(backend: Backend, google: GoogleStandIn, **overrides: Any) -> Iterator[DaemonThread]:
    """The daemon with a public address: push notifications, the safety-net listing an hour away."""
    port = free_port()
    settings = make_settings(
        backend,
        google,
        public_url=f"https://127.0.0.1:{port}",
        public_host="127.0.0.1",
        public_port=port,
        channel_check_seconds=0.2,
        **{"mirror_safety_net_seconds": 3600, **overrides},
    )
    with running(settings) as runner:
        yield runner


def notify_as_google(runner: DaemonThread, channel: Channel, message_number: str, **headers: str) -> int:
    """POST to the daemon's listener what Google sends for a change on `channel` (`headers` replace parts)."""
    assert runner.daemon.public is not None
    sent = {
        "X-Goog-Channel-ID": channel.id,
        "X-Goog-Resource-ID": channel.resource_id,
        "X-Goog-Resource-State": "exists",
        "X-Goog-Message-Number": message_number,
        "X-Goog-Channel-Token": channel.token or "",
        **headers,
    }
    url = f"http://127.0.0.1:{runner.daemon.public.port}{NOTIFICATIONS}"
    return httpx.post(url, headers=sent, timeout=5).status_code


def live_channels(admin: psycopg.Connection) -> list[tuple[str, str, Any]]:
    rows = admin.execute(
        "select id, resource_id, confirmed_at from public.calendar_channels where retired_at is null"
    ).fetchall()
    return [tuple(row) for row in rows]


def confirmed(admin: psycopg.Connection) -> bool:
    return any(row[2] is not None for row in live_channels(admin))


def listings(google: GoogleStandIn) -> int:
    return sum(1 for r in google.requests() if r.method == "GET" and r.path.endswith("/events"))


def test_a_change_in_google_reaches_the_assistant_through_a_notification(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, assistant: Assistant,
    receptionist: Receptionist, clinic: Clinic,
) -> None:  # fmt: skip
    day = upcoming(TUESDAY)
    with pushing(backend, google):
        wait_until(lambda: confirmed(admin) and mirrored_at(admin) is not None, what="a confirmed channel")
        assert "12:00" in free_times(assistant, day)
        before = listings(google)
        receptionist.add(day, "12:00", "13:00")
        wait_until(lambda: "12:00" not in free_times(assistant, day), timeout=10, what="the lunch offered no more")
        # One incremental listing, because of the notification: the safety net is an hour away.
        assert listings(google) - before <= 2
    [channel] = google.channels()
    assert channel.address.endswith(NOTIFICATIONS) and channel.token
    delivered = [n for n in google.notifications() if n.channel_id == channel.id]
    assert [n.state for n in delivered][:2] == ["sync", "exists"] and {n.status for n in delivered} == {200}
    # Only a hash of the channel's secret token is stored.
    assert scalar(admin, "select token_hash from public.calendar_channels") != channel.token


def test_forged_replayed_and_stale_notifications_change_nothing(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, receptionist: Receptionist, clinic: Clinic,
    account: str,
) -> None:  # fmt: skip
    with pushing(backend, google) as runner:
        wait_until(lambda: confirmed(admin), what="a confirmed channel")
        [channel] = google.channels()
        assert runner.daemon.public is not None
        url = f"http://127.0.0.1:{runner.daemon.public.port}{NOTIFICATIONS}"

        def notify(**headers: str) -> int:
            return notify_as_google(runner, channel, "1000", **headers)

        def notified_at() -> Any:
            return scalar(admin, "select notified_at from public.calendar_mirrors where clinic_id = %s", (clinic.id,))

        before = notified_at()
        assert notify(**{"X-Goog-Channel-ID": "0" * 32}) == 404  # unknown channel
        assert notify(**{"X-Goog-Channel-Token": "guessed"}) == 404  # wrong secret
        assert notify(**{"X-Goog-Resource-ID": "another-calendar"}) == 404
        assert notify(**{"X-Goog-Message-Number": "1"}) == 404  # one Google sent already: a replay
        assert notify(**{"X-Goog-Resource-State": "bogus"}) == 404
        assert notify(**{"X-Goog-Message-Number": "not-a-number"}) == 404
        assert httpx.get(url, timeout=5).status_code == 405
        assert httpx.post(url.replace(NOTIFICATIONS, "/metrics"), timeout=5).status_code == 404
        assert notified_at() == before
        assert notify() == 200  # the genuine article
        assert notified_at() != before
        assert notify() == 404  # the same message again

        # A channel that was replaced (the clinic reconnected) is stale: refused, and stopped at Google.
        store_connection(admin, clinic.id, account, google.issue_refresh_token(account))
        wait_until(lambda: google.channels()[0].state == "stopped", what="the old channel stopped at Google")
        assert notify(**{"X-Goog-Message-Number": "2000"}) == 404
        wait_until(lambda: len(live_channels(admin)) == 1 and confirmed(admin), what="the new channel")

        # Refusals are rate limited: a client that keeps guessing gets 429 before the database is asked.
        answers = [notify(**{"X-Goog-Channel-Token": f"guess-{n}"}) for n in range(40)]
        assert 429 in answers


def test_channels_are_renewed_before_they_expire(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, clinic: Clinic, account: str
) -> None:
    with pushing(backend, google, channel_ttl_seconds=60, channel_renew_before_seconds=59):
        wait_until(lambda: len(google.channels()) >= 2, what="a renewal")
        wait_until(lambda: google.channels()[0].state == "stopped", what="the old channel stopped")
    reasons = [row[0] for row in admin.execute("select retired_because from public.calendar_channels").fetchall()]
    assert "replaced" in reasons  # the old one served until the new one was there


def test_a_lost_channel_is_noticed_and_replaced(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, receptionist: Receptionist,
    assistant: Assistant, clinic: Clinic,
) -> None:  # fmt: skip
    day = upcoming(TUESDAY)
    with pushing(backend, google, mirror_safety_net_seconds=1):
        wait_until(lambda: confirmed(admin), what="a confirmed channel")
        [first] = google.channels()
        google.lose_channel(first.id)
        receptionist.add(day, "12:00", "13:00")  # announced to nobody
        wait_until(lambda: "12:00" not in free_times(assistant, day), what="the safety net's listing")
        wait_until(lambda: len(google.channels()) >= 2 and confirmed(admin), what="a new channel")
        assert len(live_channels(admin)) == 1
    because = scalar(admin, "select retired_because from public.calendar_channels where id = %s", (first.id,))
    assert because.startswith("lost")


def test_a_channel_google_never_confirms_is_replaced(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, clinic: Clinic, account: str
) -> None:
    google.pause_notifications()
    with pushing(backend, google, channel_confirm_seconds=1):
        wait_until(lambda: len(google.channels()) >= 2, what="the unconfirmed channel replaced")
    google.resume_notifications()
    reasons = {row[0] for row in admin.execute("select retired_because from public.calendar_channels").fetchall()}
    assert "lost: Google never confirmed it" in reasons


def test_without_a_public_address_the_daemon_polls_and_makes_no_channel(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, clinic: Clinic, account: str
) -> None:
    with running(make_settings(backend, google, mirror_interval_seconds=0.3)) as runner:
        wait_until(lambda: mirrored_at(admin) is not None, what="the first listing")
        assert runner.daemon.public is None
    assert google.channels() == []
    assert scalar(admin, "select count(*) from public.calendar_channels") == 0


@pytest.mark.parametrize("address", ["http://sync.example.com", "sync.example.com"])
def test_a_public_address_must_be_https(backend: Backend, google: GoogleStandIn, address: str) -> None:
    with pytest.raises(ValueError, match="PUBLIC_URL must be the daemon's https:// address"):
        make_settings(backend, google, public_url=address)


def test_channel_ids_and_tokens_are_fresh_for_every_channel(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, clinic: Clinic, account: str
) -> None:
    with pushing(backend, google, channel_ttl_seconds=60, channel_renew_before_seconds=59):
        wait_until(lambda: len(google.channels()) >= 2, what="a renewal")
    channels = google.channels()[:2]
    assert channels[0].id != channels[1].id and channels[0].token != channels[1].token
    assert all(uuid.UUID(channel.id) for channel in channels)
    assert all(len(channel.token or "") >= 40 for channel in channels)
    assert all(
        dt.datetime.fromtimestamp(channel.expiration / 1000, dt.UTC) > dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        for channel in channels
    )


def test_an_expired_channel_is_replaced_and_its_notifications_refused(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, clinic: Clinic, account: str
) -> None:
    with pushing(backend, google) as runner:
        wait_until(lambda: confirmed(admin), what="a confirmed channel")
        [first] = google.channels()
        # The channel's time runs out (the daemon was down past its expiration, say).
        google.expire_channels([first.id])
        admin.execute("update public.calendar_channels set expires_at = now() - interval '1 second'")
        wait_until(lambda: len(google.channels()) == 2 and confirmed(admin), what="a new channel")
        assert notify_as_google(runner, first, "99") == 404


def test_a_public_port_that_is_taken_stops_the_daemon_with_the_reason(
    backend: Backend, google: GoogleStandIn, admin: psycopg.Connection, clinic: Clinic, account: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        settings = make_settings(
            backend, google, public_url=f"https://127.0.0.1:{port}", public_host="127.0.0.1", public_port=port
        )
        runner = DaemonThread(settings).start()
        wait_until(lambda: runner.error is not None, what="the daemon to give up")
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            runner.stop()
