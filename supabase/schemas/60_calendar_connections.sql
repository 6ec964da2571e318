-- Each clinic's Google connection: the OAuth tokens the daemon acts with, and how healthy they are.
--
-- - One connection per clinic. Token material is encrypted by the daemon (Fernet, with a key only
--   the daemon holds). The checks refuse anything that is not a Fernet token, so a plain refresh
--   token ("1//...") can never be stored by mistake.
-- - Staff (`authenticated`) read their own clinic's row, and only the columns without token
--   material. Everything else, the functions below included, is for the service role.
-- - Refresh tokens die: revoked, expired, or after 7 days when the Google project is left in
--   "Testing" mode. A dead grant moves the clinic to `needs_reauth`. Its appointments wait (parked,
--   not lost), the metrics and the verify report show it, and reconnecting resumes the backlog.
--   The status trigger below parks and unparks the whole clinic's work. A connection that changes
--   also retires its push channels (trigger calendar_connection_changed, in 75_push_channels.sql).
--
-- Lifecycle, as the daemon calls it: save_calendar_connection (connect or reconnect), then on a
-- schedule calendar_connections_to_refresh, calendar_connection_tokens, and record_token_refresh or
-- record_token_failure; calendar_connections_overview is for operators.

create table public.calendar_connections (
  clinic_id uuid primary key references public.clinics (id) on delete cascade,
  google_account text check (length(google_account) <= 320),
  refresh_token_encrypted text not null check (refresh_token_encrypted ~ '^gAAAAA[A-Za-z0-9_-]+=*$'),
  access_token_encrypted text check (access_token_encrypted ~ '^gAAAAA[A-Za-z0-9_-]+=*$'),
  access_token_expires_at timestamptz,
  scopes text[] not null default '{}',
  status text not null default 'active' check (status in ('active', 'needs_reauth', 'revoked')),
  last_refreshed_at timestamptz,
  last_error text,
  connected_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  refresh_token_expires_at timestamptz
);

comment on column public.calendar_connections.refresh_token_expires_at is
  'When Google said the refresh token dies (it says so for time-limited grants, e.g. a project '
  'in "Testing" gives 7 days); null when Google set no limit.';

alter table public.calendar_connections enable row level security;
revoke all on table public.calendar_connections from anon, authenticated, service_role;
grant all on table public.calendar_connections to service_role;
-- Staff may see whether their clinic's Google connection is healthy, never its tokens.
grant select (clinic_id, google_account, scopes, status, last_refreshed_at, last_error, connected_at, updated_at)
  on table public.calendar_connections to authenticated;
create policy members_read on public.calendar_connections for select to authenticated
  using (clinic_id in (select clinic_id from public.clinic_members));

-- updated_at is when the connection row last changed, whoever changed it.
create function private.calendar_connections_touch() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;
revoke all on function private.calendar_connections_touch() from public;

create trigger calendar_connections_touch
  before update on public.calendar_connections
  for each row execute function private.calendar_connections_touch();

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
revoke all on function private.calendar_connections_status_changed() from public;

create trigger calendar_connections_status_changed
  after insert or update of status on public.calendar_connections
  for each row
  when (new.status is not null)
  execute function private.calendar_connections_status_changed();

-- Store (or replace, on reconnect) a clinic's Google connection. Tokens arrive encrypted. The
-- connection is active from now on, and its last error is cleared. Setting the status fires the
-- trigger above, which releases the clinic's parked appointments. p_refresh_token_expires_at:
-- when Google said the refresh token dies (null: no limit).
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
revoke all on function public.save_calendar_connection(p_clinic_id uuid, p_google_account text, p_refresh_token_encrypted text, p_scopes text[], p_access_token_encrypted text, p_access_token_expires_at timestamp with time zone, p_refresh_token_expires_at timestamp with time zone) from public, anon, authenticated, service_role;
grant execute on function public.save_calendar_connection(p_clinic_id uuid, p_google_account text, p_refresh_token_encrypted text, p_scopes text[], p_access_token_encrypted text, p_access_token_expires_at timestamp with time zone, p_refresh_token_expires_at timestamp with time zone) to service_role;

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
revoke all on function public.calendar_connections_to_refresh(p_within_seconds integer) from public, anon, authenticated, service_role;
grant execute on function public.calendar_connections_to_refresh(p_within_seconds integer) to service_role;

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
revoke all on function public.calendar_connection_tokens(p_clinic_id uuid) from public, anon, authenticated, service_role;
grant execute on function public.calendar_connection_tokens(p_clinic_id uuid) to service_role;

-- A refresh succeeded: the new access token, and the new refresh token when Google sent one
-- (null keeps the old one). Only an active connection is updated. The answer is 'active', or
-- 'not_active' when the connection is gone or no longer active, and then nothing was written.
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
revoke all on function public.record_token_refresh(p_clinic_id uuid, p_access_token_encrypted text, p_access_token_expires_at timestamp with time zone, p_refresh_token_encrypted text) from public, anon, authenticated, service_role;
grant execute on function public.record_token_refresh(p_clinic_id uuid, p_access_token_encrypted text, p_access_token_expires_at timestamp with time zone, p_refresh_token_encrypted text) to service_role;

-- A refresh failed. When Google said the grant is dead (revoked, expired, Testing-mode
-- project), the clinic must reconnect: its work is parked until it does (the status trigger
-- above). The answer is the connection's status afterwards, or 'not_found'.
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
revoke all on function public.record_token_failure(p_clinic_id uuid, p_error text, p_needs_reauth boolean) from public, anon, authenticated, service_role;
grant execute on function public.record_token_failure(p_clinic_id uuid, p_error text, p_needs_reauth boolean) to service_role;

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
revoke all on function public.calendar_connections_overview() from public, anon, authenticated, service_role;
grant execute on function public.calendar_connections_overview() to service_role;
