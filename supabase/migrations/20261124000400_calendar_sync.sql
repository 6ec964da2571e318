-- The calendar sync queue's state transitions and the Google connection bookkeeping, as
-- functions the daemon calls (over Supabase REST as service_role, or directly over SQL).
--
--   pending --claim--> in_flight --complete--> synced
--                          |  \--end attempt--> pending (later) | failed (operator re-queues)
--                          |                     | parked (clinic must reconnect Google; resumes by itself)
--                          \--lease expires (crashed replica)--> claimable again
--
-- Every transition out of in_flight names the lease owner, so a replica whose lease ran out
-- cannot overwrite the work of the one that took over ("lease_lost").

create function private.require(p_condition boolean, p_message text) returns void
language plpgsql volatile
set search_path = ''
as $$
begin
  if p_condition is not true then
    raise exception using errcode = 'P0001', message = p_message;
  end if;
end
$$;

create function private.require_owner(p_owner text) returns void
language sql volatile
set search_path = ''
as $$
  select private.require(length(p_owner) between 1 and 200, 'lease owner must be 1 to 200 characters')
$$;

-- Up to p_limit due appointments, at most p_per_clinic of any one clinic (so one busy clinic
-- cannot fill every batch), leased to p_owner for p_lease_seconds. Due means pending with
-- next_attempt_at reached, or in flight under an expired lease. Rows whose clinic has no
-- active Google connection are parked instead of claimed.
create function public.claim_appointments(
  p_owner text, p_limit integer default 50, p_lease_seconds integer default 120, p_per_clinic integer default 10
)
returns table (
  appointment_id uuid, clinic_id uuid, revision integer, status text, reference text, patient jsonb,
  service text, notes text, starts_at timestamptz, ends_at timestamptz, calendar_event_id text,
  sync_attempts integer, created_at timestamptz, time_zone text, calendar_id text
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
         k.time_zone, k.calendar_id
  from claimed c
  join public.clinics k on k.id = c.clinic_id
  order by c.starts_at;
end
$$;

-- Google confirmed revision p_revision. If the appointment changed meanwhile it goes back to
-- pending (the event id is kept, so the next push updates the event).
create function public.complete_appointment_sync(
  p_appointment_id uuid, p_owner text, p_revision integer, p_event_id text, p_event_link text default null
)
returns text
language plpgsql volatile
set search_path = ''
as $$
declare
  v_state text;
begin
  update public.appointments
     set sync_state = case when revision = p_revision then 'synced' else 'pending' end,
         next_attempt_at = case when revision = p_revision then null else now() end,
         sync_attempts = case when revision = p_revision then sync_attempts else 0 end,
         synced_revision = p_revision, synced_at = now(),
         calendar_event_id = p_event_id, calendar_event_link = coalesce(p_event_link, calendar_event_link),
         lease_owner = null, lease_expires_at = null, last_sync_error = null
   where id = p_appointment_id and sync_state = 'in_flight' and lease_owner = p_owner
  returning sync_state into v_state;
  return coalesce(v_state, 'lease_lost');
end
$$;

-- The attempt did not sync: back to `pending` after p_delay_seconds (a transient failure),
-- `failed` (permanent, for an operator), or `parked` (the clinic must reconnect Google).
create function public.end_appointment_attempt(
  p_appointment_id uuid, p_owner text, p_state text, p_error text, p_delay_seconds double precision default 0
)
returns text
language plpgsql volatile
set search_path = ''
as $$
declare
  v_state text;
begin
  perform private.require(p_state in ('pending', 'failed', 'parked'), 'state must be pending, failed or parked');
  perform private.require(p_delay_seconds between 0 and 86400, 'delay must be 0 to 86400 seconds');
  update public.appointments
     set sync_state = p_state,
         next_attempt_at = case when p_state = 'pending' then now() + make_interval(secs => p_delay_seconds) end,
         last_sync_error = left(p_error, 500), lease_owner = null, lease_expires_at = null
   where id = p_appointment_id and sync_state = 'in_flight' and lease_owner = p_owner
  returning sync_state into v_state;
  return coalesce(v_state, 'lease_lost');
end
$$;

-- A replica that lost its lease but did write to Google: make sure the row is pushed once
-- more, so the calendar ends up matching the row whatever order the two pushes landed in.
-- Raising the revision makes a current holder's completion re-queue it as well.
create function public.resync_appointment(p_appointment_id uuid)
returns text
language plpgsql volatile
set search_path = ''
as $$
declare
  v_state text;
begin
  update public.appointments
     set revision = revision + 1,
         sync_state = case when sync_state in ('in_flight', 'parked') then sync_state else 'pending' end,
         next_attempt_at = case when sync_state in ('in_flight', 'parked') then next_attempt_at else now() end
   where id = p_appointment_id
  returning sync_state into v_state;
  return coalesce(v_state, 'not_found');
end
$$;

-- Graceful shutdown: hand back everything p_owner still holds, without counting an attempt.
create function public.release_appointment_leases(p_owner text)
returns integer
language plpgsql volatile
set search_path = ''
as $$
declare
  v_count integer;
begin
  perform private.require_owner(p_owner);
  update public.appointments
     set sync_state = 'pending', next_attempt_at = now(), lease_owner = null, lease_expires_at = null,
         sync_attempts = greatest(sync_attempts - 1, 0)
   where sync_state = 'in_flight' and lease_owner = p_owner;
  get diagnostics v_count = row_count;
  return v_count;
end
$$;

-- Operator: put failed appointments back in the queue (one, one clinic's, or all).
create function public.retry_failed_appointments(
  p_clinic_id uuid default null, p_appointment_id uuid default null
)
returns integer
language plpgsql volatile
set search_path = ''
as $$
declare
  v_count integer;
begin
  update public.appointments
     set sync_state = 'pending', next_attempt_at = now(), sync_attempts = 0
   where sync_state = 'failed'
     and (p_clinic_id is null or clinic_id = p_clinic_id)
     and (p_appointment_id is null or id = p_appointment_id);
  get diagnostics v_count = row_count;
  return v_count;
end
$$;

------------------------------------------------------------------------------------------
-- Google connections
------------------------------------------------------------------------------------------

-- A connection that becomes active releases its clinic's parked appointments; one that stops
-- being active parks its clinic's pending ones (in-flight ones are parked by their daemon).
create function private.calendar_connections_status_changed() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.status = 'active' then
    update public.appointments
       set sync_state = 'pending', next_attempt_at = now(), sync_attempts = 0, last_sync_error = null
     where clinic_id = new.clinic_id and sync_state = 'parked';
  else
    update public.appointments
       set sync_state = 'parked', next_attempt_at = null,
           last_sync_error = 'Google Calendar connection needs re-authorisation: ' || coalesce(new.last_error, new.status)
     where clinic_id = new.clinic_id and sync_state = 'pending';
  end if;
  return null;
end
$$;

create trigger calendar_connections_status_changed
  after insert or update of status on public.calendar_connections
  for each row
  when (new.status is not null)
  execute function private.calendar_connections_status_changed();

create function private.calendar_connections_touch() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

create trigger calendar_connections_touch
  before update on public.calendar_connections
  for each row execute function private.calendar_connections_touch();

-- Store (or replace, on reconnect) a clinic's Google connection. Tokens arrive encrypted.
create function public.save_calendar_connection(
  p_clinic_id uuid, p_google_account text, p_refresh_token_encrypted text, p_scopes text[],
  p_access_token_encrypted text default null, p_access_token_expires_at timestamptz default null
)
returns text
language plpgsql volatile
set search_path = ''
as $$
begin
  insert into public.calendar_connections (
    clinic_id, google_account, refresh_token_encrypted, scopes, access_token_encrypted,
    access_token_expires_at, status, last_error, last_refreshed_at, connected_at)
  values (p_clinic_id, p_google_account, p_refresh_token_encrypted, coalesce(p_scopes, '{}'),
          p_access_token_encrypted, p_access_token_expires_at, 'active', null,
          case when p_access_token_encrypted is not null then now() end, now())
  on conflict (clinic_id) do update
    set google_account = excluded.google_account,
        refresh_token_encrypted = excluded.refresh_token_encrypted,
        scopes = excluded.scopes,
        access_token_encrypted = excluded.access_token_encrypted,
        access_token_expires_at = excluded.access_token_expires_at,
        status = 'active', last_error = null,
        last_refreshed_at = excluded.last_refreshed_at, connected_at = now();
  return 'active';
end
$$;

-- What the daemon needs to act for a clinic's Google account.
create function public.calendar_connection_tokens(p_clinic_id uuid)
returns table (
  clinic_id uuid, status text, refresh_token_encrypted text, access_token_encrypted text,
  access_token_expires_at timestamptz
)
language sql stable
set search_path = ''
as $$
  select clinic_id, status, refresh_token_encrypted, access_token_encrypted, access_token_expires_at
  from public.calendar_connections
  where clinic_id = p_clinic_id
$$;

-- Active connections whose access token is missing or expires within p_within_seconds.
-- (Two columns on purpose: PostgREST answers a one-column table with bare values, not rows.)
create function public.calendar_connections_to_refresh(p_within_seconds integer default 600)
returns table (clinic_id uuid, access_token_expires_at timestamptz)
language sql stable
set search_path = ''
as $$
  select clinic_id, access_token_expires_at from public.calendar_connections
  where status = 'active'
    and (access_token_expires_at is null
         or access_token_expires_at < now() + make_interval(secs => p_within_seconds))
  order by access_token_expires_at nulls first
$$;

create function public.record_token_refresh(
  p_clinic_id uuid, p_access_token_encrypted text, p_access_token_expires_at timestamptz,
  p_refresh_token_encrypted text default null
)
returns text
language plpgsql volatile
set search_path = ''
as $$
declare
  v_status text;
begin
  update public.calendar_connections
     set access_token_encrypted = p_access_token_encrypted,
         access_token_expires_at = p_access_token_expires_at,
         refresh_token_encrypted = coalesce(p_refresh_token_encrypted, refresh_token_encrypted),
         last_refreshed_at = now(), last_error = null
   where clinic_id = p_clinic_id and status = 'active'
  returning status into v_status;
  return coalesce(v_status, 'not_active');
end
$$;

-- A refresh failed. When Google said the grant is dead (revoked, expired, Testing-mode
-- project), the clinic must reconnect: its work is parked until it does.
create function public.record_token_failure(p_clinic_id uuid, p_error text, p_needs_reauth boolean)
returns text
language plpgsql volatile
set search_path = ''
as $$
declare
  v_status text;
begin
  update public.calendar_connections
     set last_error = left(p_error, 500),
         status = case when p_needs_reauth then 'needs_reauth' else status end,
         access_token_encrypted = case when p_needs_reauth then null else access_token_encrypted end,
         access_token_expires_at = case when p_needs_reauth then null else access_token_expires_at end
   where clinic_id = p_clinic_id
  returning status into v_status;
  return coalesce(v_status, 'not_found');
end
$$;

revoke execute on all functions in schema private from public;
revoke execute on function
  public.claim_appointments(text, integer, integer, integer),
  public.complete_appointment_sync(uuid, text, integer, text, text),
  public.end_appointment_attempt(uuid, text, text, text, double precision),
  public.resync_appointment(uuid),
  public.release_appointment_leases(text),
  public.retry_failed_appointments(uuid, uuid),
  public.save_calendar_connection(uuid, text, text, text[], text, timestamptz),
  public.calendar_connection_tokens(uuid),
  public.calendar_connections_to_refresh(integer),
  public.record_token_refresh(uuid, text, timestamptz, text),
  public.record_token_failure(uuid, text, boolean)
  from public, anon, authenticated;
grant execute on function
  public.claim_appointments(text, integer, integer, integer),
  public.complete_appointment_sync(uuid, text, integer, text, text),
  public.end_appointment_attempt(uuid, text, text, text, double precision),
  public.resync_appointment(uuid),
  public.release_appointment_leases(text),
  public.retry_failed_appointments(uuid, uuid),
  public.save_calendar_connection(uuid, text, text, text[], text, timestamptz),
  public.calendar_connection_tokens(uuid),
  public.calendar_connections_to_refresh(integer),
  public.record_token_refresh(uuid, text, timestamptz, text),
  public.record_token_failure(uuid, text, boolean)
  to service_role;
grant execute on function private.require(boolean, text), private.require_owner(text) to service_role;
