"""The shared Google request budget (supabase/schemas/80_google_budget.sql)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from daemon.domain.reply import Count, Number, Reply, rows_as_tuples


@dataclass(frozen=True)
class BudgetLimits:
    """Google's quotas as this deployment spends them: requests a minute per Google account and for the
    whole Google project, on a sliding 60 s window, shared by every replica. A reserved request must be
    sent within `hold_seconds` of its reservation, or not at all."""

    per_account: int
    per_project: int
    hold_seconds: float = 2.0


class BudgetExhausted(Exception):
    """No Google request may be sent for this clinic now; its account (or the project) has budget again
    in about `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"Google request budget spent; more in {retry_after:.1f}s")
        self.retry_after = retry_after


class BudgetGrant(Reply):
    """What `reserve_google_requests` granted: maybe fewer than asked, or none (then when to ask again)."""

    granted: Count
    entry: int | None
    retry_after_seconds: Number


@dataclass(frozen=True)
class BudgetReturn:
    """Requests of a reservation that were not sent: budget again for every replica."""

    entry: int
    requests: int

    def to_json(self) -> dict[str, int]:
        return {"entry": self.entry, "requests": self.requests}


class BudgetSnapshot(Reply):
    """`google_budget_snapshot()`: the shared Google budget's use of the current window."""

    project_used: Count
    project_limit: Count
    account_limit: Count
    # The busiest budget keys, most used first: (key, used) from [{"key", "used"}, ...].
    accounts: Annotated[tuple[tuple[str, Count], ...], rows_as_tuples("key", "used")]
    throttled: Count  # keys held back after a rate-limit answer from Google
    held_back_clinics: Count  # clinics with due work and no budget
    next_budget_seconds: Number | None  # when the first of them has budget again
