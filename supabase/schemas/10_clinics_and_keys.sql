-- Clinics (tenants), their services and opening hours, staff membership, and the per-clinic API
-- keys a Vapi assistant presents in the `x-clinic-key` header.
--
-- - Who sees a clinic (the tenancy model is in 00_foundations): staff (`authenticated`) the clinics
--   they are members of; the Vapi tools (`vapi_clinic`) only the clinic whose key came with the
--   request, through private.request_clinic_id(), which every tool policy asks; `anon` no table.
-- - Supabase grants every table in `public` to anon and authenticated by default: each table here
--   takes that back and grants only what each role needs, beside its definition.
-- - A key is stored only as its SHA-256 (the plain key is returned once, when issued). Only
--   `clinic_key_resolver` reads the hashes; it owns the two functions that resolve a request's key.
-- - Operators create clinics and manage keys with the functions at the end (service_role only);
--   they refuse bad input with a sentence the operator can act on.


-- Clinics -----------------------------------------------------------------------------------------

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
  created_at timestamptz not null default now(),
  mirror_max_age_minutes integer not null default 10 check (mirror_max_age_minutes between 1 and 1440)
);

comment on table public.clinics is
  'Tenants. Times of day (opening hours) are in the clinic''s IANA time_zone.';
comment on column public.clinics.mirror_max_age_minutes is
  'How old the mirror of the clinic''s Google Calendar may be before the assistant stops offering times.';

alter table public.clinics enable row level security;
revoke all on table public.clinics from anon, authenticated, service_role;
grant all on table public.clinics to service_role;
grant select on table public.clinics to authenticated;
grant select on table public.clinics to vapi_clinic;
-- Its policies (members_read, own_clinic) follow clinic_members and request_clinic_id(), which
-- they name.


-- Staff -------------------------------------------------------------------------------------------

create table public.clinic_members (
  clinic_id uuid not null references public.clinics (id) on delete cascade,
  user_id uuid not null references auth.users (id) on delete cascade,
  created_at timestamptz not null default now(),
  primary key (clinic_id, user_id)
);
create index clinic_members_user on public.clinic_members (user_id);

alter table public.clinic_members enable row level security;
revoke all on table public.clinic_members from anon, authenticated, service_role;
grant all on table public.clinic_members to service_role;
grant select on table public.clinic_members to authenticated;
-- Staff see their own memberships, and through them their clinics (Supabase's pattern:
-- the membership lookup itself runs under the membership policy, so it cannot recurse).
create policy own_memberships on public.clinic_members for select to authenticated
  using (user_id = (select auth.uid()));


-- Keys --------------------------------------------------------------------------------------------

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

alter table public.clinic_api_keys enable row level security;
revoke all on table public.clinic_api_keys from anon, authenticated, service_role;
grant all on table public.clinic_api_keys to service_role;
-- The resolver reads what resolving a key needs and stamps last_used_at; nothing else.
grant select (clinic_id, key_hash, revoked_at, last_used_at), update (last_used_at)
  on public.clinic_api_keys to clinic_key_resolver;
create policy resolve_keys on public.clinic_api_keys for select to clinic_key_resolver using (true);
create policy touch_keys on public.clinic_api_keys for update to clinic_key_resolver using (true);

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
revoke all on function private.request_clinic_id() from public;
grant execute on function private.request_clinic_id() to vapi_clinic;

-- Same as request_clinic_id(), and records that the key was used (at most once a minute,
-- so a busy assistant does not turn every call into a write on the same row). vapi_tool_call
-- asks it once per request. A key row another request is stamping right now is left alone
-- (SKIP LOCKED) instead of waited for: concurrent calls of one clinic used to queue here, once a
-- minute, behind the whole transaction of the call that stamped it.
create or replace function private.authenticate_request() returns uuid
language plpgsql volatile security definer
set search_path = ''
as $$
declare
  v_clinic_id uuid := private.request_clinic_id();
begin
  if v_clinic_id is not null then
    update public.clinic_api_keys
       set last_used_at = now()
     where key_hash = (select k.key_hash from public.clinic_api_keys k
                 where k.key_hash = pg_catalog.sha256(pg_catalog.convert_to(
                         current_setting('request.headers', true)::json ->> 'x-clinic-key', 'UTF8'))
                   and (k.last_used_at is null or k.last_used_at < now() - interval '1 minute')
                 for no key update skip locked);
  end if;
  return v_clinic_id;
end
$$;
revoke all on function private.authenticate_request() from public;
grant execute on function private.authenticate_request() to vapi_clinic;

-- Both resolver functions are security definer owned by the resolver role, the only one that can
-- read key hashes. Handing them over needs CREATE on the schema only for the moment of the change.
grant create on schema private to clinic_key_resolver;
alter function private.request_clinic_id() owner to clinic_key_resolver;
alter function private.authenticate_request() owner to clinic_key_resolver;
revoke create on schema private from clinic_key_resolver;


-- Who sees a clinic ---------------------------------------------------------------------------------

create policy members_read on public.clinics for select to authenticated
  using (id in (select clinic_id from public.clinic_members));
create policy own_clinic on public.clinics for select to vapi_clinic
  using (id = (select private.request_clinic_id()));


-- Services ----------------------------------------------------------------------------------------

-- Names are unique in the clinic ignoring case (callers do not spell case), and at most one
-- service is the default.
create table public.clinic_services (
  clinic_id uuid not null references public.clinics (id) on delete cascade,
  name text not null check (length(btrim(name)) between 1 and 80 and name !~ '[[:cntrl:]]'),
  duration_minutes integer not null check (duration_minutes between 5 and 480),
  is_default boolean not null default false,
  primary key (clinic_id, name)
);
create unique index clinic_services_name_ci on public.clinic_services (clinic_id, lower(name));
create unique index clinic_services_one_default on public.clinic_services (clinic_id) where is_default;

alter table public.clinic_services enable row level security;
revoke all on table public.clinic_services from anon, authenticated, service_role;
grant all on table public.clinic_services to service_role;
grant select on table public.clinic_services to authenticated;
grant select on table public.clinic_services to vapi_clinic;
create policy members_read on public.clinic_services for select to authenticated
  using (clinic_id in (select clinic_id from public.clinic_members));
create policy own_clinic on public.clinic_services for select to vapi_clinic
  using (clinic_id = (select private.request_clinic_id()));

-- The service asked for (case-insensitive), else the clinic's default, else its only one.
-- Otherwise the caller is refused with the services the clinic offers.
create function private.pick_service(p_clinic_id uuid, p_name text) returns public.clinic_services
language plpgsql stable
set search_path = ''
as $$
declare
  v_service public.clinic_services;
  v_offered text;
begin
  if p_name is not null then
    select * into v_service from public.clinic_services
    where clinic_id = p_clinic_id and lower(name) = lower(p_name);
  else
    select * into v_service from public.clinic_services
    where clinic_id = p_clinic_id
    order by is_default desc
    limit 1;
    if (select count(*) from public.clinic_services where clinic_id = p_clinic_id) > 1
       and not v_service.is_default then
      v_service := null;
    end if;
  end if;
  if v_service.name is null then
    select string_agg(name, ', ' order by name) into v_offered
    from public.clinic_services where clinic_id = p_clinic_id;
    if v_offered is null then
      perform private.refuse('This clinic has no bookable services set up yet');
    elsif p_name is null then
      perform private.refuse(format('Which service? This clinic offers: %s', v_offered));
    else
      perform private.refuse(format('This clinic does not offer "%s". It offers: %s',
                                    private.printable(p_name), v_offered));
    end if;
  end if;
  return v_service;
end
$$;
revoke all on function private.pick_service(p_clinic_id uuid, p_name text) from public;
grant execute on function private.pick_service(p_clinic_id uuid, p_name text) to vapi_clinic;


-- Opening hours -----------------------------------------------------------------------------------

-- ISO weekday: 1 = Monday ... 7 = Sunday. `closes` may be 24:00. A day may have several periods
-- (a lunch break), which never overlap.
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

alter table public.clinic_opening_hours enable row level security;
revoke all on table public.clinic_opening_hours from anon, authenticated, service_role;
grant all on table public.clinic_opening_hours to service_role;
grant select on table public.clinic_opening_hours to authenticated;
grant select on table public.clinic_opening_hours to vapi_clinic;
create policy members_read on public.clinic_opening_hours for select to authenticated
  using (clinic_id in (select clinic_id from public.clinic_members));
create policy own_clinic on public.clinic_opening_hours for select to vapi_clinic
  using (clinic_id = (select private.request_clinic_id()));

-- Opening hours as operators give them ([{weekday, opens, closes}, ...]), checked one by one.
-- (set_practitioner_hours reads practitioners' hours with it.)
create function private.parse_opening_hours(p_hours jsonb)
returns table (weekday smallint, opens time, closes time)
language plpgsql immutable set search_path = '' as $$
declare
  v_entry jsonb;
begin
  perform private.require(jsonb_typeof(p_hours) = 'array' and jsonb_array_length(p_hours) > 0,
                          'Give at least one period of opening hours');
  for v_entry in select value from jsonb_array_elements(p_hours) loop
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
    weekday := (v_entry ->> 'weekday')::smallint;
    opens := (v_entry ->> 'opens')::time;
    closes := (v_entry ->> 'closes')::time;
    return next;
  end loop;
end
$$;
revoke all on function private.parse_opening_hours(p_hours jsonb) from public;
grant execute on function private.parse_opening_hours(p_hours jsonb) to service_role;

-- The clinic's hours on one ISO weekday as the assistant says them ('09:00-13:00, 14:00-17:30';
-- null: closed), for "No free times on ..." answers of a clinic without practitioners.
create function private.opening_hours_text(p_clinic_id uuid, p_weekday integer) returns text
language sql stable
set search_path = ''
as $$
  select string_agg(to_char(opens, 'HH24:MI') || '-' ||
                    case when closes = time '24:00' then '24:00' else to_char(closes, 'HH24:MI') end,
                    ', ' order by opens)
  from public.clinic_opening_hours
  where clinic_id = p_clinic_id and weekday = p_weekday
$$;
revoke all on function private.opening_hours_text(p_clinic_id uuid, p_weekday integer) from public;
grant execute on function private.opening_hours_text(p_clinic_id uuid, p_weekday integer) to vapi_clinic;


-- Operator commands (service_role only) -------------------------------------------------------------

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
revoke all on function public.create_clinic(p_name text, p_time_zone text, p_calendar_id text, p_opening_hours jsonb, p_services jsonb, p_phone_country_code text) from public, anon, authenticated, service_role;
grant execute on function public.create_clinic(p_name text, p_time_zone text, p_calendar_id text, p_opening_hours jsonb, p_services jsonb, p_phone_country_code text) to service_role;

-- A clinic as the operator command shows it and as `vapi-tools` describes it to the model:
-- its settings, services, opening hours, active practitioners (and the services each offers) and
-- the health of its Google connection (never its tokens).
create or replace function public.clinic_profile(p_clinic_id uuid) returns jsonb
language plpgsql stable set search_path = '' as $$
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
           'practitioners', coalesce((
             select jsonb_agg(jsonb_build_object(
                      'id', p.id, 'name', p.name,
                      'services', coalesce(to_jsonb(p.services),
                                           (select jsonb_agg(s.name order by s.name)
                                              from public.clinic_services s where s.clinic_id = c.id)),
                      'calendar_id', p.calendar_id)
                    order by lower(p.name), p.id)
             from public.practitioners p where p.clinic_id = c.id and p.active), '[]'::jsonb),
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
revoke all on function public.clinic_profile(p_clinic_id uuid) from public, anon, authenticated, service_role;
grant execute on function public.clinic_profile(p_clinic_id uuid) to service_role;

-- Key management. The plain key is returned once and never stored: only its SHA-256 and its
-- first ten characters (key_prefix) are kept.
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
revoke all on function public.issue_clinic_key(p_clinic_id uuid, p_label text) from public, anon, authenticated, service_role;
grant execute on function public.issue_clinic_key(p_clinic_id uuid, p_label text) to service_role;

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
revoke all on function public.rotate_clinic_key(p_clinic_id uuid, p_label text, p_grace interval) from public, anon, authenticated, service_role;
grant execute on function public.rotate_clinic_key(p_clinic_id uuid, p_label text, p_grace interval) to service_role;

-- Revokes one key now. A key already revoked keeps its earlier revocation, and one in a rotation's
-- grace period loses the rest of it.
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
revoke all on function public.revoke_clinic_key(p_key_id uuid) from public, anon, authenticated, service_role;
grant execute on function public.revoke_clinic_key(p_key_id uuid) to service_role;

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
revoke all on function public.clinic_keys(p_clinic_id uuid) from public, anon, authenticated, service_role;
grant execute on function public.clinic_keys(p_clinic_id uuid) to service_role;
