"""What every stand-in shares: start(), stop(), and use as a context manager."""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalService(ABC):
    """A server (or cluster) the tests and the demo run on this machine."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None:
        """Idempotent."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class LocalServer(LocalService):
    """A stand-in listening on a port of 127.0.0.1 (`_port` is 0 until it has been started)."""

    _port: int = 0

    @property
    def url(self) -> str:
        """Its base URL: what SUPABASE_URL would be for a Supabase stand-in."""
        if not self._port:
            raise RuntimeError("the stand-in has not been started")
        return f"http://127.0.0.1:{self._port}"
