"""The clinic-facing pages on the public listener: clinics connect their Google Calendar themselves, and see
how their bookings stand.

- `GET /connect/<secret>` (a connect link from `clinic-sync connect-link`): names the clinic and says what
  will be shared and why; its form (POST, CSRF token bound to the link) records a fresh OAuth state and PKCE
  verifier on the link and sends the browser to Google's consent as a Web application client
  (`access_type=offline`, `prompt=consent`, S256).
- `GET /connect/callback`: Google's answer. Accepted only for the state of an open link; the code is exchanged
  (with the link's verifier), the new token reads the clinic's calendar, and the connection is stored and the
  link spent in one transaction (which resumes parked bookings; the channel keeper starts the calendar's push
  channel by itself). Shows the account, calendar and zone, with the same warnings as `connect-google`.
- `GET /clinic/<secret>` (a status link from `clinic-sync status-link`): the connection, upcoming bookings with
  their sync state, failures with their reason, and a "Reconnect Google" form that makes a fresh connect link.

Every refusal (a used, expired, withdrawn or unknown link, a denied consent, a state that matches no consent in
progress, a calendar the account cannot read, Google unreachable) is a page saying so, and stores nothing.
Link secrets and OAuth states reach the database only to be hashed there; nothing secret is logged. Every
answer carries a strict CSP (no scripts at all), no referrer, no framing, no caching. Each client address has
a request budget and a smaller budget of refusals (guessing links): beyond either it is answered 429.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import urllib.parse
from collections.abc import Mapping
from typing import Any, Protocol

from jinja2 import Environment, PackageLoader
from loguru import logger
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from daemon.config import Settings
from daemon.crypto import TokenCipher
from daemon.domain.clinic_links import LinkTarget
from daemon.google_connect import ConnectError, check_grant, consent_url, exchange_code, web_flow
from daemon.store import Store, StoreError
from daemon.tokens import CALENDAR_SCOPE

CALLBACK_PATH = "/connect/callback"
STYLESHEET_PATH = "/pages/pages.css"


class Limiter(Protocol):
    def blocked(self, client: str) -> bool: ...

    def refused(self, client: str) -> None: ...


# What each link state means to the person holding the link: (HTTP status, title, explanation).
LINK_REFUSALS: dict[str, tuple[int, str, str]] = {
    "unknown": (
        404,
        "This link is not valid",
        "Check that you opened the whole link from the message you were sent. If it still does not work, ask"
        " whoever sent it for a new one.",
    ),
    "used": (
        410,
        "This link has already been used",
        "Each link works once. If you need to connect the calendar again, ask for a new link, or use"
        " \u201cReconnect Google\u201d on your clinic\u2019s status page.",
    ),
    "expired": (
        410,
        "This link has expired",
        "For safety, links stop working after a while. Ask whoever sent it for a new one.",
    ),
    "revoked": (
        410,
        "This link was withdrawn",
        "Whoever sent it has withdrawn it. Ask them for a new one.",
    ),
}


def public_url_of(settings: Settings) -> str:
    assert settings.public_url is not None
    return settings.public_url


def connect_url(public_url: str, secret: str) -> str:
    return f"{public_url}/connect/{secret}"


def status_url(public_url: str, secret: str) -> str:
    return f"{public_url}/clinic/{secret}"


MAX_FORM_BYTES = 4096


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form (the pages' forms carry one token); anything else is an empty form."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
    return {name: values[0] for name, values in fields.items()}


class ClinicPages:
    """The pages' routes, for the public listener's app."""

    def __init__(self, settings: Settings, store: Store, *, requests: Limiter, refusals: Limiter) -> None:
        self._settings = settings
        self._store = store
        self._requests = requests
        self._refusals = refusals
        self._public_url = public_url_of(settings)
        self._redirect_uri = self._public_url + CALLBACK_PATH
        self._cipher = TokenCipher(settings.token_encryption_key.get_secret_value())
        # Form tokens: an HMAC of the link's secret under a key derived from TOKEN_ENCRYPTION_KEY (the same on
        # every replica), so a form works wherever it is posted and only for its own link.
        self._form_key = hashlib.sha256(
            b"clinic-pages-form:" + settings.token_encryption_key.get_secret_value().encode()
        ).digest()
        self._templates = Environment(loader=PackageLoader("daemon", "templates"), autoescape=True)
        google = urllib.parse.urlsplit(settings.google_auth_uri)
        self._csp = (
            "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none';"
            f" form-action 'self' {google.scheme}://{google.netloc}"
        )

    def routes(self) -> list[BaseRoute]:
        return [
            Route(STYLESHEET_PATH, self._stylesheet, methods=["GET"]),
            Route(CALLBACK_PATH, self._callback, methods=["GET"]),
            Route("/connect/{secret}", self._connect_page, methods=["GET"]),
            Route("/connect/{secret}", self._start_consent, methods=["POST"]),
            Route("/clinic/{secret}", self._status_page, methods=["GET"]),
            Route("/clinic/{secret}/reconnect", self._reconnect, methods=["POST"]),
        ]

    # --- the connect link ---------------------------------------------------------------------------------

    async def _connect_page(self, request: Request) -> Response:
        async def answer(client: str) -> Response:
            secret = request.path_params["secret"]
            link = await self._store.open_link(secret, "connect")
            if not link.open:
                return self._link_refused(client, link.state)
            return self._render(
                "connect.html",
                200,
                link=link,
                scope=CALENDAR_SCOPE,
                action=f"/connect/{secret}",
                form_token=self._form_token("connect", secret),
            )

        return await self._guarded(request, answer)

    async def _start_consent(self, request: Request) -> Response:
        async def answer(client: str) -> Response:
            secret = request.path_params["secret"]
            form = await _form(request)
            if not self._form_ok(form, "connect", secret):
                return self._form_refused(client)
            state = secrets.token_urlsafe(32)
            verifier = secrets.token_urlsafe(64)  # 86 characters: RFC 7636 asks for 43-128
            flow = web_flow(self._settings, self._redirect_uri, state=state, code_verifier=verifier)
            link_state = await self._store.begin_consent(secret, state, self._cipher.encrypt(verifier))
            if link_state != "open":
                return self._link_refused(client, link_state)
            return self._redirect(consent_url(flow))

        return await self._guarded(request, answer)

    async def _callback(self, request: Request) -> Response:
        async def answer(client: str) -> Response:
            params = request.query_params
            state = params.get("state") or ""
            link = await self._store.consent_link(state) if state else LinkTarget(state="unknown")
            if link.state == "unknown":
                self._refusals.refused(client)
                return self._refusal(
                    400,
                    "This answer from Google does not match a connection in progress",
                    "Nothing was stored. Open the link you were sent again and press \u201cContinue to Google\u201d"
                    " once more, in the same browser.",
                )
            if not link.open:
                return self._link_refused(client, link.state)
            if params.get("error"):
                denied = params["error"] == "access_denied"
                return self._refusal(
                    403 if denied else 400,
                    "Google Calendar was not connected",
                    (
                        "You chose not to allow access, so nothing was stored. To try again, open the link you"
                        " were sent once more."
                        if denied
                        else "Google did not grant access, so nothing was stored. Open the link you were sent"
                        " once more to try again."
                    ),
                    clinic=link.clinic_name,
                )
            code = params.get("code")
            if not code or link.code_verifier_encrypted is None or link.clinic_id is None:
                return self._refusal(
                    400, "Google's answer had no authorisation code", "Nothing was stored.", clinic=link.clinic_name
                )
            flow = web_flow(
                self._settings,
                self._redirect_uri,
                state=state,
                code_verifier=self._cipher.decrypt(link.code_verifier_encrypted),
            )
            try:
                token = await asyncio.to_thread(exchange_code, flow, code)
                grant = await check_grant(
                    self._settings, self._store, self._cipher, link.clinic_id, link.calendar_id, token
                )
            except ConnectError as error:
                logger.warning("a clinic's connect link did not connect Google: {}", error)
                unreachable = "could not be reached" in str(error)
                return self._refusal(
                    502 if unreachable else 422,
                    "Google Calendar was not connected",
                    f"{str(error)[:1].upper()}{str(error)[1:]}.".replace("..", "."),
                    clinic=link.clinic_name,
                )
            stored = await self._store.complete_consent(state, **grant.connection())
            if stored != "open":
                return self._link_refused(client, stored)
            logger.info("clinic {} connected Google Calendar through a connect link", link.clinic_id)
            return self._render(
                "connected.html", 200, result=grant.result(link.clinic_name, link.time_zone), clinic=link
            )

        return await self._guarded(request, answer)

    # --- the status link ---------------------------------------------------------------------------------

    async def _status_page(self, request: Request) -> Response:
        async def answer(client: str) -> Response:
            secret = request.path_params["secret"]
            page = await self._store.status_page(secret)
            if page.state != "open":
                return self._link_refused(client, page.state)
            return self._render(
                "status.html",
                200,
                page=page,
                action=f"/clinic/{secret}/reconnect",
                form_token=self._form_token("status", secret),
            )

        return await self._guarded(request, answer)

    async def _reconnect(self, request: Request) -> Response:
        async def answer(client: str) -> Response:
            secret = request.path_params["secret"]
            form = await _form(request)
            if not self._form_ok(form, "status", secret):
                return self._form_refused(client)
            issued = await self._store.reconnect_link(secret)
            if issued is None:
                return self._link_refused(client, (await self._store.status_page(secret)).state)
            return self._redirect(f"/connect/{issued.secret}")

        return await self._guarded(request, answer)

    # --- common -----------------------------------------------------------------------------------------

    async def _stylesheet(self, request: Request) -> Response:
        source, _, _ = self._templates.loader.get_source(self._templates, "pages.css")  # type: ignore[union-attr]
        return self._secured(Response(source, media_type="text/css", headers={"Cache-Control": "max-age=3600"}))

    async def _guarded(self, request: Request, answer: Any) -> Response:
        client = request.client.host if request.client else "unknown"
        if self._requests.blocked(client) or self._refusals.blocked(client):
            return self._refusal(429, "Too many requests", "Please wait a minute, then try again.", retry_after=60)
        self._requests.refused(client)  # every request spends from the client's request budget
        try:
            response: Response = await answer(client)
        except StoreError as error:
            logger.warning("a clinic page could not reach the database: {}", error)
            return self._refusal(503, "Something went wrong on our side", "Nothing was changed. Try again shortly.")
        return response

    def _form_token(self, purpose: str, secret: str) -> str:
        return hmac.new(self._form_key, f"{purpose}:{secret}".encode(), hashlib.sha256).hexdigest()

    def _form_ok(self, form: Mapping[str, Any], purpose: str, secret: str) -> bool:
        token = form.get("form_token")
        return isinstance(token, str) and hmac.compare_digest(token, self._form_token(purpose, secret))

    def _form_refused(self, client: str) -> Response:
        self._refusals.refused(client)
        return self._refusal(
            403,
            "This form could not be accepted",
            "Nothing was changed. Go back to the link you were sent, reload the page and try again.",
        )

    def _link_refused(self, client: str, state: str) -> Response:
        if state == "unknown":
            self._refusals.refused(client)
        status, title, text = LINK_REFUSALS.get(state, LINK_REFUSALS["unknown"])
        return self._refusal(status, title, text)

    def _refusal(
        self, status: int, title: str, text: str, *, clinic: str = "", retry_after: int | None = None
    ) -> Response:
        response = self._render("refused.html", status, title=title, text=text, clinic=clinic)
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response

    def _render(self, template: str, status: int, **context: Any) -> Response:
        body = self._templates.get_template(template).render(stylesheet=STYLESHEET_PATH, **context)
        return self._secured(HTMLResponse(body, status_code=status))

    def _redirect(self, location: str) -> Response:
        return self._secured(RedirectResponse(location, status_code=303))

    def _secured(self, response: Response) -> Response:
        response.headers["Content-Security-Policy"] = self._csp
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers.setdefault("Cache-Control", "no-store")
        return response
