"""Google push channels (supabase/schemas/75_push_channels.sql)."""

from __future__ import annotations

import uuid
from typing import Literal

from daemon.domain.reply import Reply


class ChannelWork(Reply):
    """`calendar_channel_work()`: a calendar that needs a push channel, or a retired channel to stop."""

    action: Literal["create", "stop"]
    clinic_id: uuid.UUID
    calendar_id: str
    channel_id: str | None
    resource_id: str | None
