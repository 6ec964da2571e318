-- Doorbells for the sync daemon. Neither is a queue: the daemon always sweeps for due rows
-- too (at start, after every (re)subscription, on a timer), because neither Supabase Realtime
-- nor LISTEN/NOTIFY delivers to a listener that is not connected at the time.

-- Supabase Realtime (postgres_changes) only carries tables in this publication. Subscribers
-- see rows through RLS: staff their clinic's, the service role all, anon none.
alter publication supabase_realtime add table public.appointments;

-- The direct-PostgreSQL path: NOTIFY on a channel the daemon LISTENs to. No payload: patient
-- details stay in the table, and identical notifications of one transaction collapse into one.
create function private.notify_calendar_sync() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  perform pg_notify('calendar_sync', '');
  return null;
end
$$;

create trigger appointments_notify_calendar_sync
  after insert or update on public.appointments
  for each row
  when (new.sync_state = 'pending' and new.next_attempt_at <= now())
  execute function private.notify_calendar_sync();

revoke execute on function private.notify_calendar_sync() from public;
