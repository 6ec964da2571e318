"""How long to wait before trying again: one rule for pushes, the change feed and the claim loop."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter: somewhere in [d/2, d] for d = min(cap, base * 2^(attempt-1))."""
    ceiling = min(cap, base * 2.0 ** max(attempt - 1, 0))
    return ceiling / 2 + rng() * ceiling / 2
