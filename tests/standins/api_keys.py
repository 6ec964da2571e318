"""Supabase's API keys as the hosted platform's API gateway handles them, for the REST and Realtime stand-ins.

A project has the legacy JWT keys (`anon`, `service_role`: HS256 JWTs signed with the project's JWT secret,
with a `role` claim and a ten-year `exp`) and, since 2025, a publishable key `sb_publishable_...` and secret
keys `sb_secret_...`, which are not JWTs. Supabase's docs ("Understanding API keys": how publishable and
secret keys are implemented) say what the gateway does with them, and the stand-ins imitate exactly that:

- The gateway reads the key from the `apikey` header (for a WebSocket: the `apikey` query parameter). A
  publishable or secret key is looked up in the project's key list and replaced by a short-lived JWT the
  gateway mints for its role (`anon` / `service_role`) and forwards to the service; an unknown one is refused
  with 401 "Invalid API key". A legacy JWT key is forwarded as it is, and refused with 401 "Legacy API keys
  are disabled" once the project has switched its legacy keys off (publishable and secret keys go on working;
  a user's session JWT in `Authorization` is not an API key and is not affected).
- `Authorization: Bearer <sb_ key>` ("Known limitations"): a publishable or secret key is not accepted there,
  except when the value exactly equals the `apikey` header. Hosted projects then answer as if only `apikey`
  were sent (observed: 200); the docs' own sentence says such a request is forwarded and rejected as not a
  JWT, which is also what the Supabase CLI's local gateway does. `bearer_api_key="forwarded"` gives that
  behaviour, so a client that relies on the exception can be caught.

What the stand-ins do not imitate: the gateway's refusal of secret keys sent from browsers (it matches on
`User-Agent`), per-key rate limits, several secret keys per project (there is one), key rotation and the
24-hour limit on Realtime connections authenticated by a publishable key. The minted JWT's claims are the
stand-in's own guess (`iss`, `role`, `iat`, `exp`); Supabase does not document them. The wording of the
"Legacy API keys are disabled" hint is the stand-in's own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any, Literal

import jwt

PUBLISHABLE_PREFIX = "sb_publishable_"
SECRET_PREFIX = "sb_secret_"
MINTED_LIFETIME_SECONDS = 3600
_LEGACY_LIFETIME_SECONDS = 10 * 365 * 24 * 3600

BearerApiKey = Literal["minted", "forwarded"]


def make_legacy_key(role: str, secret: str) -> str:
    """A key shaped like Supabase's legacy `anon` / `service_role` keys: an HS256 JWT that never expires soon."""
    issued = int(time.time())
    return jwt.encode(
        {"iss": "supabase", "role": role, "iat": issued, "exp": issued + _LEGACY_LIFETIME_SECONDS},
        secret,
        algorithm="HS256",
    )


def make_new_key(kind: Literal["publishable", "secret"], secret: str) -> str:
    """The project's `sb_publishable_...` or `sb_secret_...` key: opaque, the same for the same JWT secret, so the
    REST and the Realtime stand-in of one project know the same keys."""
    digest = hmac.new(secret.encode(), f"supabase {kind} api key".encode(), hashlib.sha256).digest()
    body = base64.urlsafe_b64encode(digest).decode().rstrip("=")[:32]
    return (PUBLISHABLE_PREFIX if kind == "publishable" else SECRET_PREFIX) + body


def is_new_key(value: str) -> bool:
    return value.startswith("sb_")


@dataclass(frozen=True)
class Refusal:
    """What the gateway answers instead of forwarding the request: an HTTP status and a JSON body."""

    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Admitted:
    """A key the gateway lets through, and the token it forwards to the service in its place."""

    role: str | None  # None for a legacy key: the service reads the role from the JWT itself
    token: str  # the JWT forwarded (the legacy key itself, or a JWT minted for the new key's role)
    minted: bool


class ProjectKeys:
    """One project's API keys and the gateway's check of them."""

    def __init__(self, jwt_secret: str, *, legacy_keys: bool = True) -> None:
        self.jwt_secret = jwt_secret
        self.legacy_keys = legacy_keys
        self.anon_key = make_legacy_key("anon", jwt_secret)
        self.service_role_key = make_legacy_key("service_role", jwt_secret)
        self.publishable_key = make_new_key("publishable", jwt_secret)
        self.secret_key = make_new_key("secret", jwt_secret)
        self._roles = {self.publishable_key: "anon", self.secret_key: "service_role"}

    def admit(self, apikey: str) -> Admitted | Refusal:
        """The gateway's check of the `apikey` header (or query parameter)."""
        if not apikey:
            return Refusal(
                401,
                {
                    "message": "No API key found in request",
                    "hint": "No `apikey` request header or url param was found.",
                },
            )
        if is_new_key(apikey):
            role = self._roles.get(apikey)
            if role is None:
                return _invalid()
            return Admitted(role, self.mint(role), minted=True)
        try:
            jwt.decode(apikey, self.jwt_secret, algorithms=["HS256", "HS384", "HS512"], options={"verify_exp": False})
        except jwt.PyJWTError:
            return _invalid()
        if not self.legacy_keys:
            return Refusal(
                401,
                {
                    "message": "Legacy API keys are disabled",
                    "hint": "The project's legacy anon and service_role keys are switched off: use its publishable"
                    " key (sb_publishable_...) or a secret key (sb_secret_...).",
                },
            )
        return Admitted(None, apikey, minted=False)

    def mint(self, role: str, lifetime_seconds: int = MINTED_LIFETIME_SECONDS) -> str:
        issued = int(time.time())
        return jwt.encode(
            {"iss": "supabase", "role": role, "iat": issued, "exp": issued + lifetime_seconds},
            self.jwt_secret,
            algorithm="HS256",
        )


def _invalid() -> Refusal:
    return Refusal(
        401, {"message": "Invalid API key", "hint": "Double check your Supabase `anon` or `service_role` API key."}
    )
