

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


-- SCHEMA -.private
CREATE SCHEMA private;

-- SCHEMA -.public
-- *not* creating schema, since initdb creates it

-- EXTENSION -.btree_gist
CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA extensions;

-- COMMENT -.EXTENSION btree_gist
COMMENT ON EXTENSION btree_gist IS 'support for indexing common datatypes in GiST';

-- FUNCTION private.is_valid_time_zone(text)
create function private.is_valid_time_zone(zone text) returns boolean
language sql stable
set search_path = ''
as $$
  select exists (select from pg_catalog.pg_timezone_names where name = zone)
$$;

-- FUNCTION private.check_calendar_id(text)
create function private.check_calendar_id(p_calendar_id text) returns text
language plpgsql immutable set search_path = '' as $$
begin
  perform private.require(p_calendar_id is null or length(btrim(p_calendar_id)) between 1 and 1024,
                          'The calendar id must be 1 to 1024 characters');
  return nullif(btrim(p_calendar_id), '');
end
$$;

-- FUNCTION private.local_clock(timestamp with time zone, text)
create function private.local_clock(p_instant timestamptz, p_zone text) returns text
language sql stable
set search_path = ''
as $$
  select to_char(p_instant at time zone p_zone, 'HH24:MI')
$$;

-- FUNCTION private.local_day(timestamp with time zone, text)
create function private.local_day(p_instant timestamptz, p_zone text) returns text
language sql stable
set search_path = ''
as $$
  select to_char(p_instant at time zone p_zone, 'FMDay FMDD FMMonth YYYY')
$$;

-- FUNCTION private.local_to_instant(timestamp without time zone, text)
-- The instant a clinic-local wall-clock time denotes, or null when that time does not exist
-- (clocks go forward). A time that happens twice (clocks go back) resolves to its first
-- occurrence, the one before the change, and `ambiguous` says so.
create function private.local_to_instant(
  p_local timestamp, p_zone text, out instant timestamptz, out ambiguous boolean
)
language sql stable
set search_path = ''
as $$
  -- Each UTC offset in force within 6 hours of the naive guess proposes one instant; keep
  -- those that really show p_local on the clock. Transitions are months apart, so at most
  -- two offsets are in play.
  select min(c), count(distinct c) > 1
  from (values (interval '-6 hours'), (interval '0'), (interval '6 hours')) as probe(shift)
  cross join lateral (select (p_local at time zone p_zone) + probe.shift as probe_at) as p
  cross join lateral (
    select (p_local - ((p.probe_at at time zone p_zone) - (p.probe_at at time zone 'UTC'))) at time zone 'UTC' as c
  ) as candidate
  where (candidate.c at time zone p_zone) = p_local
$$;

-- FUNCTION private.normalise_phone(text, text)
-- A phone number in E.164 form, or null when it cannot be one. "+..." and "00..." are
-- international; "0..." is national (the clinic's country code replaces the 0); other digit
-- strings are national numbers written without a trunk 0, unless they already start with the
-- country code and are long enough to include it.
create function private.normalise_phone(p_phone text, p_country_code text) returns text
language plpgsql stable
set search_path = ''
as $$
declare
  v text := regexp_replace(coalesce(p_phone, ''), '[[:space:]().-]', '', 'g');
begin
  if v ~ '^00' then
    v := '+' || substr(v, 3);
  elsif v ~ '^0' then
    v := '+' || p_country_code || substr(v, 2);
  elsif v ~ '^[0-9]+$' then
    v := '+' || case when v like p_country_code || '%' and length(v) >= 11 then v
                     else p_country_code || v end;
  end if;
  return case when v ~ '^\+[1-9][0-9]{6,14}$' then v end;
end
$$;

-- FUNCTION private.printable(text, integer)
-- Caller-supplied text made safe to echo in a one-line answer.
create function private.printable(p_text text, p_max integer default 40) returns text
language sql immutable
set search_path = ''
as $$
  select case when length(t) > p_max then left(t, p_max) || '...' else t end
  from (select regexp_replace(p_text, '[\x01-\x1f\x7f-\x9f\u2028\u2029]', '?', 'g') as t) s
$$;

-- FUNCTION private.refuse(text)
-- Volatile so the planner never evaluates a refusal early (e.g. inside an untaken CASE arm).
create function private.refuse(p_message text) returns void
language plpgsql volatile
set search_path = ''
as $$
begin
  raise exception using errcode = 'VA001', message = p_message;
end
$$;

-- FUNCTION private.require(boolean, text)
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

-- FUNCTION private.require_owner(text)
create function private.require_owner(p_owner text) returns void
language sql volatile
set search_path = ''
as $$
  select private.require(length(p_owner) between 1 and 200, 'lease owner must be 1 to 200 characters')
$$;

-- FUNCTION private.zone_place(text)
-- 'Europe/London' -> 'London'
create function private.zone_place(p_zone text) returns text
language sql immutable
set search_path = ''
as $$
  select replace(regexp_replace(p_zone, '^.*/', ''), '_', ' ')
$$;

GRANT USAGE ON SCHEMA private TO vapi_clinic;
GRANT USAGE ON SCHEMA private TO clinic_key_resolver;
GRANT USAGE ON SCHEMA private TO service_role;

GRANT USAGE ON SCHEMA public TO anon;
GRANT USAGE ON SCHEMA public TO authenticated;
GRANT USAGE ON SCHEMA public TO service_role;

revoke all on function private.is_valid_time_zone(zone text) from public;
grant execute on function private.is_valid_time_zone(zone text) to service_role;
grant execute on function private.is_valid_time_zone(zone text) to vapi_clinic;

revoke all on function private.check_calendar_id(p_calendar_id text) from public;
grant execute on function private.check_calendar_id(p_calendar_id text) to service_role;

revoke all on function private.local_clock(p_instant timestamp with time zone, p_zone text) from public;
grant execute on function private.local_clock(p_instant timestamp with time zone, p_zone text) to vapi_clinic;
grant execute on function private.local_clock(p_instant timestamp with time zone, p_zone text) to service_role;

revoke all on function private.local_day(p_instant timestamp with time zone, p_zone text) from public;
grant execute on function private.local_day(p_instant timestamp with time zone, p_zone text) to vapi_clinic;
grant execute on function private.local_day(p_instant timestamp with time zone, p_zone text) to service_role;

revoke all on function private.local_to_instant(p_local timestamp without time zone, p_zone text, OUT instant timestamp with time zone, OUT ambiguous boolean) from public;
grant execute on function private.local_to_instant(p_local timestamp without time zone, p_zone text, OUT instant timestamp with time zone, OUT ambiguous boolean) to vapi_clinic;
grant execute on function private.local_to_instant(p_local timestamp without time zone, p_zone text, OUT instant timestamp with time zone, OUT ambiguous boolean) to service_role;

revoke all on function private.normalise_phone(p_phone text, p_country_code text) from public;
grant execute on function private.normalise_phone(p_phone text, p_country_code text) to vapi_clinic;

revoke all on function private.printable(p_text text, p_max integer) from public;
grant execute on function private.printable(p_text text, p_max integer) to vapi_clinic;
grant execute on function private.printable(p_text text, p_max integer) to service_role;

revoke all on function private.refuse(p_message text) from public;
grant execute on function private.refuse(p_message text) to vapi_clinic;

revoke all on function private.require(p_condition boolean, p_message text) from public;
grant execute on function private.require(p_condition boolean, p_message text) to service_role;

revoke all on function private.require_owner(p_owner text) from public;
grant execute on function private.require_owner(p_owner text) to service_role;

revoke all on function private.zone_place(p_zone text) from public;
grant execute on function private.zone_place(p_zone text) to vapi_clinic;

