"""Vapi's REST API (https://api.vapi.ai), as `vapi-sync`, `verify` and the daemon's re-syncs use it: tools,
custom credentials and assistants, over httpx with the organisation's private key as a bearer token.

Plain httpx rather than the official `vapi-server-sdk`: the SDK (3.0.0) has no client for credentials, and
the four requests here are small JSON bodies whose shapes follow the SDK's DTOs (`CreateFunctionToolDto`,
`UpdateToolsRequestBody_Function`, `CreateCustomCredentialDto`, `UpdateAssistantDto`).

Every failure is a `VapiError` with a sentence for the operator, never the API key or a clinic key (messages
Vapi sends back are scrubbed of both). What is retried within one call:
- 429 (rate limited): always (nothing was done), after Retry-After when it is within `retry_after_cap`
  seconds, else given up at once with `retry_after` set (the daemon's next try waits that long);
- 5xx, timeouts and dropped connections: for reads and updates (GET, PATCH: repeating them is harmless);
  a create (POST) only when the request never reached Vapi (the connection could not be made), since
  Vapi may have made the tool or credential already (a tool made so is found by the next sync);
- 401/403 (the key is wrong or lacks access), 404 (`VapiNotFound`: deleted in the dashboard) and other 4xx
  never: repeating them cannot help.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

import httpx
from loguru import logger

from daemon.backoff import backoff_delay

Sleep = Callable[[float], Awaitable[None]]


async def _pause(seconds: float) -> None:
    """How a retry waits (the tests record it instead)."""
    await asyncio.sleep(seconds)


ATTEMPTS = 4
RETRY_AFTER_CAP_SECONDS = 30.0
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 8.0


class VapiError(Exception):
    """Vapi's API failed or refused; the message says what to do. `retry_after`: seconds Vapi asked to wait."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class VapiNotFound(VapiError):
    """The tool, credential or assistant is not (or no longer) in Vapi."""


class VapiUnauthorized(VapiError):
    """Vapi refused VAPI_API_KEY."""


def retry_after_seconds(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


def _tries(attempts: int) -> str:
    return "1 try" if attempts == 1 else f"{attempts} tries"


def _secrets_in(value: Any) -> Iterable[str]:
    """The tokens a request body carries (a credential's), to be kept out of error messages."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key in {"token", "secretKey", "clientSecret"} and isinstance(item, str) and item:
                yield item
            else:
                yield from _secrets_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _secrets_in(item)


def _vapi_message(response: httpx.Response) -> str:
    """What Vapi said was wrong (its `message`, a sentence or a list of them), briefly."""
    try:
        body = response.json()
    except ValueError:
        return ""
    message = body.get("message") if isinstance(body, Mapping) else None
    if isinstance(message, list):
        message = "; ".join(str(m) for m in message)
    return str(message)[:300] if message else ""


class VapiClient:
    """One organisation's Vapi API. Use as an async context manager (or call `aclose`)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_seconds: float = 10.0,
        attempts: int = ATTEMPTS,
        retry_after_cap_seconds: float = RETRY_AFTER_CAP_SECONDS,
        sleep: Sleep | None = None,
    ) -> None:
        self._api_key = api_key
        self._timeout = timeout_seconds
        self._attempts = attempts
        self._retry_after_cap = retry_after_cap_seconds
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=timeout_seconds,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- tools ---------------------------------------------------------------------------------------

    async def get_tool(self, tool_id: str) -> dict[str, Any]:
        return await self._object("GET", f"/tool/{tool_id}", what=f"tool {tool_id}")

    async def list_tools(self, limit: int = 1000) -> list[dict[str, Any]]:
        tools = await self._request("GET", "/tool", params={"limit": limit}, what="the tool list")
        return [tool for tool in tools if isinstance(tool, dict)] if isinstance(tools, list) else []

    async def create_tool(self, body: Mapping[str, Any]) -> dict[str, Any]:
        name = body.get("function", {}).get("name", "?")
        return await self._object("POST", "/tool", body, what=f"creating tool {name}")

    async def update_tool(self, tool_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._object("PATCH", f"/tool/{tool_id}", body, what=f"updating tool {tool_id}")

    # --- credentials ---------------------------------------------------------------------------------

    async def get_credential(self, credential_id: str) -> dict[str, Any]:
        return await self._object("GET", f"/credential/{credential_id}", what=f"credential {credential_id}")

    async def create_credential(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._object("POST", "/credential", body, what="creating the credential")

    async def update_credential(self, credential_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._object(
            "PATCH", f"/credential/{credential_id}", body, what=f"updating credential {credential_id}"
        )

    # --- assistants ----------------------------------------------------------------------------------

    async def get_assistant(self, assistant_id: str) -> dict[str, Any]:
        return await self._object("GET", f"/assistant/{assistant_id}", what=f"assistant {assistant_id}")

    async def update_assistant(self, assistant_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._object(
            "PATCH", f"/assistant/{assistant_id}", body, what=f"updating assistant {assistant_id}"
        )

    # --- one request, with its retries -----------------------------------------------------------------

    async def _object(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, *, what: str
    ) -> dict[str, Any]:
        answer = await self._request(method, path, body, what=what)
        if not isinstance(answer, dict):
            raise VapiError(f"Vapi answered {what} with something other than a JSON object")
        return answer

    async def _request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        what: str,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        secrets = [self._api_key, *_secrets_in(body)]
        repeatable = method != "POST"
        for attempt in range(1, self._attempts + 1):
            last = attempt == self._attempts
            try:
                response = await self._http.request(method, path, json=body, params=params)
            except httpx.ConnectError as error:  # never reached Vapi: any request may be repeated
                failure = VapiError(f"Vapi unreachable for {what} ({type(error).__name__}, {_tries(attempt)})")
                if last:
                    raise failure from None
                await self._wait(attempt, None, what, f"could not connect ({type(error).__name__})")
                continue
            except httpx.TimeoutException as error:
                failure = VapiError(
                    f"Vapi did not answer {what} within {self._timeout:g}s ({_tries(attempt)})"
                    + ("" if repeatable else "; not repeated, as Vapi may have done it: the next sync finds it")
                )
                if last or not repeatable or isinstance(error, httpx.PoolTimeout):
                    raise failure from None
                await self._wait(attempt, None, what, "timed out")
                continue
            except httpx.TransportError as error:
                failure = VapiError(f"Vapi's connection dropped during {what} ({type(error).__name__})")
                if last or not repeatable:
                    raise failure from None
                await self._wait(attempt, None, what, f"connection dropped ({type(error).__name__})")
                continue
            status = response.status_code
            if status < 400:
                return response.json() if response.content else None
            said = self._scrub(_vapi_message(response), secrets)
            if status in (401, 403):
                raise VapiUnauthorized(
                    f"Vapi refused VAPI_API_KEY for {what} (HTTP {status}{': ' + said if said else ''}): set it to"
                    " the organisation's private API key (Vapi dashboard -> API Keys)",
                    status=status,
                )
            if status == 404:
                raise VapiNotFound(f"{what}: not found in Vapi (HTTP 404)", status=status)
            if status == 429:
                wait = retry_after_seconds(response.headers.get("Retry-After"))
                if last or (wait is not None and wait > self._retry_after_cap):
                    later = f"; Vapi asks to wait {wait:.0f}s" if wait is not None else ""
                    raise VapiError(
                        f"Vapi rate-limited {what} (HTTP 429, {_tries(attempt)}){later}",
                        status=status,
                        retry_after=wait,
                    )
                await self._wait(attempt, wait, what, "rate limited (HTTP 429)")
                continue
            if status >= 500:
                if last or not repeatable:
                    tail = "" if repeatable else "; not repeated, as Vapi may have done it: the next sync finds it"
                    raise VapiError(f"Vapi failed {what} with HTTP {status} ({_tries(attempt)}){tail}", status=status)
                await self._wait(attempt, None, what, f"HTTP {status}")
                continue
            raise VapiError(f"Vapi refused {what} (HTTP {status}{': ' + said if said else ''})", status=status)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _wait(self, attempt: int, retry_after: float | None, what: str, why: str) -> None:
        delay = (
            retry_after
            if retry_after is not None
            else backoff_delay(attempt, BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS)
        )
        logger.warning(
            "Vapi: {} for {}; trying again in {:.1f}s (attempt {} of {})", why, what, delay, attempt + 1, self._attempts
        )
        await (self._sleep or _pause)(delay)

    @staticmethod
    def _scrub(text: str, secrets: Iterable[str]) -> str:
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***")
        return text
