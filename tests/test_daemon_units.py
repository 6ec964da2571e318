"""The daemon's pure parts: event ids, Google error classification, backoff, rate limits, secrets."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httplib2
import pytest
from cryptography.fernet import Fernet
from googleapiclient.errors import HttpError
from pydantic import ValidationError

from daemon.backoff import backoff_delay
from daemon.calendar import Verdict, classify, event_id_for
from daemon.config import Settings
from daemon.crypto import TokenCipher


def google_error(status: int, reason: str = "") -> HttpError:
    body = {"error": {"code": status, "message": "x", "errors": [{"domain": "global", "reason": reason}]}}
    return HttpError(httplib2.Response({"status": status}), json.dumps(body).encode(), uri="http://x")


def test_event_ids_are_valid_for_google_and_stable() -> None:
    appointment = uuid.uuid4()
    event_id = event_id_for(appointment)
    assert re.fullmatch(r"[a-v0-9]{26}", event_id)
    assert event_id == event_id_for(uuid.UUID(str(appointment)))
    assert len({event_id_for(uuid.uuid4()) for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    ("status", "reason", "verdict"),
    [
        (401, "authError", Verdict.UNAUTHORIZED),
        (429, "rateLimitExceeded", Verdict.RETRY),
        (403, "rateLimitExceeded", Verdict.RETRY),
        (403, "userRateLimitExceeded", Verdict.RETRY),
        (403, "quotaExceeded", Verdict.QUOTA),
        (500, "backendError", Verdict.RETRY),
        (503, "", Verdict.RETRY),
        (400, "invalid", Verdict.FAILED),
        (403, "forbidden", Verdict.FAILED),
        (404, "notFound", Verdict.FAILED),
    ],
)
def test_google_errors_are_classified(status: int, reason: str, verdict: Verdict) -> None:
    result = classify(google_error(status, reason), what="insert")
    assert result.verdict is verdict
    assert result.error is not None and str(status) in result.error and reason in result.error


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    assert [backoff_delay(n, 2.0, 60.0, rng=lambda: 1.0) for n in (1, 2, 3, 4, 5, 6, 7)] == [
        2.0,
        4.0,
        8.0,
        16.0,
        32.0,
        60.0,
        60.0,
    ]
    assert backoff_delay(3, 2.0, 60.0, rng=lambda: 0.0) == 4.0
    assert backoff_delay(0, 2.0, 60.0, rng=lambda: 1.0) == 2.0


def test_token_cipher_rotates_keys() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    stored = TokenCipher(old).encrypt("1//refresh-token")
    rotated = TokenCipher(f"{new},{old}")
    assert rotated.decrypt(stored) == "1//refresh-token"
    assert TokenCipher(new).decrypt(rotated.encrypt("x")) == "x"
    with pytest.raises(ValueError, match="cannot be decrypted"):
        TokenCipher(new).decrypt(stored)
    for bad in ("", "not-a-key", ","):
        with pytest.raises(ValueError, match="TOKEN_ENCRYPTION_KEY"):
            TokenCipher(bad)


def test_settings_need_a_database_and_google_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SYNC_DATABASE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_CLIENT_ID", "id")
    monkeypatch.setenv("GOOGLE_CLIENT_SECRET", "secret")
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", Fernet.generate_key().decode())
    with pytest.raises(ValidationError, match="SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY"):
        Settings()
    monkeypatch.setenv("SUPABASE_URL", "https://ref.supabase.co")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "service-key")
    assert Settings().database_backend == "supabase"
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@db/postgres")
    assert Settings().database_backend == "postgres"
    monkeypatch.setenv("SYNC_DATABASE", "supabase")
    assert Settings().database_backend == "supabase"
    monkeypatch.delenv("GOOGLE_CLIENT_SECRET")
    with pytest.raises(ValidationError, match="google_client_secret"):
        Settings()
