-- What the operator command and the readiness report need: creating clinics, listing keys,
-- a clinic's profile, the queue's backlog, each clinic's Google connection, the security
-- facts `verify` checks, and the round-trip check's bookkeeping. All service_role only.
-- Also: the claim reports when each revision was made (booking-to-calendar latency), and a
-- connection remembers when Google said its refresh token dies ("Testing" projects: 7 days).

------------------------------------------------------------------------------------------
-- Clinics
------------------------------------------------------------------------------------------

-- A clinic with its opening hours and services, in one transaction, refusing bad input with
-- a sentence an operator can act on. p_opening_hours: [{"weekday": 1..7 (1 = Monday),
-- "opens": "09:00", "closes": "17:00"}, ...]; p_services: [{"name", "duration_minutes",
-- "is_default"?}, ...] (the first is the default unless one says otherwise).
create function public.create_clinic(
  p_name text,
  p_time_zone text default 'Europe/London',
  p_calendar_id text default 'primary',
  p_opening_hours jsonb default null,
  p_services jsonb default null,
  p_phone_country_code text default '44'
)
returns uuid
language plpgsql volatile
set search_path = ''
as $$
declare
  v_clinic_id uuid;
  v_hours jsonb := coalesce(p_opening_hours, '[]'::jsonb);
  v_services jsonb := coalesce(p_services, '[]'::jsonb);
  v_entry jsonb;
  v_defaults integer;
begin
  perform private.require(length(btrim(coalesce(p_name, ''))) between 1 and 200,
                          'The clinic name must be 1 to 200 characters');
  perform private.require(private.is_valid_time_zone(p_time_zone),
                          format('Unknown time zone "%s" (use an IANA name such as Europe/London)', p_time_zone));
  perform private.require(length(coalesce(p_calendar_id, '')) between 1 and 1024,
                          'The calendar id must be 1 to 1024 characters ("primary" is the account''s own calendar)');
  perform private.require(coalesce(p_phone_country_code, '') ~ '^[1-9][0-9]{0,2}$',
                          'The phone country code must be 1 to 3 digits without "+" (44 for the UK)');
  perform private.require(jsonb_typeof(v_hours) = 'array' and jsonb_array_length(v_hours) > 0,
                          'Give the clinic at least one period of opening hours');
  perform private.require(jsonb_typeof(v_services) = 'array' and jsonb_array_length(v_services) > 0,
                          'Give the clinic at least one service');

  insert into public.clinics (name, time_zone, calendar_id, phone_country_code)
  values (btrim(p_name), p_time_zone, p_calendar_id, p_phone_country_code)
  returning id into v_clinic_id;

  for v_entry in select value from jsonb_array_elements(v_hours) loop
    perform private.require(jsonb_typeof(v_entry) = 'object', 'Each period of opening hours is an object');
    perform private.require(
      jsonb_typeof(v_entry -> 'weekday') = 'number' and (v_entry ->> 'weekday') ~ '^[1-7]$',
      format('Opening hours: weekday must be 1 (Monday) to 7 (Sunday), not %s', coalesce(v_entry ->> 'weekday', 'missing')));
    perform private.require(
      coalesce(v_entry ->> 'opens', '') ~ '^([01][0-9]|2[0-3]):[0-5][0-9]$'
        and coalesce(v_entry ->> 'closes', '') ~ '^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$',
      'Opening hours: times are HH:MM, 24-hour clock');
    perform private.require((v_entry ->> 'closes') > (v_entry ->> 'opens'),
      format('Opening hours: day %s closes (%s) before it opens (%s)',
             v_entry ->> 'weekday', v_entry ->> 'closes', v_entry ->> 'opens'));
    begin
      insert into public.clinic_opening_hours (clinic_id, weekday, opens, closes)
      values (v_clinic_id, (v_entry ->> 'weekday')::smallint, (v_entry ->> 'opens')::time,
              (v_entry ->> 'closes')::time);
    exception when exclusion_violation or unique_violation then
      raise exception using errcode = 'P0001',
        message = format('Opening hours: two periods overlap on day %s', v_entry ->> 'weekday');
    end;
  end loop;

  select count(*) into v_defaults from jsonb_array_elements(v_services) as s(service)
  where jsonb_typeof(service) = 'object' and service -> 'is_default' = 'true'::jsonb;
  perform private.require(v_defaults <= 1, 'Only one service can be the default');
  for v_entry in select value from jsonb_array_elements(v_services) loop
    perform private.require(jsonb_typeof(v_entry) = 'object', 'Each service is an object with a name and a length');
    perform private.require(
      length(btrim(coalesce(v_entry ->> 'name', ''))) between 1 and 80 and (v_entry ->> 'name') !~ '[[:cntrl:]]',
      'A service name must be 1 to 80 printable characters');
    perform private.require(
      jsonb_typeof(v_entry -> 'duration_minutes') = 'number'
        and (v_entry ->> 'duration_minutes') ~ '^[0-9]+$'
        and (v_entry ->> 'duration_minutes')::integer between 5 and 480,
      format('Service "%s": its length must be 5 to 480 whole minutes', v_entry ->> 'name'));
    begin
      insert into public.clinic_services (clinic_id, name, duration_minutes, is_default)
      values (v_clinic_id, btrim(v_entry ->> 'name'), (v_entry ->> 'duration_minutes')::integer,
              coalesce(v_entry -> 'is_default' = 'true'::jsonb, false));
    exception when unique_violation then
      raise exception using errcode = 'P0001',
        message = format('The service "%s" is listed twice', btrim(v_entry ->> 'name'));
    end;
  end loop;
  if v_defaults = 0 then
    update public.clinic_services set is_default = true
     where clinic_id = v_clinic_id and name = btrim(v_services -> 0 ->> 'name');
  end if;
  return v_clinic_id;
end
$$;

-- A clinic as the operator command shows it and as `vapi-tools` describes it.
create function public.clinic_profile(p_clinic_id uuid)
returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  v_profile jsonb;
begin
  select jsonb_build_object(
           'id', c.id, 'name', c.name, 'time_zone', c.time_zone, 'calendar_id', c.calendar_id,
           'slot_minutes', c.slot_minutes, 'booking_horizon_days', c.booking_horizon_days,
           'services', coalesce((
             select jsonb_agg(jsonb_build_object('name', s.name, 'duration_minutes', s.duration_minutes,
                                                 'is_default', s.is_default)
                              order by s.is_default desc, s.name)
             from public.clinic_services s where s.clinic_id = c.id), '[]'::jsonb),
           'opening_hours', coalesce((
             select jsonb_agg(jsonb_build_object('weekday', h.weekday, 'opens', to_char(h.opens, 'HH24:MI'),
                                                 'closes', to_char(h.closes, 'HH24:MI'))
                              order by h.weekday, h.opens)
             from public.clinic_opening_hours h where h.clinic_id = c.id), '[]'::jsonb),
           'connection', (
             select jsonb_build_object('status', k.status, 'google_account', k.google_account,
                                       'last_error', k.last_error,
                                       'refresh_token_expires_at', k.refresh_token_expires_at)
             from public.calendar_connections k where k.clinic_id = c.id))
    into v_profile
  from public.clinics c
  where c.id = p_clinic_id;
  if v_profile is null then
    raise exception 'No clinic with id %', p_clinic_id using errcode = 'P0002';
  end if;
  return v_profile;
end
$$;

-- A clinic's keys, without the keys themselves (only their hash is kept).
create function public.clinic_keys(p_clinic_id uuid)
returns table (id uuid, key_prefix text, label text, created_at timestamptz, revoked_at timestamptz,
               last_used_at timestamptz)
language sql stable
set search_path = ''
as $$
  select id, key_prefix, label, created_at, revoked_at, last_used_at
  from public.clinic_api_keys
  where clinic_id = p_clinic_id
  order by created_at
$$;

------------------------------------------------------------------------------------------
-- Google connections
------------------------------------------------------------------------------------------

alter table public.calendar_connections add column refresh_token_expires_at timestamptz;
comment on column public.calendar_connections.refresh_token_expires_at is
  'When Google said the refresh token dies (it says so for time-limited grants, e.g. a project '
  'in "Testing" gives 7 days); null when Google set no limit.';

drop function public.save_calendar_connection(uuid, text, text, text[], text, timestamptz);
create function public.save_calendar_connection(
  p_clinic_id uuid, p_google_account text, p_refresh_token_encrypted text, p_scopes text[],
  p_access_token_encrypted text default null, p_access_token_expires_at timestamptz default null,
  p_refresh_token_expires_at timestamptz default null
)
returns text
language plpgsql volatile
set search_path = ''
as $$
begin
  insert into public.calendar_connections (
    clinic_id, google_account, refresh_token_encrypted, scopes, access_token_encrypted,
    access_token_expires_at, refresh_token_expires_at, status, last_error, last_refreshed_at, connected_at)
  values (p_clinic_id, p_google_account, p_refresh_token_encrypted, coalesce(p_scopes, '{}'),
          p_access_token_encrypted, p_access_token_expires_at, p_refresh_token_expires_at, 'active', null,
          case when p_access_token_encrypted is not null then now() end, now())
  on conflict (clinic_id) do update
    set google_account = excluded.google_account,
        refresh_token_encrypted = excluded.refresh_token_encrypted,
        scopes = excluded.scopes,
        access_token_encrypted = excluded.access_token_encrypted,
        access_token_expires_at = excluded.access_token_expires_at,
        refresh_token_expires_at = excluded.refresh_token_expires_at,
        status = 'active', last_error = null,
        last_refreshed_at = excluded.last_refreshed_at, connected_at = now();
  return 'active';
end
$$;

-- Every clinic and the state of its Google connection ('not_connected' when it has none).
create function public.calendar_connections_overview()
returns table (clinic_id uuid, clinic_name text, calendar_id text, time_zone text, status text,
               google_account text, last_refreshed_at timestamptz, last_error text,
               refresh_token_expires_at timestamptz)
language sql stable
set search_path = ''
as $$
  select c.id, c.name, c.calendar_id, c.time_zone, coalesce(k.status, 'not_connected'), k.google_account,
         k.last_refreshed_at, k.last_error, k.refresh_token_expires_at
  from public.clinics c
  left join public.calendar_connections k on k.clinic_id = c.id
  order by c.name, c.id
$$;

------------------------------------------------------------------------------------------
-- The queue, seen from outside
------------------------------------------------------------------------------------------

-- How much is waiting: rows per sync state, how long the oldest unsynced change has waited
-- (pending or in flight, in backoff or not), and how many clinics must reconnect Google.
create function public.sync_backlog()
returns jsonb
language sql stable
set search_path = ''
as $$
  select jsonb_build_object(
    'by_state', coalesce((select jsonb_object_agg(sync_state, n)
                          from (select sync_state, count(*) as n from public.appointments group by sync_state) s),
                         '{}'::jsonb),
    'oldest_pending_age_seconds', coalesce((
       select extract(epoch from now() - min(updated_at))
       from public.appointments where sync_state in ('pending', 'in_flight')), 0),
    'clinics_needing_reauth', (select count(*) from public.calendar_connections where status = 'needs_reauth'))
$$;

-- The claim also says when the claimed revision was made (`changed_at`), so the daemon can
-- measure booking-to-calendar latency. Otherwise as in the calendar_sync migration.
drop function public.claim_appointments(text, integer, integer, integer);
create function public.claim_appointments(
  p_owner text, p_limit integer default 50, p_lease_seconds integer default 120, p_per_clinic integer default 10
)
returns table (
  appointment_id uuid, clinic_id uuid, revision integer, status text, reference text, patient jsonb,
  service text, notes text, starts_at timestamptz, ends_at timestamptz, calendar_event_id text,
  sync_attempts integer, created_at timestamptz, time_zone text, calendar_id text, changed_at timestamptz
)
language plpgsql volatile
set search_path = ''
as $$
begin
  perform private.require_owner(p_owner);
  perform private.require(p_limit between 1 and 1000, 'limit must be 1 to 1000');
  perform private.require(p_lease_seconds between 5 and 3600, 'lease must be 5 to 3600 seconds');
  perform private.require(p_per_clinic between 1 and 1000, 'per-clinic limit must be 1 to 1000');

  return query
  with due as (
    select a.id, row_number() over (partition by a.clinic_id order by a.next_attempt_at, a.id) as nth,
           coalesce(a.next_attempt_at, a.lease_expires_at) as due_at
    from public.appointments a
    where (a.sync_state = 'pending' and a.next_attempt_at <= now())
       or (a.sync_state = 'in_flight' and a.lease_expires_at < now())
  ),
  locked as (
    select a.id, a.clinic_id
    from public.appointments a
    where a.id in (select due.id from due where due.nth <= p_per_clinic order by due.due_at limit p_limit)
      and ((a.sync_state = 'pending' and a.next_attempt_at <= now())
           or (a.sync_state = 'in_flight' and a.lease_expires_at < now()))
    for update skip locked
  ),
  connected as (
    select l.id from locked l
    join public.calendar_connections c on c.clinic_id = l.clinic_id and c.status = 'active'
  ),
  parked as (
    update public.appointments a
       set sync_state = 'parked', lease_owner = null, lease_expires_at = null, next_attempt_at = null,
           last_sync_error = 'Waiting for the clinic to connect Google Calendar'
     where a.id in (select id from locked except select id from connected)
  ),
  claimed as (
    update public.appointments a
       set sync_state = 'in_flight', lease_owner = p_owner,
           lease_expires_at = now() + make_interval(secs => p_lease_seconds),
           sync_attempts = a.sync_attempts + 1
     where a.id in (select id from connected)
    returning a.*
  )
  select c.id, c.clinic_id, c.revision, c.status, c.reference, c.patient, c.service, c.notes,
         c.starts_at, c.ends_at, c.calendar_event_id, c.sync_attempts, c.created_at,
         k.time_zone, k.calendar_id, c.updated_at
  from claimed c
  join public.clinics k on k.id = c.clinic_id
  order by c.starts_at;
end
$$;

------------------------------------------------------------------------------------------
-- Readiness facts and the round-trip check
------------------------------------------------------------------------------------------

-- The security and wiring facts `verify` checks, read where only the owner can see them all:
-- public tables without row-level security, table privileges `anon` holds (directly or
-- through PUBLIC), whether appointments are in the Realtime publication, and the migration
-- versions recorded in the Supabase CLI's history.
create function public.readiness_facts()
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
    'appointments_in_realtime', exists (
      select from pg_catalog.pg_publication_tables
      where pubname = 'supabase_realtime' and schemaname = 'public' and tablename = 'appointments'),
    'applied_migrations', v_migrations);
end
$$;

-- Where one appointment stands, found by the reference the caller heard.
create function public.appointment_sync_status(p_clinic_id uuid, p_reference text)
returns jsonb
language sql stable
set search_path = ''
as $$
  select jsonb_build_object('appointment_id', id, 'status', status, 'sync_state', sync_state,
                            'calendar_event_id', calendar_event_id, 'last_sync_error', last_sync_error,
                            'revision', revision, 'synced_revision', synced_revision)
  from public.appointments
  where clinic_id = p_clinic_id and reference = upper(btrim(p_reference))
$$;

-- Removes a cancelled appointment whose cancellation reached the calendar (the round-trip
-- check's synthetic booking). Anything else is refused: a live or unsynced row must stay.
create function public.delete_cancelled_appointment(p_appointment_id uuid)
returns void
language plpgsql volatile
set search_path = ''
as $$
begin
  delete from public.appointments
   where id = p_appointment_id and status = 'cancelled' and sync_state = 'synced';
  if not found then
    raise exception using errcode = 'P0001',
      message = format('Appointment %s is not a cancelled appointment whose cancellation has reached the calendar',
                       p_appointment_id);
  end if;
end
$$;

revoke execute on function
  public.create_clinic(text, text, text, jsonb, jsonb, text),
  public.clinic_profile(uuid),
  public.clinic_keys(uuid),
  public.save_calendar_connection(uuid, text, text, text[], text, timestamptz, timestamptz),
  public.calendar_connections_overview(),
  public.sync_backlog(),
  public.claim_appointments(text, integer, integer, integer),
  public.readiness_facts(),
  public.appointment_sync_status(uuid, text),
  public.delete_cancelled_appointment(uuid)
  from public, anon, authenticated;
grant execute on function
  public.create_clinic(text, text, text, jsonb, jsonb, text),
  public.clinic_profile(uuid),
  public.clinic_keys(uuid),
  public.save_calendar_connection(uuid, text, text, text[], text, timestamptz, timestamptz),
  public.calendar_connections_overview(),
  public.sync_backlog(),
  public.claim_appointments(text, integer, integer, integer),
  public.readiness_facts(),
  public.appointment_sync_status(uuid, text),
  public.delete_cancelled_appointment(uuid)
  to service_role;
