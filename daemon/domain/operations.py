"""Operations (supabase/schemas/90_operations.sql): what `verify` reads of the schema itself."""

from __future__ import annotations

from daemon.domain.reply import Reply


class ReadinessFacts(Reply):
    """`readiness_facts()`: what `verify` needs to know about the schema's safety and history."""

    tables_without_rls: tuple[str, ...]
    anon_table_privileges: tuple[str, ...]
    broadcast_doorbell: bool  # the Supabase path's: a trigger sending ids to Realtime with realtime.send
    notify_doorbell: bool  # the direct path's: a trigger NOTIFYing calendar_sync
    appointments_in_realtime: bool  # in supabase_realtime: whole rows could reach Postgres Changes subscribers
    applied_migrations: tuple[str, ...]
