-- The Supabase path's doorbell carries ids only: Broadcast from Database instead of Postgres Changes.
--
-- Postgres Changes sent the daemon each whole appointment row (patient name, phone, notes) and runs
-- single-threaded per project. Now a trigger calls `realtime.send` with the appointment's and the
-- clinic's ids, nothing of the patient, into the private topic `calendar-sync`; Supabase Realtime
-- broadcasts each message stored in `realtime.messages` to the channels joined to that topic, and
-- the RLS policies on `realtime.messages` decide who may join it. The daemon joins as the service
-- role, which Realtime authorises like any role, by a SELECT on realtime.messages as that role:
-- `service_role` bypasses RLS, so it may join whatever the other policies say. The direct path keeps
-- LISTEN/NOTIFY (appointments_notify_calendar_sync, no payload at all). Neither doorbell is a queue:
-- the daemon sweeps at start, after every (re)subscription and on a timer.

-- Rings for the rows that leave a row waiting for the calendar now, as the direct path's doorbell
-- does: a retry scheduled for later rings nothing (the sweep finds it when it is due). SECURITY
-- DEFINER as in Supabase's documented Broadcast-from-Database pattern: the message is stored as the
-- function's owner (`postgres`), whoever made the change (vapi_clinic, the service role, staff).
-- `realtime.send` never raises: a failed send is a WARNING and the booking commits regardless.
create function private.broadcast_calendar_sync() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform realtime.send(
    pg_catalog.jsonb_build_object('appointment_id', new.id, 'clinic_id', new.clinic_id),
    'pending',
    'calendar-sync',
    true);
  return null;
end
$$;

revoke execute on function private.broadcast_calendar_sync() from public;

create trigger appointments_broadcast_calendar_sync
  after insert or update on public.appointments
  for each row
  when (new.sync_state = 'pending' and new.next_attempt_at <= now())
  execute function private.broadcast_calendar_sync();

-- Postgres Changes is no longer subscribed to: take the table out of the publication, so whole rows
-- cannot reach any subscriber (staff sessions included) that way.
do $$
begin
  if exists (select from pg_catalog.pg_publication_tables
             where pubname = 'supabase_realtime' and schemaname = 'public' and tablename = 'appointments') then
    alter publication supabase_realtime drop table public.appointments;
  end if;
end
$$;

-- Who may join the private topic. The service role is authorised without a policy (BYPASSRLS);
-- this one says so where a reader looks for it, and would still let the daemon in were it to join
-- with a role of its own. The restrictive one keeps the roles API clients become (anon with the
-- publishable key, authenticated staff) out of the topic, reading or sending, whatever broader
-- policies a project adds to realtime.messages for its own channels.
create policy calendar_sync_doorbell_service_role on realtime.messages
  for select to service_role
  using ((select realtime.topic()) = 'calendar-sync' and extension = 'broadcast');

create policy calendar_sync_doorbell_not_api_users on realtime.messages
  as restrictive
  for all to anon, authenticated
  using ((select realtime.topic()) is distinct from 'calendar-sync' and topic <> 'calendar-sync')
  with check ((select realtime.topic()) is distinct from 'calendar-sync' and topic <> 'calendar-sync');

-- The readiness facts: the doorbells instead of the publication membership they replace.
-- `broadcast_doorbell`: the trigger above is there and enabled, and `realtime.send` exists (the
-- Supabase path rings through both); `notify_doorbell`: the direct path's trigger is there and
-- enabled; `appointments_in_realtime`: the table is (again) in supabase_realtime, which would let
-- whole rows travel to Postgres Changes subscribers.
create or replace function public.readiness_facts()
returns jsonb
language plpgsql stable security definer
set search_path = ''
as $$
declare
  v_migrations jsonb := '[]'::jsonb;
begin
  if to_regclass('supabase_migrations.schema_migrations') is not null then
    execute 'select coalesce(jsonb_agg(version order by version), ''[]'') from supabase_migrations.schema_migrations'
      into v_migrations;
  end if;
  return jsonb_build_object(
    'tables_without_rls', coalesce((
      select jsonb_agg(c.relname order by c.relname)
      from pg_catalog.pg_class c
      where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p') and not c.relrowsecurity), '[]'),
    'anon_table_privileges', coalesce((
      select jsonb_agg(c.relname || ': ' || p.privilege order by c.relname, p.privilege)
      from pg_catalog.pg_class c
      cross join unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'])
        as p(privilege)
      where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'f')
        and exists (select from pg_catalog.pg_roles where rolname = 'anon')
        and pg_catalog.has_table_privilege('anon', c.oid, p.privilege)), '[]'),
    'broadcast_doorbell', exists (
        select from pg_catalog.pg_trigger
        where tgrelid = 'public.appointments'::regclass and tgname = 'appointments_broadcast_calendar_sync'
          and tgenabled <> 'D')
      and to_regprocedure('realtime.send(jsonb, text, text, boolean)') is not null,
    'notify_doorbell', exists (
      select from pg_catalog.pg_trigger
      where tgrelid = 'public.appointments'::regclass and tgname = 'appointments_notify_calendar_sync'
        and tgenabled <> 'D'),
    'appointments_in_realtime', exists (
      select from pg_catalog.pg_publication_tables
      where pubname = 'supabase_realtime' and schemaname = 'public' and tablename = 'appointments'),
    'applied_migrations', v_migrations);
end
$$;

revoke execute on function public.readiness_facts() from public, anon, authenticated;
grant execute on function public.readiness_facts() to service_role;
