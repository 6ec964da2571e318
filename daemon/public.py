"""The daemon's public listener: what reaches it through the operator's TLS terminator at PUBLIC_URL.

Its own port (PUBLIC_HOST:PUBLIC_PORT), nothing of metrics or health on it. Today it takes Google's
push notifications: an empty POST whose X-Goog-* headers name a channel. The database accepts one
only with a live channel's id, its resource id, its secret token and a message number it has not seen
(a forged, replayed or stale one changes nothing and is answered 404); an accepted one makes the
calendar due for a listing, which this replica starts at once (coalesced: a listing under way lists
once more). A client sending refused requests is slowed down (429) before they reach the database.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Callable, Sequence

import uvicorn
from loguru import logger
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from daemon.channels import NOTIFICATIONS_PATH
from daemon.store import Store, StoreError

# Refused requests a client may send at once, and how many a second it earns back.
REFUSALS_BURST = 20
REFUSALS_PER_SECOND = 1.0
STATES = frozenset({"sync", "exists", "not_exists"})


class RefusalLimiter:
    """A token bucket per client address, drained only by refused requests."""

    def __init__(self, burst: int = REFUSALS_BURST, per_second: float = REFUSALS_PER_SECOND) -> None:
        self._burst = float(burst)
        self._rate = per_second
        self._buckets: dict[str, tuple[float, float]] = {}

    def blocked(self, client: str) -> bool:
        return self._level(client) < 1.0

    def refused(self, client: str) -> None:
        self._buckets[client] = (self._level(client) - 1.0, time.monotonic())
        if len(self._buckets) > 10_000:  # forget the clients that have earned everything back
            full = [c for c in self._buckets if self._level(c) >= self._burst]
            for c in full:
                del self._buckets[c]

    def _level(self, client: str) -> float:
        level, stamp = self._buckets.get(client, (self._burst, time.monotonic()))
        return min(self._burst, level + (time.monotonic() - stamp) * self._rate)


class PublicServer:
    def __init__(
        self,
        store: Store,
        on_notified: Callable[[uuid.UUID], None],
        *,
        host: str,
        port: int,
        routes: Sequence[BaseRoute] = (),
    ) -> None:
        """`routes`: more of the public address (the clinic pages, daemon/connect_web.py)."""
        self._store = store
        self._on_notified = on_notified
        self._limiter = RefusalLimiter()
        app = Starlette(routes=[Route(NOTIFICATIONS_PATH, self._notification, methods=["POST"]), *routes])
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=2,  # a request still being answered gets this long
            )
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen (OSError, naming the address, when it cannot) and serve in the background."""
        # Bound here rather than by uvicorn, which answers a taken port with sys.exit() inside the event loop.
        listener = _bind(self._server.config.host, self._server.config.port)
        self._task = asyncio.create_task(self._server.serve(sockets=[listener]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it could not start (a taken port, say)
                raise RuntimeError("the public listener stopped before it started")
            await asyncio.sleep(0.01)
        logger.info("public listener (push notifications, clinic pages) on port {}", self.port)

    @property
    def port(self) -> int:
        sockets = [s for server in self._server.servers for s in server.sockets]
        return int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _notification(self, request: Request) -> Response:
        client = request.client.host if request.client else "unknown"
        if self._limiter.blocked(client):
            return Response(status_code=429, headers={"Retry-After": "5"})
        headers = request.headers
        channel, resource = headers.get("x-goog-channel-id"), headers.get("x-goog-resource-id")
        state, number = headers.get("x-goog-resource-state"), headers.get("x-goog-message-number", "")
        if not channel or not resource or state not in STATES or not number.isdigit() or len(number) > 18:
            return self._refuse(client)
        try:
            clinic_id = await self._store.record_notification(
                channel, resource, headers.get("x-goog-channel-token", ""), state, int(number)
            )
        except StoreError as error:  # Google retries what is not answered 2xx
            logger.warning("a push notification could not be recorded: {}", error)
            return Response(status_code=503)
        if clinic_id is None:
            return self._refuse(client)
        if state != "sync":
            self._on_notified(clinic_id)
        return Response(status_code=200)

    def _refuse(self, client: str) -> Response:
        self._limiter.refused(client)
        return Response(status_code=404)


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except OSError as error:
        listener.close()
        raise OSError(error.errno, f"the public listener cannot listen on {host}:{port}: {error.strerror}") from error
    listener.setblocking(False)
    return listener
