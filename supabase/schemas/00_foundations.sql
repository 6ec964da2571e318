-- Foundations: the roles and schemas everything else is built on, and the small helpers every
-- concern uses (saying no, echoing caller text, clinic-local time, phone numbers).
--
-- Tenancy model (the rules the later files keep):
--   * `vapi_clinic` is the role the Vapi tools run as. It holds no BYPASSRLS and owns no table, so
--     every row it touches passes RLS scoped to the clinic whose key came with the request
--     (`private.request_clinic_id()`, 10_clinics_and_keys): a bug in a tool body cannot reach
--     another clinic's rows.
--   * `clinic_key_resolver` is the only role that can read key hashes; it owns the one function
--     that turns the request's key into a clinic id.
--   * `authenticated` staff see the clinics they are members of; `anon` sees no table.
--   * `service_role` (the daemon, operator commands) bypasses RLS, as in Supabase.
--
-- `private` holds what PostgREST must not expose. Functions are executable by PUBLIC by default
-- (and that default cannot be revoked per schema), so every function here and in the later files
-- takes it back and grants execute by name, right after its definition.
--
-- Two ways to say no:
--   * private.refuse() raises SQLSTATE VA001: a tool's refusal. vapi_tool_call turns it into that
--     call's `error` and rolls back the call's savepoint, so a refused call changes nothing.
--   * private.require() raises P0001: bad input to an operator or daemon function, worded so the
--     operator can act on it.

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

-- `public` is Supabase's (usage for anon, authenticated and service_role comes with it).
create schema private;
grant usage on schema private to vapi_clinic, clinic_key_resolver, service_role;

-- Exclusion constraints mixing `=` on plain columns with `&&` on ranges (opening hours,
-- appointments) need GiST operator classes for the plain types.
create extension if not exists btree_gist with schema extensions;


-- Saying no -------------------------------------------------------------------------------------

-- Bad input to an operator or daemon function: P0001 with a sentence the operator can act on.
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
revoke all on function private.require(p_condition boolean, p_message text) from public;
grant execute on function private.require(p_condition boolean, p_message text) to service_role;

-- A tool's refusal (VA001), which the caller hears as the call's `error`.
-- Volatile so the planner never evaluates a refusal early (e.g. inside an untaken CASE arm).
create function private.refuse(p_message text) returns void
language plpgsql volatile
set search_path = ''
as $$
begin
  raise exception using errcode = 'VA001', message = p_message;
end
$$;
revoke all on function private.refuse(p_message text) from public;
grant execute on function private.refuse(p_message text) to vapi_clinic;

-- Every lease (sync queue, calendar mirror, push channels) names its owner, a replica's id of
-- 1 to 200 characters.
create function private.require_owner(p_owner text) returns void
language sql volatile
set search_path = ''
as $$
  select private.require(length(p_owner) between 1 and 200, 'lease owner must be 1 to 200 characters')
$$;
revoke all on function private.require_owner(p_owner text) from public;
grant execute on function private.require_owner(p_owner text) to service_role;


-- Caller text -------------------------------------------------------------------------------------

-- Caller-supplied text made safe to echo in a one-line answer.
create function private.printable(p_text text, p_max integer default 40) returns text
language sql immutable
set search_path = ''
as $$
  select case when length(t) > p_max then left(t, p_max) || '...' else t end
  from (select regexp_replace(p_text, '[\x01-\x1f\x7f-\x9f\u2028\u2029]', '?', 'g') as t) s
$$;
revoke all on function private.printable(p_text text, p_max integer) from public;
grant execute on function private.printable(p_text text, p_max integer) to vapi_clinic;
grant execute on function private.printable(p_text text, p_max integer) to service_role;


-- Clinic-local time -------------------------------------------------------------------------------
-- Times of day (opening hours, what callers say) are in the clinic's IANA time_zone; instants are
-- timestamptz.

-- Whether PostgreSQL knows the zone (clinics.time_zone's check).
create function private.is_valid_time_zone(zone text) returns boolean
language sql stable
set search_path = ''
as $$
  select exists (select from pg_catalog.pg_timezone_names where name = zone)
$$;
revoke all on function private.is_valid_time_zone(zone text) from public;
grant execute on function private.is_valid_time_zone(zone text) to service_role;
grant execute on function private.is_valid_time_zone(zone text) to vapi_clinic;

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
revoke all on function private.local_to_instant(p_local timestamp without time zone, p_zone text, OUT instant timestamp with time zone, OUT ambiguous boolean) from public;
grant execute on function private.local_to_instant(p_local timestamp without time zone, p_zone text, OUT instant timestamp with time zone, OUT ambiguous boolean) to vapi_clinic;
grant execute on function private.local_to_instant(p_local timestamp without time zone, p_zone text, OUT instant timestamp with time zone, OUT ambiguous boolean) to service_role;

-- An instant's day as the assistant says it, in the clinic's zone: 'Monday 2 March 2026'.
create function private.local_day(p_instant timestamptz, p_zone text) returns text
language sql stable
set search_path = ''
as $$
  select to_char(p_instant at time zone p_zone, 'FMDay FMDD FMMonth YYYY')
$$;
revoke all on function private.local_day(p_instant timestamp with time zone, p_zone text) from public;
grant execute on function private.local_day(p_instant timestamp with time zone, p_zone text) to vapi_clinic;
grant execute on function private.local_day(p_instant timestamp with time zone, p_zone text) to service_role;

-- An instant's time of day in the clinic's zone, 24-hour clock: '14:30'.
create function private.local_clock(p_instant timestamptz, p_zone text) returns text
language sql stable
set search_path = ''
as $$
  select to_char(p_instant at time zone p_zone, 'HH24:MI')
$$;
revoke all on function private.local_clock(p_instant timestamp with time zone, p_zone text) from public;
grant execute on function private.local_clock(p_instant timestamp with time zone, p_zone text) to vapi_clinic;
grant execute on function private.local_clock(p_instant timestamp with time zone, p_zone text) to service_role;

-- The place a zone is named after, for saying which clock times are in.
-- 'Europe/London' -> 'London'
create function private.zone_place(p_zone text) returns text
language sql immutable
set search_path = ''
as $$
  select replace(regexp_replace(p_zone, '^.*/', ''), '_', ' ')
$$;
revoke all on function private.zone_place(p_zone text) from public;
grant execute on function private.zone_place(p_zone text) to vapi_clinic;


-- Phone numbers -----------------------------------------------------------------------------------

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
revoke all on function private.normalise_phone(p_phone text, p_country_code text) from public;
grant execute on function private.normalise_phone(p_phone text, p_country_code text) to vapi_clinic;
