-- Clinics (tenants), their opening hours and services, staff membership, and the per-clinic
-- API keys a Vapi assistant presents in the `x-clinic-key` header.
--
-- Tenancy model:
--   * `vapi_clinic` is the role the Vapi tools run as. It holds no BYPASSRLS and owns no
--     table, so every row it touches passes RLS scoped to the clinic whose key came with
--     the request (`private.request_clinic_id()`); a bug in a tool body cannot reach
--     another clinic's rows.
--   * `clinic_key_resolver` is the only role that can read key hashes; it owns the one
--     function that turns the request's key into a clinic id.
--   * `authenticated` staff see the clinics they are members of; `anon` sees no table.
--   * `service_role` (the daemon, operator commands) bypasses RLS, as in Supabase.

create extension if not exists btree_gist with schema extensions;

do $$
begin
  if not exists (select from pg_roles where rolname = 'vapi_clinic') then
    create role vapi_clinic nologin noinherit nobypassrls;
  end if;
  if not exists (select from pg_roles where rolname = 'clinic_key_resolver') then
    create role clinic_key_resolver nologin noinherit nobypassrls;
  end if;
end
$$;

-- Needed to hand function ownership to these roles (PostgreSQL 16+ no longer makes the
-- creator of a role a member of it).
grant vapi_clinic, clinic_key_resolver to current_user;

create schema if not exists private;
revoke all on schema private from public;
grant usage on schema private to vapi_clinic, clinic_key_resolver, service_role;

create function private.is_valid_time_zone(zone text) returns boolean
language sql stable
set search_path = ''
as $$
  select exists (select from pg_catalog.pg_timezone_names where name = zone)
$$;

create table public.clinics (
  id uuid primary key default gen_random_uuid(),
  name text not null check (length(btrim(name)) between 1 and 200),
  time_zone text not null default 'Europe/London' check (private.is_valid_time_zone(time_zone)),
  calendar_id text not null default 'primary' check (length(calendar_id) between 1 and 1024),
  -- Country calling code used to turn national phone numbers ("07700 900123") into E.164.
  phone_country_code text not null default '44' check (phone_country_code ~ '^[1-9][0-9]{0,2}$'),
  slot_minutes integer not null default 15 check (slot_minutes between 5 and 240),
  min_notice_minutes integer not null default 60 check (min_notice_minutes between 0 and 10080),
  booking_horizon_days integer not null default 90 check (booking_horizon_days between 1 and 730),
  created_at timestamptz not null default now()
);

comment on table public.clinics is
  'Tenants. Times of day (opening hours) are in the clinic''s IANA time_zone.';

create table public.clinic_services (
  clinic_id uuid not null references public.clinics (id) on delete cascade,
  name text not null check (length(btrim(name)) between 1 and 80 and name !~ '[[:cntrl:]]'),
  duration_minutes integer not null check (duration_minutes between 5 and 480),
  is_default boolean not null default false,
  primary key (clinic_id, name)
);
create unique index clinic_services_name_ci on public.clinic_services (clinic_id, lower(name));
create unique index clinic_services_one_default on public.clinic_services (clinic_id) where is_default;

-- ISO weekday: 1 = Monday ... 7 = Sunday. `closes` may be 24:00.
create table public.clinic_opening_hours (
  clinic_id uuid not null references public.clinics (id) on delete cascade,
  weekday smallint not null check (weekday between 1 and 7),
  opens time not null,
  closes time not null,
  check (closes > opens),
  primary key (clinic_id, weekday, opens),
  exclude using gist (
    clinic_id with =, weekday with =,
    tsrange('2000-01-01'::date + opens, '2000-01-01'::date + closes) with &&
  )
);

create table public.clinic_members (
  clinic_id uuid not null references public.clinics (id) on delete cascade,
  user_id uuid not null references auth.users (id) on delete cascade,
  created_at timestamptz not null default now(),
  primary key (clinic_id, user_id)
);
create index clinic_members_user on public.clinic_members (user_id);

-- Keys are random (about 244 bits), so a plain SHA-256 is the right hash: no salt or
-- slow hash is needed against guessing, and lookup stays a single index probe.
create table public.clinic_api_keys (
  id uuid primary key default gen_random_uuid(),
  clinic_id uuid not null references public.clinics (id) on delete cascade,
  key_hash bytea not null unique check (length(key_hash) = 32),
  -- First characters of the key, to tell keys apart in listings without revealing them.
  key_prefix text not null,
  label text not null default '' check (length(label) <= 100),
  created_at timestamptz not null default now(),
  -- A key is valid until revoked_at; a future revoked_at is a rotation grace period.
  revoked_at timestamptz,
  last_used_at timestamptz
);
create index clinic_api_keys_clinic on public.clinic_api_keys (clinic_id);

-- The clinic whose valid key came with this request, or null. Used by every tool policy.
create function private.request_clinic_id() returns uuid
language sql stable security definer
set search_path = ''
as $$
  select k.clinic_id
  from public.clinic_api_keys k
  where k.key_hash = pg_catalog.sha256(pg_catalog.convert_to(
          nullif(current_setting('request.headers', true), '')::json ->> 'x-clinic-key', 'UTF8'))
    and (k.revoked_at is null or k.revoked_at > now())
$$;

-- Same as request_clinic_id(), and records that the key was used (at most once a minute,
-- so a busy assistant does not turn every call into a write on the same row).
create function private.authenticate_request() returns uuid
language plpgsql volatile security definer
set search_path = ''
as $$
declare
  v_clinic_id uuid := private.request_clinic_id();
begin
  if v_clinic_id is not null then
    update public.clinic_api_keys
       set last_used_at = now()
     where key_hash = pg_catalog.sha256(pg_catalog.convert_to(
             current_setting('request.headers', true)::json ->> 'x-clinic-key', 'UTF8'))
       and (last_used_at is null or last_used_at < now() - interval '1 minute');
  end if;
  return v_clinic_id;
end
$$;

alter table public.clinics enable row level security;
alter table public.clinic_services enable row level security;
alter table public.clinic_opening_hours enable row level security;
alter table public.clinic_members enable row level security;
alter table public.clinic_api_keys enable row level security;

-- Supabase grants every table in `public` to anon and authenticated by default: take that
-- back and grant only what each role needs.
revoke all on public.clinics, public.clinic_services, public.clinic_opening_hours,
              public.clinic_members, public.clinic_api_keys
  from anon, authenticated, public;
grant all on public.clinics, public.clinic_services, public.clinic_opening_hours,
             public.clinic_members, public.clinic_api_keys
  to service_role;

grant select on public.clinics, public.clinic_services, public.clinic_opening_hours,
                public.clinic_members
  to authenticated;
-- Staff see their own memberships, and through them their clinics (Supabase's pattern:
-- the membership lookup itself runs under the membership policy, so it cannot recurse).
create policy own_memberships on public.clinic_members for select to authenticated
  using (user_id = (select auth.uid()));
create policy members_read on public.clinics for select to authenticated
  using (id in (select clinic_id from public.clinic_members));
create policy members_read on public.clinic_services for select to authenticated
  using (clinic_id in (select clinic_id from public.clinic_members));
create policy members_read on public.clinic_opening_hours for select to authenticated
  using (clinic_id in (select clinic_id from public.clinic_members));

grant select on public.clinics, public.clinic_services, public.clinic_opening_hours to vapi_clinic;
create policy own_clinic on public.clinics for select to vapi_clinic
  using (id = (select private.request_clinic_id()));
create policy own_clinic on public.clinic_services for select to vapi_clinic
  using (clinic_id = (select private.request_clinic_id()));
create policy own_clinic on public.clinic_opening_hours for select to vapi_clinic
  using (clinic_id = (select private.request_clinic_id()));

grant select (clinic_id, key_hash, revoked_at, last_used_at), update (last_used_at)
  on public.clinic_api_keys to clinic_key_resolver;
create policy resolve_keys on public.clinic_api_keys for select to clinic_key_resolver using (true);
create policy touch_keys on public.clinic_api_keys for update to clinic_key_resolver using (true);

-- Ownership of the resolver functions moves to the resolver role; that needs CREATE on the
-- schema only for the moment of the change.
grant create on schema private to clinic_key_resolver;
alter function private.request_clinic_id() owner to clinic_key_resolver;
alter function private.authenticate_request() owner to clinic_key_resolver;
revoke create on schema private from clinic_key_resolver;

-- Functions are executable by PUBLIC by default (and that default cannot be revoked per
-- schema): take it back from everything in `private`, then grant by name.
revoke execute on all functions in schema private from public;
grant execute on function private.request_clinic_id() to vapi_clinic;
grant execute on function private.authenticate_request() to vapi_clinic;
grant execute on function private.is_valid_time_zone(text) to service_role, vapi_clinic;

-- Key management, for operators (service_role only). The plain key is returned once and
-- never stored.
create function public.issue_clinic_key(p_clinic_id uuid, p_label text default '')
returns text
language plpgsql volatile
set search_path = ''
as $$
declare
  v_key text;
begin
  if not exists (select from public.clinics where id = p_clinic_id) then
    raise exception 'No clinic with id %', p_clinic_id using errcode = 'P0002';
  end if;
  v_key := 'ck_' || pg_catalog.translate(pg_catalog.encode(
             pg_catalog.uuid_send(gen_random_uuid()) || pg_catalog.uuid_send(gen_random_uuid()),
             'base64'), '+/=', '-_');
  insert into public.clinic_api_keys (clinic_id, key_hash, key_prefix, label)
  values (p_clinic_id, pg_catalog.sha256(pg_catalog.convert_to(v_key, 'UTF8')),
          left(v_key, 10), coalesce(p_label, ''));
  return v_key;
end
$$;

create function public.revoke_clinic_key(p_key_id uuid)
returns void
language plpgsql volatile
set search_path = ''
as $$
begin
  update public.clinic_api_keys
     set revoked_at = least(coalesce(revoked_at, now()), now())
   where id = p_key_id;
  if not found then
    raise exception 'No clinic key with id %', p_key_id using errcode = 'P0002';
  end if;
end
$$;

-- Issues a new key and revokes the clinic's other keys after `p_grace` (default: at once),
-- so a deployed assistant can be switched over without a gap.
create function public.rotate_clinic_key(
  p_clinic_id uuid, p_label text default '', p_grace interval default '0'
)
returns text
language plpgsql volatile
set search_path = ''
as $$
declare
  v_key text;
begin
  if p_grace < interval '0' then
    raise exception 'The grace period cannot be negative' using errcode = 'P0001';
  end if;
  update public.clinic_api_keys
     set revoked_at = now() + p_grace
   where clinic_id = p_clinic_id
     and (revoked_at is null or revoked_at > now() + p_grace);
  v_key := public.issue_clinic_key(p_clinic_id, p_label);
  return v_key;
end
$$;

revoke execute on function public.issue_clinic_key(uuid, text),
                           public.revoke_clinic_key(uuid),
                           public.rotate_clinic_key(uuid, text, interval)
  from public, anon, authenticated;
grant execute on function public.issue_clinic_key(uuid, text),
                          public.revoke_clinic_key(uuid),
                          public.rotate_clinic_key(uuid, text, interval)
  to service_role;
