-- Clinics connect themselves: links a clinic's manager opens in a browser, served by the daemon's public
-- listener. A link's secret is shown once (in the URL the operator sends); only its SHA-256 is stored,
-- like clinic keys.
--
-- - connect links (`/connect/<secret>`): single use, expiring. Pressing "Continue to Google" records the
--   OAuth state's hash and the PKCE verifier (Fernet-encrypted by the daemon) on the link; Google's
--   callback is accepted only for that state, while the link is open, and completing it stores the
--   connection and marks the link used in one transaction (so a replayed callback or a second tab stores
--   nothing). The state's hash stays on a used or revoked link, so a late or replayed callback is told so;
--   the verifier goes.
-- - status links (`/clinic/<secret>`): the clinic's status page, reusable until they expire or are revoked.
--
-- Everything is for the daemon (the service role) only; RLS on with no policies. Every function is
-- revoked from anon and authenticated too, not only from PUBLIC: Supabase's default privileges give new
-- functions in public to the API roles (projects from before 30 May 2026), and an API role has no
-- business running them at all.

create table public.clinic_links (
  id uuid primary key default gen_random_uuid(),
  clinic_id uuid not null references public.clinics (id) on delete cascade,
  purpose text not null check (purpose in ('connect', 'status')),
  secret_hash bytea not null unique check (length(secret_hash) = 32),
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  used_at timestamptz,
  revoked_at timestamptz,
  -- connect links, once the manager has pressed "Continue to Google":
  state_hash bytea unique check (length(state_hash) = 32),
  code_verifier_encrypted text check (code_verifier_encrypted ~ '^gAAAAA[A-Za-z0-9_-]+=*$'),
  consent_started_at timestamptz,
  constraint clinic_links_check check (expires_at > created_at),
  -- only a connect link is used, or carries a consent
  constraint clinic_links_check1 check (purpose = 'connect' or (used_at is null and state_hash is null))
);
create index clinic_links_clinic on public.clinic_links (clinic_id, created_at desc);
comment on table public.clinic_links is
  'Links a clinic opens in a browser (connect Google; the clinic status page). Only the secret''s SHA-256 is kept.';

alter table public.clinic_links enable row level security;
revoke all on table public.clinic_links from anon, authenticated, service_role;
grant all on table public.clinic_links to service_role;
-- For the service role only, as calendar_channels is (75_push_channels.sql says why this policy):
-- no other role gets past it, whatever it is granted or whatever permissive policy is ever added.
create policy service_role_only on public.clinic_links as restrictive for all to public
  using (false) with check (false);

------------------------------------------------------------------------------------------------------------
-- A link's secret and state
------------------------------------------------------------------------------------------------------------

-- What is stored of a link's secret, and of a consent's state: its SHA-256.
create or replace function private.clinic_link_hash(p_secret text) returns bytea
language sql immutable
set search_path = ''
as $$
  select pg_catalog.sha256(pg_catalog.convert_to(coalesce(p_secret, ''), 'UTF8'))
$$;
revoke all on function private.clinic_link_hash(p_secret text) from public;
grant execute on function private.clinic_link_hash(p_secret text) to service_role;

-- The link's state as a word: open, used, expired or revoked.
create or replace function private.clinic_link_state(p_link public.clinic_links) returns text
language sql stable
set search_path = ''
as $$
  select case
    when p_link.revoked_at is not null then 'revoked'
    when p_link.used_at is not null then 'used'
    when p_link.expires_at <= now() then 'expired'
    else 'open'
  end
$$;
revoke all on function private.clinic_link_state(p_link public.clinic_links) from public;
grant execute on function private.clinic_link_state(p_link public.clinic_links) to service_role;

------------------------------------------------------------------------------------------------------------
-- For the operator
------------------------------------------------------------------------------------------------------------

-- A new link for a clinic; the secret is returned once and never stored.
create or replace function public.issue_clinic_link(p_clinic_id uuid, p_purpose text, p_valid_for interval)
returns table (id uuid, secret text, expires_at timestamptz)
language plpgsql
set search_path = ''
as $$
declare
  v_secret text;
  v_id uuid;
  v_expires timestamptz;
begin
  if p_purpose is null or p_purpose not in ('connect', 'status') then
    raise exception 'A link is for connect or status, not %', coalesce(p_purpose, 'nothing') using errcode = 'P0001';
  end if;
  if p_valid_for is null or p_valid_for < interval '5 minutes' or p_valid_for > interval '90 days' then
    raise exception 'A link lasts from 5 minutes to 90 days, not %', coalesce(p_valid_for::text, 'forever')
      using errcode = 'P0001';
  end if;
  if not exists (select from public.clinics c where c.id = p_clinic_id) then
    raise exception 'No clinic with id %', p_clinic_id using errcode = 'P0002';
  end if;
  v_secret := pg_catalog.rtrim(pg_catalog.translate(pg_catalog.encode(
                pg_catalog.uuid_send(gen_random_uuid()) || pg_catalog.uuid_send(gen_random_uuid()),
                'base64'), '+/', '-_'), '=');
  insert into public.clinic_links (clinic_id, purpose, secret_hash, expires_at)
  values (p_clinic_id, p_purpose, private.clinic_link_hash(v_secret), now() + p_valid_for)
  returning clinic_links.id, clinic_links.expires_at into v_id, v_expires;
  return query select v_id, v_secret, v_expires;
end
$$;
revoke all on function public.issue_clinic_link(p_clinic_id uuid, p_purpose text, p_valid_for interval) from public, anon, authenticated, service_role;
grant execute on function public.issue_clinic_link(p_clinic_id uuid, p_purpose text, p_valid_for interval) to service_role;

-- A clinic's links, newest first, each with its state word; nothing of the secrets.
create or replace function public.clinic_links(p_clinic_id uuid)
returns table (id uuid, purpose text, state text, created_at timestamptz, expires_at timestamptz,
               used_at timestamptz, revoked_at timestamptz)
language sql stable
set search_path = ''
as $$
  select l.id, l.purpose, private.clinic_link_state(l), l.created_at, l.expires_at, l.used_at, l.revoked_at
  from public.clinic_links l
  where l.clinic_id = p_clinic_id
  order by l.created_at desc
$$;
revoke all on function public.clinic_links(p_clinic_id uuid) from public, anon, authenticated, service_role;
grant execute on function public.clinic_links(p_clinic_id uuid) to service_role;

-- Revokes a link (at once, and for good; revoking twice keeps the first time) and drops a consent's PKCE
-- verifier. An unknown id is an error.
create or replace function public.revoke_clinic_link(p_link_id uuid) returns void
language plpgsql
set search_path = ''
as $$
begin
  update public.clinic_links
     set revoked_at = coalesce(revoked_at, now()), code_verifier_encrypted = null
   where id = p_link_id;
  if not found then
    raise exception 'No clinic link with id %', p_link_id using errcode = 'P0002';
  end if;
end
$$;
revoke all on function public.revoke_clinic_link(p_link_id uuid) from public, anon, authenticated, service_role;
grant execute on function public.revoke_clinic_link(p_link_id uuid) to service_role;

-- For verify: clinics never connected to Google, and connect links still open.
create or replace function public.connect_readiness() returns jsonb
language sql stable
set search_path = ''
as $$
  select jsonb_build_object(
    'never_connected', coalesce((
      select jsonb_agg(jsonb_build_object('clinic_id', c.id, 'clinic_name', c.name) order by c.name, c.id)
      from public.clinics c
      where not exists (select from public.calendar_connections k where k.clinic_id = c.id)), '[]'::jsonb),
    'open_links', coalesce((
      select jsonb_agg(jsonb_build_object('link_id', l.id, 'clinic_id', l.clinic_id, 'clinic_name', c.name,
                                          'purpose', l.purpose, 'expires_at', l.expires_at)
                       order by l.expires_at)
      from public.clinic_links l join public.clinics c on c.id = l.clinic_id
      where private.clinic_link_state(l) = 'open'), '[]'::jsonb))
$$;
revoke all on function public.connect_readiness() from public, anon, authenticated, service_role;
grant execute on function public.connect_readiness() to service_role;

------------------------------------------------------------------------------------------------------------
-- Connect links: the consent
------------------------------------------------------------------------------------------------------------

-- What a link opens: {"state": open|used|expired|revoked|unknown}, and for an open link its id and the
-- clinic's name, calendar and zone. Nothing of the clinic for a link that is not open.
create or replace function public.open_clinic_link(p_secret text, p_purpose text) returns jsonb
language sql stable
set search_path = ''
as $$
  select coalesce(
    (select case when private.clinic_link_state(l) = 'open' then
               jsonb_build_object('state', 'open', 'link_id', l.id, 'clinic_id', c.id, 'clinic_name', c.name,
                                  'calendar_id', c.calendar_id, 'time_zone', c.time_zone,
                                  'expires_at', l.expires_at)
             else jsonb_build_object('state', private.clinic_link_state(l)) end
     from public.clinic_links l join public.clinics c on c.id = l.clinic_id
     where l.secret_hash = private.clinic_link_hash(p_secret) and l.purpose = p_purpose),
    jsonb_build_object('state', 'unknown'))
$$;
revoke all on function public.open_clinic_link(p_secret text, p_purpose text) from public, anon, authenticated, service_role;
grant execute on function public.open_clinic_link(p_secret text, p_purpose text) to service_role;

-- The manager pressed "Continue to Google" on an open connect link: the consent's state (its hash) and PKCE
-- verifier go on the link, replacing an earlier attempt's (whose callback is then refused). Returns the
-- link's state word; only 'open' recorded anything.
create or replace function public.begin_connect_consent(p_secret text, p_state text, p_verifier_encrypted text)
returns text
language plpgsql
set search_path = ''
as $$
declare
  v_link public.clinic_links;
begin
  select * into v_link from public.clinic_links
   where secret_hash = private.clinic_link_hash(p_secret) and purpose = 'connect'
   for update;
  if not found then
    return 'unknown';
  end if;
  if private.clinic_link_state(v_link) <> 'open' then
    return private.clinic_link_state(v_link);
  end if;
  if p_state is null or length(p_state) < 32 then
    raise exception 'A consent state is at least 32 characters' using errcode = 'P0001';
  end if;
  update public.clinic_links
     set state_hash = private.clinic_link_hash(p_state), code_verifier_encrypted = p_verifier_encrypted, consent_started_at = now()
   where id = v_link.id;
  return 'open';
end
$$;
revoke all on function public.begin_connect_consent(p_secret text, p_state text, p_verifier_encrypted text) from public, anon, authenticated, service_role;
grant execute on function public.begin_connect_consent(p_secret text, p_state text, p_verifier_encrypted text) to service_role;

-- Google's callback: the link whose consent carries this state. {"state": open|used|expired|revoked|unknown};
-- for open, the clinic and the encrypted PKCE verifier.
create or replace function public.connect_consent(p_state text) returns jsonb
language sql stable
set search_path = ''
as $$
  select coalesce(
    (select case when private.clinic_link_state(l) = 'open' then
               jsonb_build_object('state', 'open', 'link_id', l.id, 'clinic_id', c.id, 'clinic_name', c.name,
                                  'calendar_id', c.calendar_id, 'time_zone', c.time_zone,
                                  'expires_at', l.expires_at, 'code_verifier_encrypted', l.code_verifier_encrypted)
             else jsonb_build_object('state', private.clinic_link_state(l)) end
     from public.clinic_links l join public.clinics c on c.id = l.clinic_id
     where l.state_hash = private.clinic_link_hash(p_state) and l.purpose = 'connect'),
    jsonb_build_object('state', 'unknown'))
$$;
revoke all on function public.connect_consent(p_state text) from public, anon, authenticated, service_role;
grant execute on function public.connect_consent(p_state text) to service_role;

-- The callback read the calendar with the new token: store the connection (which resumes parked bookings)
-- and spend the link, together, only while the link is still open for this state. Returns the link's state
-- word as it was; anything but 'open' stored nothing.
create or replace function public.complete_connect_consent(
  p_state text, p_google_account text, p_refresh_token_encrypted text, p_scopes text[],
  p_access_token_encrypted text default null, p_access_token_expires_at timestamptz default null,
  p_refresh_token_expires_at timestamptz default null)
returns text
language plpgsql
set search_path = ''
as $$
declare
  v_link public.clinic_links;
begin
  select * into v_link from public.clinic_links
   where state_hash = private.clinic_link_hash(p_state) and purpose = 'connect'
   for update;
  if not found then
    return 'unknown';
  end if;
  if private.clinic_link_state(v_link) <> 'open' then
    return private.clinic_link_state(v_link);
  end if;
  update public.clinic_links
     set used_at = now(), code_verifier_encrypted = null
   where id = v_link.id;
  perform public.save_calendar_connection(
    v_link.clinic_id, p_google_account, p_refresh_token_encrypted, p_scopes, p_access_token_encrypted,
    p_access_token_expires_at, p_refresh_token_expires_at);
  return 'open';
end
$$;
revoke all on function public.complete_connect_consent(p_state text, p_google_account text, p_refresh_token_encrypted text, p_scopes text[], p_access_token_encrypted text, p_access_token_expires_at timestamp with time zone, p_refresh_token_expires_at timestamp with time zone) from public, anon, authenticated, service_role;
grant execute on function public.complete_connect_consent(p_state text, p_google_account text, p_refresh_token_encrypted text, p_scopes text[], p_access_token_encrypted text, p_access_token_expires_at timestamp with time zone, p_refresh_token_expires_at timestamp with time zone) to service_role;

------------------------------------------------------------------------------------------------------------
-- Status links: the clinic's page
------------------------------------------------------------------------------------------------------------

-- The clinic status page behind an open status link: the clinic, its Google connection, upcoming bookings with
-- their sync state, and bookings that failed or wait, with the reason. Of a patient only what the clinic's
-- calendar event already shows its staff (name, service, reference). {"state": ...} alone for a link that is
-- not open.
create or replace function public.clinic_status_page(p_secret text) returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  v_link public.clinic_links;
  v_clinic public.clinics;
begin
  select * into v_link from public.clinic_links
   where secret_hash = private.clinic_link_hash(p_secret) and purpose = 'status';
  if not found then
    return jsonb_build_object('state', 'unknown');
  end if;
  if private.clinic_link_state(v_link) <> 'open' then
    return jsonb_build_object('state', private.clinic_link_state(v_link));
  end if;
  select * into v_clinic from public.clinics where id = v_link.clinic_id;
  return jsonb_build_object(
    'state', 'open',
    'link_id', v_link.id,
    'expires_at', v_link.expires_at,
    'clinic_id', v_clinic.id,
    'clinic_name', v_clinic.name,
    'calendar_id', v_clinic.calendar_id,
    'time_zone', v_clinic.time_zone,
    'connection', (
      select jsonb_build_object('status', k.status, 'google_account', k.google_account,
                                'connected_at', k.connected_at, 'last_error', k.last_error,
                                'refresh_token_expires_at', k.refresh_token_expires_at)
      from public.calendar_connections k where k.clinic_id = v_clinic.id),
    'upcoming', coalesce((
      select jsonb_agg(jsonb_build_object(
               'starts_at', a.starts_at, 'local_start', to_char(a.starts_at at time zone v_clinic.time_zone,
                                                                'Dy DD Mon YYYY HH24:MI'),
               'reference', a.reference, 'service', a.service, 'patient_name', a.patient ->> 'name',
               'status', a.status, 'sync_state', a.sync_state, 'reason', coalesce(a.last_sync_error, a.change_reason))
             order by a.starts_at)
      from (select * from public.appointments
            where clinic_id = v_clinic.id and ends_at > now()
            order by starts_at limit 200) a), '[]'::jsonb),
    'failures', coalesce((
      select jsonb_agg(jsonb_build_object(
               'starts_at', a.starts_at, 'local_start', to_char(a.starts_at at time zone v_clinic.time_zone,
                                                                'Dy DD Mon YYYY HH24:MI'),
               'reference', a.reference, 'service', a.service, 'patient_name', a.patient ->> 'name',
               'status', a.status, 'sync_state', a.sync_state, 'reason', a.last_sync_error)
             order by a.starts_at)
      from (select * from public.appointments
            where clinic_id = v_clinic.id and sync_state in ('failed', 'parked')
            order by starts_at desc limit 100) a), '[]'::jsonb));
end
$$;
revoke all on function public.clinic_status_page(p_secret text) from public, anon, authenticated, service_role;
grant execute on function public.clinic_status_page(p_secret text) to service_role;

-- "Reconnect Google" on the status page: a fresh connect link for the status link's clinic (an hour).
create or replace function public.reconnect_link(p_status_secret text)
returns table (id uuid, secret text, expires_at timestamptz)
language plpgsql
set search_path = ''
as $$
declare
  v_link public.clinic_links;
begin
  select * into v_link from public.clinic_links
   where secret_hash = private.clinic_link_hash(p_status_secret) and purpose = 'status';
  if not found or private.clinic_link_state(v_link) <> 'open' then
    return;
  end if;
  return query select * from public.issue_clinic_link(v_link.clinic_id, 'connect', interval '1 hour');
end
$$;
revoke all on function public.reconnect_link(p_status_secret text) from public, anon, authenticated, service_role;
grant execute on function public.reconnect_link(p_status_secret text) to service_role;
