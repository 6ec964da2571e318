"""Dates for tests, always in the future relative to the day the suite runs."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")


def upcoming(weekday: int, weeks_ahead: int = 1) -> dt.date:
    """The date of ISO `weekday` (1 = Monday) in London, at least `weeks_ahead` weeks from today."""
    day = dt.datetime.now(LONDON).date() + dt.timedelta(weeks=weeks_ahead)
    return day + dt.timedelta(days=(weekday - day.isoweekday()) % 7)


def next_clock_change(forward: bool) -> dt.date:
    """The next day London's clocks go forward (or back), found from the tz database."""
    day = dt.datetime.now(LONDON).date() + dt.timedelta(days=1)
    while True:
        before = dt.datetime.combine(day, dt.time(0, 30), LONDON).utcoffset()
        after = dt.datetime.combine(day, dt.time(3, 0), LONDON).utcoffset()
        assert before is not None and after is not None
        if before != after and (after > before) == forward:
            return day
        day += dt.timedelta(days=1)
