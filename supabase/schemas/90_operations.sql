-- Operations: the security and wiring facts `verify` checks before it calls a project ready.
--
-- The operator command's other views live with their concerns (clinic_keys and clinic_profile in
-- 10_clinics_and_keys.sql, calendar_connections_overview in 60_calendar_connections.sql, sync_backlog,
-- appointment_sync_status and delete_cancelled_appointment in 65_sync_queue.sql, connect_readiness in
-- 85_clinic_links.sql). All of them are for the service role only.

-- The security and wiring facts `verify` checks, read where only the owner can see them all (SECURITY
-- DEFINER): public tables without row-level security, table privileges `anon` holds (directly or through
-- PUBLIC), the migration versions recorded in the Supabase CLI's history, and the doorbells
-- (65_sync_queue.sql). `broadcast_doorbell`: the trigger appointments_broadcast_calendar_sync is there
-- and enabled, and `realtime.send` exists (the Supabase path rings through both); `notify_doorbell`: the
-- direct path's trigger (appointments_notify_calendar_sync) is there and enabled;
-- `appointments_in_realtime`: the table is (again) in supabase_realtime, which would let whole rows
-- travel to Postgres Changes subscribers.
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
revoke all on function public.readiness_facts() from public, anon, authenticated, service_role;
grant execute on function public.readiness_facts() to service_role;
