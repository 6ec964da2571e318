-- FUNCTION private.calendar_connections_status_changed()
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

-- FUNCTION private.calendar_connections_touch()
create function private.calendar_connections_touch() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

-- FUNCTION public.calendar_connection_tokens(uuid)
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

-- FUNCTION public.calendar_connections_overview()
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

-- FUNCTION public.calendar_connections_to_refresh(integer)
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

-- FUNCTION public.record_token_failure(uuid, text, boolean)
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

-- FUNCTION public.record_token_refresh(uuid, text, timestamp with time zone, text)
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

-- FUNCTION public.save_calendar_connection(uuid, text, text, text[], text, timestamp with time zone, timestamp with time zone)
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

-- TABLE public.calendar_connections
CREATE TABLE public.calendar_connections (
    clinic_id uuid NOT NULL,
    google_account text,
    refresh_token_encrypted text NOT NULL,
    access_token_encrypted text,
    access_token_expires_at timestamp with time zone,
    scopes text[] DEFAULT '{}'::text[] NOT NULL,
    status text DEFAULT 'active'::text NOT NULL,
    last_refreshed_at timestamp with time zone,
    last_error text,
    connected_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    refresh_token_expires_at timestamp with time zone,
    CONSTRAINT calendar_connections_access_token_encrypted_check CHECK ((access_token_encrypted ~ '^gAAAAA[A-Za-z0-9_-]+=*$'::text)),
    CONSTRAINT calendar_connections_google_account_check CHECK ((length(google_account) <= 320)),
    CONSTRAINT calendar_connections_refresh_token_encrypted_check CHECK ((refresh_token_encrypted ~ '^gAAAAA[A-Za-z0-9_-]+=*$'::text)),
    CONSTRAINT calendar_connections_status_check CHECK ((status = ANY (ARRAY['active'::text, 'needs_reauth'::text, 'revoked'::text])))
);

-- COMMENT public.COLUMN calendar_connections.refresh_token_expires_at
COMMENT ON COLUMN public.calendar_connections.refresh_token_expires_at IS 'When Google said the refresh token dies (it says so for time-limited grants, e.g. a project in "Testing" gives 7 days); null when Google set no limit.';

-- CONSTRAINT public.calendar_connections calendar_connections_pkey
ALTER TABLE ONLY public.calendar_connections
    ADD CONSTRAINT calendar_connections_pkey PRIMARY KEY (clinic_id);

-- TRIGGER public.calendar_connections calendar_connections_status_changed
CREATE TRIGGER calendar_connections_status_changed AFTER INSERT OR UPDATE OF status ON public.calendar_connections FOR EACH ROW WHEN ((new.status IS NOT NULL)) EXECUTE FUNCTION private.calendar_connections_status_changed();

-- TRIGGER public.calendar_connections calendar_connections_touch
CREATE TRIGGER calendar_connections_touch BEFORE UPDATE ON public.calendar_connections FOR EACH ROW EXECUTE FUNCTION private.calendar_connections_touch();

-- FK CONSTRAINT public.calendar_connections calendar_connections_clinic_id_fkey
ALTER TABLE ONLY public.calendar_connections
    ADD CONSTRAINT calendar_connections_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;

-- ROW SECURITY public.calendar_connections
ALTER TABLE public.calendar_connections ENABLE ROW LEVEL SECURITY;

-- POLICY public.calendar_connections members_read
CREATE POLICY members_read ON public.calendar_connections FOR SELECT TO authenticated USING ((clinic_id IN ( SELECT clinic_members.clinic_id
   FROM public.clinic_members)));

revoke all on function private.calendar_connections_status_changed() from public;

revoke all on function private.calendar_connections_touch() from public;

revoke all on function public.calendar_connection_tokens(p_clinic_id uuid) from public, anon, authenticated, service_role;
grant execute on function public.calendar_connection_tokens(p_clinic_id uuid) to service_role;

revoke all on function public.calendar_connections_overview() from public, anon, authenticated, service_role;
grant execute on function public.calendar_connections_overview() to service_role;

revoke all on function public.calendar_connections_to_refresh(p_within_seconds integer) from public, anon, authenticated, service_role;
grant execute on function public.calendar_connections_to_refresh(p_within_seconds integer) to service_role;

revoke all on function public.record_token_failure(p_clinic_id uuid, p_error text, p_needs_reauth boolean) from public, anon, authenticated, service_role;
grant execute on function public.record_token_failure(p_clinic_id uuid, p_error text, p_needs_reauth boolean) to service_role;

revoke all on function public.record_token_refresh(p_clinic_id uuid, p_access_token_encrypted text, p_access_token_expires_at timestamp with time zone, p_refresh_token_encrypted text) from public, anon, authenticated, service_role;
grant execute on function public.record_token_refresh(p_clinic_id uuid, p_access_token_encrypted text, p_access_token_expires_at timestamp with time zone, p_refresh_token_encrypted text) to service_role;

revoke all on function public.save_calendar_connection(p_clinic_id uuid, p_google_account text, p_refresh_token_encrypted text, p_scopes text[], p_access_token_encrypted text, p_access_token_expires_at timestamp with time zone, p_refresh_token_expires_at timestamp with time zone) from public, anon, authenticated, service_role;
grant execute on function public.save_calendar_connection(p_clinic_id uuid, p_google_account text, p_refresh_token_encrypted text, p_scopes text[], p_access_token_encrypted text, p_access_token_expires_at timestamp with time zone, p_refresh_token_expires_at timestamp with time zone) to service_role;

revoke all on table public.calendar_connections from anon, authenticated, service_role;
grant all on table public.calendar_connections to service_role;

grant select (clinic_id) on table public.calendar_connections TO authenticated;

grant select (google_account) on table public.calendar_connections TO authenticated;

grant select (scopes) on table public.calendar_connections TO authenticated;

grant select (status) on table public.calendar_connections TO authenticated;

grant select (last_refreshed_at) on table public.calendar_connections TO authenticated;

grant select (last_error) on table public.calendar_connections TO authenticated;

grant select (connected_at) on table public.calendar_connections TO authenticated;

grant select (updated_at) on table public.calendar_connections TO authenticated;

