-- supabase/schema.sql: GENERATED, DO NOT EDIT BY HAND. To change the schema, add a migration to
-- supabase/migrations/, then regenerate this file with `make schema` (python -m scripts.schema).
-- `python -m scripts.schema --check` and tests/test_schema_file.py fail while it is out of date.
--
-- Every object as it stands after all migrations: pg_dump 18 --schema-only --no-owner (privileges
-- kept) of a freshly migrated throwaway database, without pg_dump's version-specific preamble.
-- Supabase's own schemas (auth, extensions, realtime, storage, supabase_migrations, ...) are left
-- out; our schemas (public, private), the extensions our migrations create and the tables they add
-- to the supabase_realtime publication are in. The publication itself, the default privileges and
-- the role `migrator` (Supabase's `postgres`) come from the local stand-in for Supabase's own setup,
-- tests/standins/supabase_bootstrap.sql. This file is for reading; the migrations are what is applied.

--
-- Name: private; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA private;


--
-- Name: public; Type: SCHEMA; Schema: -; Owner: -
--

-- *not* creating schema, since initdb creates it


--
-- Name: btree_gist; Type: EXTENSION; Schema: -; Owner: -
--

CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA extensions;


--
-- Name: EXTENSION btree_gist; Type: COMMENT; Schema: -; Owner: -
--

COMMENT ON EXTENSION btree_gist IS 'support for indexing common datatypes in GiST';


--
-- Name: apply_appointment_event(uuid, jsonb, text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.apply_appointment_event(p_clinic_id uuid, p_event jsonb, p_zone text) RETURNS text
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $_$
declare
  v_appointment public.appointments;
  v_starts timestamptz;
  v_ends timestamptz;
  v_minimal_deletion boolean := p_event ->> 'status' = 'cancelled' and p_event ->> 'updated' is null;
begin
  select * into v_appointment from public.appointments
  where id = (p_event ->> 'appointment_id')::uuid and clinic_id = p_clinic_id
  for update;
  if v_appointment.calendar_event_id is distinct from p_event ->> 'id'
     or v_appointment.sync_state <> 'synced' or v_appointment.synced_revision is distinct from v_appointment.revision
     or (not v_minimal_deletion
         and coalesce((p_event ->> 'updated')::timestamptz, '-infinity') <= v_appointment.synced_at) then
    return 'unchanged';
  end if;
  if coalesce(p_event ->> 'revision', '') ~ '^[0-9]{1,9}$'
     and (p_event ->> 'revision')::integer < v_appointment.synced_revision then
    -- A write of ours for an older revision that Google carried out late (after the daemon had
    -- given up on it and pushed a newer one): not a change made in Google. Push the current one.
    perform public.resync_appointment(v_appointment.id);
    return 'restored';
  end if;

  if p_event ->> 'status' = 'cancelled' then
    if v_appointment.status <> 'booked' then
      return 'unchanged';
    end if;
    update public.appointments
       set status = 'cancelled', cancelled_at = now(), change_reason = 'deleted in Google Calendar'
     where id = v_appointment.id;
    perform private.mark_synced_from_calendar(v_appointment.id);
    return 'cancelled';
  end if;

  if v_appointment.status = 'cancelled' then
    -- Restored in Google after the assistant cancelled it: the cancellation stands.
    perform public.resync_appointment(v_appointment.id);
    return 'restored';
  end if;
  v_starts := private.event_instant(p_event -> 'start', p_zone);
  v_ends := private.event_instant(p_event -> 'end', p_zone);
  if (v_starts, v_ends) is not distinct from (v_appointment.starts_at, v_appointment.ends_at)
     or v_starts is null or v_ends is null or v_ends <= v_starts then
    return 'unchanged';
  end if;
  begin
    update public.appointments
       set starts_at = v_starts, ends_at = v_ends, change_reason = 'moved in Google Calendar'
     where id = v_appointment.id;
    perform private.mark_synced_from_calendar(v_appointment.id);
    return 'moved';
  exception when exclusion_violation then
    perform public.resync_appointment(v_appointment.id);
    update public.appointments
       set last_sync_error = 'Moved in Google Calendar onto another booking; the booked time was put back'
     where id = v_appointment.id;
    return 'restored';
  end;
end
$_$;


--
-- Name: appointments_start_pending(); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.appointments_start_pending() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
begin
  new.revision := 1;
  new.sync_state := 'pending';
  new.sync_attempts := 0;
  new.next_attempt_at := now();
  new.lease_owner := null;
  new.lease_expires_at := null;
  new.calendar_event_id := null;
  new.calendar_event_link := null;
  new.event_calendar_id := null;
  new.last_sync_error := null;
  new.synced_at := null;
  new.synced_revision := null;
  return new;
end
$$;


--
-- Name: appointments_track_changes(); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.appointments_track_changes() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
begin
  if (new.starts_at, new.ends_at, new.status, new.patient, new.service, new.notes, new.practitioner_id)
     is distinct from
     (old.starts_at, old.ends_at, old.status, old.patient, old.service, old.notes, old.practitioner_id)
  then
    -- updated_at is when the appointment changed, not when the daemon last touched the row.
    new.updated_at := now();
    new.revision := old.revision + 1;
    if new.sync_state not in ('in_flight', 'parked') then
      new.sync_state := 'pending';
      new.sync_attempts := 0;
      new.next_attempt_at := now();
      new.last_sync_error := null;
    end if;
  end if;
  return new;
end
$$;


--
-- Name: authenticate_request(); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.authenticate_request() RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO ''
    AS $$
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


--
-- Name: begin_budget_change(jsonb); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.begin_budget_change(p_returns jsonb) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
begin
  perform pg_catalog.pg_advisory_xact_lock(7031202611300300);
  perform private.require(p_returns is null or jsonb_typeof(p_returns) = 'array', 'returns must be a JSON array');
  update private.google_requests g
     set requests = greatest(0, g.requests - r.requests)
    from (select (e ->> 'entry')::bigint as entry, sum((e ->> 'requests')::integer) as requests
          from jsonb_array_elements(coalesce(p_returns, '[]'::jsonb)) e
          group by 1) r
   where g.id = r.entry and r.requests > 0;
  delete from private.google_requests where usable_until < now() - interval '2 minutes';
  delete from private.google_throttles where throttled_until < now() - interval '1 hour';
end
$$;


--
-- Name: broadcast_calendar_sync(); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.broadcast_calendar_sync() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO ''
    AS $$
begin
  perform realtime.send(
    pg_catalog.jsonb_build_object('appointment_id', new.id, 'clinic_id', new.clinic_id),
    'pending',
    'calendar-sync',
    true);
  return null;
end
$$;


--
-- Name: busy_message(); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.busy_message() RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path TO ''
    AS $$
  select 'The diary is busy right now and nothing was changed. Please try again in a moment'
$$;


--
-- Name: calendar_connection_changed(); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.calendar_connection_changed() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
begin
  if tg_op = 'DELETE' then
    perform private.retire_channels(old.clinic_id, 'the calendar was disconnected');
  elsif new.status <> 'active' then
    perform private.retire_channels(new.clinic_id, 'the connection needs re-authorisation');
  elsif new.refresh_token_encrypted is distinct from old.refresh_token_encrypted
        or new.google_account is distinct from old.google_account then
    perform private.retire_channels(new.clinic_id, 'the calendar was connected again');
  end if;
  return null;
end
$$;


--
-- Name: calendar_connections_status_changed(); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.calendar_connections_status_changed() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
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


--
-- Name: calendar_connections_touch(); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.calendar_connections_touch() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
begin
  new.updated_at := now();
  return new;
end
$$;


--
-- Name: check_arg_names(jsonb, text[]); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.check_arg_names(p_args jsonb, p_allowed text[]) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
declare
  v_unexpected text;
begin
  select string_agg(private.printable(k), ', ' order by k) into v_unexpected
  from jsonb_object_keys(p_args) as k
  where k <> all (p_allowed);
  if v_unexpected is not null then
    perform private.refuse(format('Unexpected argument(s): %s. This tool takes: %s',
                                  v_unexpected, array_to_string(p_allowed, ', ')));
  end if;
end
$$;


--
-- Name: is_valid_time_zone(text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.is_valid_time_zone(zone text) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select exists (select from pg_catalog.pg_timezone_names where name = zone)
$$;


--
-- Name: clinics; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.clinics (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    name text NOT NULL,
    time_zone text DEFAULT 'Europe/London'::text NOT NULL,
    calendar_id text DEFAULT 'primary'::text NOT NULL,
    phone_country_code text DEFAULT '44'::text NOT NULL,
    slot_minutes integer DEFAULT 15 NOT NULL,
    min_notice_minutes integer DEFAULT 60 NOT NULL,
    booking_horizon_days integer DEFAULT 90 NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    mirror_max_age_minutes integer DEFAULT 10 NOT NULL,
    CONSTRAINT clinics_booking_horizon_days_check CHECK (((booking_horizon_days >= 1) AND (booking_horizon_days <= 730))),
    CONSTRAINT clinics_calendar_id_check CHECK (((length(calendar_id) >= 1) AND (length(calendar_id) <= 1024))),
    CONSTRAINT clinics_min_notice_minutes_check CHECK (((min_notice_minutes >= 0) AND (min_notice_minutes <= 10080))),
    CONSTRAINT clinics_mirror_max_age_minutes_check CHECK (((mirror_max_age_minutes >= 1) AND (mirror_max_age_minutes <= 1440))),
    CONSTRAINT clinics_name_check CHECK (((length(btrim(name)) >= 1) AND (length(btrim(name)) <= 200))),
    CONSTRAINT clinics_phone_country_code_check CHECK ((phone_country_code ~ '^[1-9][0-9]{0,2}$'::text)),
    CONSTRAINT clinics_slot_minutes_check CHECK (((slot_minutes >= 5) AND (slot_minutes <= 240))),
    CONSTRAINT clinics_time_zone_check CHECK (private.is_valid_time_zone(time_zone))
);


--
-- Name: TABLE clinics; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.clinics IS 'Tenants. Times of day (opening hours) are in the clinic''s IANA time_zone.';


--
-- Name: COLUMN clinics.mirror_max_age_minutes; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.clinics.mirror_max_age_minutes IS 'How old the mirror of the clinic''s Google Calendar may be before the assistant stops offering times.';


--
-- Name: check_bookable(public.clinics, uuid, timestamp with time zone, timestamp with time zone, uuid); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.check_bookable(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
declare
  v_start timestamp := p_starts at time zone p_clinic.time_zone;
  v_end timestamp := p_ends at time zone p_clinic.time_zone;
  v_weekday integer := extract(isodow from v_start);
begin
  if p_starts <= now() then
    perform private.refuse('That time has already passed');
  end if;
  if p_starts < now() + make_interval(mins => p_clinic.min_notice_minutes) then
    perform private.refuse(format('Bookings need at least %s minutes'' notice', p_clinic.min_notice_minutes));
  end if;
  if p_starts > now() + make_interval(days => p_clinic.booking_horizon_days) then
    perform private.refuse(format('Bookings can be made at most %s days ahead', p_clinic.booking_horizon_days));
  end if;
  if not exists (select from private.diary_hours(p_clinic.id, p_practitioner, v_weekday)) then
    perform private.refuse(case when p_practitioner is null
                                then format('The clinic is closed on %ss', to_char(v_start, 'FMDay'))
                                else format('%s does not see patients on %ss', private.practitioner_name(p_practitioner),
                                            to_char(v_start, 'FMDay')) end);
  end if;
  if not exists (select from private.diary_hours(p_clinic.id, p_practitioner, v_weekday) h
                 where v_start >= v_start::date + h.opens and v_end <= v_start::date + h.closes) then
    perform private.refuse(format('That time is outside %s (%s: %s)',
                                  coalesce(private.practitioner_name(p_practitioner) || '''s hours', 'opening hours'),
                                  to_char(v_start, 'FMDay'),
                                  private.diary_hours_text(p_clinic.id, p_practitioner, v_weekday)));
  end if;
  perform private.refuse_if_diary_stale(p_clinic, p_practitioner);
  if private.diary_busy(p_clinic, p_practitioner, p_starts, p_ends) then
    perform private.slot_taken(p_clinic, p_starts, (extract(epoch from p_ends - p_starts) / 60)::integer, p_ignore,
                               array[p_practitioner]);
  end if;
end
$$;


--
-- Name: check_budget_arguments(integer, integer, double precision); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.check_budget_arguments(p_account_limit integer, p_project_limit integer, p_hold_seconds double precision) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
begin
  perform private.require(p_account_limit is null or p_account_limit between 1 and 100000,
                          'the per-account limit must be 1 to 100000 requests a minute');
  perform private.require(p_project_limit is null or p_project_limit between 1 and 10000000,
                          'the per-project limit must be 1 to 10000000 requests a minute');
  perform private.require((p_account_limit is null) = (p_project_limit is null),
                          'give both the per-account and the per-project limit, or neither');
  perform private.require(p_hold_seconds between 0.1 and 60, 'the hold must be 0.1 to 60 seconds');
end
$$;


--
-- Name: check_calendar_id(text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.check_calendar_id(p_calendar_id text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO ''
    AS $$
begin
  perform private.require(p_calendar_id is null or length(btrim(p_calendar_id)) between 1 and 1024,
                          'The calendar id must be 1 to 1024 characters');
  return nullif(btrim(p_calendar_id), '');
end
$$;


--
-- Name: check_diary(public.clinics, uuid, timestamp with time zone, integer, uuid); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.check_diary(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
declare
  v_ends timestamptz := p_starts + make_interval(mins => p_minutes);
begin
  perform private.check_bookable(p_clinic, p_practitioner, p_starts, v_ends, p_ignore);
  perform private.refuse_off_grid(p_clinic, p_practitioner, p_starts, p_minutes, p_ignore);
  perform private.refuse_if_taken(p_clinic, p_practitioner, p_starts, v_ends, p_ignore);
end
$$;


--
-- Name: check_practitioner_name(uuid, text, uuid); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.check_practitioner_name(p_clinic_id uuid, p_name text, p_except uuid) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
begin
  perform private.require(length(btrim(coalesce(p_name, ''))) between 1 and 100 and p_name !~ '[[:cntrl:]]',
                          'A practitioner''s name must be 1 to 100 printable characters');
  perform private.require(
    not exists (select from public.practitioners p
                where p.clinic_id = p_clinic_id and lower(btrim(p.name)) = lower(btrim(p_name))
                  and p.id is distinct from p_except),
    format('The clinic already has a practitioner called "%s"', btrim(p_name)));
  return btrim(p_name);
end
$$;


--
-- Name: choose_practitioner(public.clinics, text, timestamp with time zone, integer, uuid); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.choose_practitioner(p_clinic public.clinics, p_service text, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) RETURNS uuid
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  with day as (
    select (p_starts at time zone p_clinic.time_zone)::date as local_day
  ),
  bounds as (
    select (local_day::timestamp at time zone p_clinic.time_zone) as day_from,
           ((local_day + 1)::timestamp at time zone p_clinic.time_zone) as day_to,
           local_day
    from day
  )
  select f.practitioner_id
  from bounds b
  cross join lateral private.diary_free_slots(p_clinic, b.local_day, p_minutes,
                                              private.offering_practitioners(p_clinic, p_service), p_ignore) as f
  join public.practitioners p on p.id = f.practitioner_id
  where f.instant = p_starts and not private.diary_mirror_stale(p_clinic, p.id)
  order by (select count(*) from public.appointments a
             where a.practitioner_id = p.id and a.status = 'booked' and a.id is distinct from p_ignore
               and a.starts_at >= b.day_from and a.starts_at < b.day_to),
           (select max(a.created_at) from public.appointments a where a.practitioner_id = p.id) nulls first,
           lower(p.name), p.id
  limit 1
$$;


--
-- Name: clinic_calendars(uuid); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.clinic_calendars(p_clinic_id uuid) RETURNS SETOF text
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select c.calendar_id from public.clinics c where c.id = p_clinic_id
  union
  select p.calendar_id from public.practitioners p
  where p.clinic_id = p_clinic_id and p.calendar_id is not null
    and (p.active or exists (select from public.appointments a
                             where a.practitioner_id = p.id and a.status = 'booked' and a.ends_at > now()))
$$;


--
-- Name: clinic_has_practitioners(uuid); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.clinic_has_practitioners(p_clinic_id uuid) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select exists (select from public.practitioners where clinic_id = p_clinic_id and active)
$$;


--
-- Name: clinic_link_hash(text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.clinic_link_hash(p_secret text) RETURNS bytea
    LANGUAGE sql IMMUTABLE
    SET search_path TO ''
    AS $$
  select pg_catalog.sha256(pg_catalog.convert_to(coalesce(p_secret, ''), 'UTF8'))
$$;


--
-- Name: clinic_links; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.clinic_links (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    clinic_id uuid NOT NULL,
    purpose text NOT NULL,
    secret_hash bytea NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    used_at timestamp with time zone,
    revoked_at timestamp with time zone,
    state_hash bytea,
    code_verifier_encrypted text,
    consent_started_at timestamp with time zone,
    CONSTRAINT clinic_links_check CHECK ((expires_at > created_at)),
    CONSTRAINT clinic_links_check1 CHECK (((purpose = 'connect'::text) OR ((used_at IS NULL) AND (state_hash IS NULL)))),
    CONSTRAINT clinic_links_code_verifier_encrypted_check CHECK ((code_verifier_encrypted ~ '^gAAAAA[A-Za-z0-9_-]+=*$'::text)),
    CONSTRAINT clinic_links_purpose_check CHECK ((purpose = ANY (ARRAY['connect'::text, 'status'::text]))),
    CONSTRAINT clinic_links_secret_hash_check CHECK ((length(secret_hash) = 32)),
    CONSTRAINT clinic_links_state_hash_check CHECK ((length(state_hash) = 32))
);


--
-- Name: TABLE clinic_links; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.clinic_links IS 'Links a clinic opens in a browser (connect Google; the clinic status page). Only the secret''s SHA-256 is kept.';


--
-- Name: clinic_link_state(public.clinic_links); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.clinic_link_state(p_link public.clinic_links) RETURNS text
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select case
    when p_link.revoked_at is not null then 'revoked'
    when p_link.used_at is not null then 'used'
    when p_link.expires_at <= now() then 'expired'
    else 'open'
  end
$$;


--
-- Name: diary_busy(public.clinics, uuid, timestamp with time zone, timestamp with time zone); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.diary_busy(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select exists (
    select from public.calendar_busy b
    where b.clinic_id = p_clinic.id
      and (p_practitioner is null or b.calendar_id = p_clinic.calendar_id
           or b.calendar_id = (select p.calendar_id from public.practitioners p where p.id = p_practitioner))
      and b.starts_at < p_ends and b.ends_at > p_starts)
$$;


--
-- Name: diary_for_booking(public.clinics, uuid, boolean, text, timestamp with time zone, integer, uuid); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.diary_for_booking(p_clinic public.clinics, p_named uuid, p_anyone boolean, p_service text, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) RETURNS uuid
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
declare
  v_chosen uuid;
  v_offering uuid[];
begin
  if not p_anyone then
    if p_named is not null then
      perform private.refuse_unless_offered(p_named, p_service);
    end if;
    perform private.check_diary(p_clinic, p_named, p_starts, p_minutes, p_ignore);
    return p_named;
  end if;
  v_offering := private.offering_practitioners(p_clinic, p_service);
  if cardinality(v_offering) = 0 then
    perform private.refuse(format('No practitioner here offers %s. The practitioners are: %s',
                                  p_service, private.practitioner_roster(p_clinic.id)));
  end if;
  v_chosen := private.choose_practitioner(p_clinic, p_service, p_starts, p_minutes, p_ignore);
  if v_chosen is not null then
    return v_chosen;
  end if;
  -- No one: the first practitioner's refusal says why when it is the same for everyone (passed,
  -- notice, horizon); otherwise the time is not free with anyone.
  if p_starts <= now() + make_interval(mins => p_clinic.min_notice_minutes)
     or p_starts > now() + make_interval(days => p_clinic.booking_horizon_days) then
    perform private.check_bookable(p_clinic, v_offering[1], p_starts, p_starts + make_interval(mins => p_minutes), p_ignore);
  end if;
  if (select bool_and(private.diary_mirror_stale(p_clinic, d)) from unnest(v_offering) d) then
    perform private.refuse_if_diary_stale(p_clinic, v_offering[1]);
  end if;
  perform private.slot_taken(p_clinic, p_starts, p_minutes, p_ignore, v_offering);
  return null;
end
$$;


--
-- Name: diary_free_slots(public.clinics, date, integer, uuid[], uuid); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.diary_free_slots(p_clinic public.clinics, p_day date, p_minutes integer, p_diaries uuid[], p_ignore uuid DEFAULT NULL::uuid) RETURNS TABLE(practitioner_id uuid, instant timestamp with time zone)
    LANGUAGE sql STABLE ROWS 100
    SET search_path TO ''
    SET jit TO 'off'
    AS $$
  with taken as materialized (
    select a.practitioner_id, a.starts_at, a.ends_at
    from public.appointments a
    where a.clinic_id = p_clinic.id and a.status = 'booked' and a.id is distinct from p_ignore
      and a.starts_at < ((p_day + 1)::timestamp at time zone p_clinic.time_zone)
      and a.ends_at > (p_day::timestamp at time zone p_clinic.time_zone)
  ),
  busy as materialized (
    select b.calendar_id, b.starts_at, b.ends_at
    from public.calendar_busy b
    where b.clinic_id = p_clinic.id
      and b.starts_at < ((p_day + 1)::timestamp at time zone p_clinic.time_zone)
      and b.ends_at > (p_day::timestamp at time zone p_clinic.time_zone)
  ),
  diaries as (
    select d.practitioner_id, p.calendar_id
    from unnest(p_diaries) as d(practitioner_id)
    left join public.practitioners p on p.id = d.practitioner_id
  )
  select d.practitioner_id, slot.instant
  from diaries d
  cross join lateral private.diary_hours(p_clinic.id, d.practitioner_id, extract(isodow from p_day)::integer) as h
  cross join lateral generate_series(
    p_day + h.opens,
    p_day + h.closes - make_interval(mins => p_minutes),
    make_interval(mins => p_clinic.slot_minutes)) as local_start
  cross join lateral private.local_to_instant(local_start, p_clinic.time_zone) as slot
  where slot.instant >= now() + make_interval(mins => p_clinic.min_notice_minutes)
    and slot.instant <= now() + make_interval(days => p_clinic.booking_horizon_days)
    and not exists (
      select from taken t
      where (d.practitioner_id is null or t.practitioner_id is null or t.practitioner_id = d.practitioner_id)
        and t.starts_at < slot.instant + make_interval(mins => p_minutes) and t.ends_at > slot.instant)
    and not exists (
      select from busy b
      where (d.practitioner_id is null or b.calendar_id = p_clinic.calendar_id or b.calendar_id = d.calendar_id)
        and b.starts_at < slot.instant + make_interval(mins => p_minutes) and b.ends_at > slot.instant)
  order by slot.instant, d.practitioner_id
$$;


--
-- Name: diary_hours(uuid, uuid, integer); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.diary_hours(p_clinic_id uuid, p_practitioner uuid, p_weekday integer) RETURNS TABLE(opens time without time zone, closes time without time zone)
    LANGUAGE sql STABLE ROWS 2
    SET search_path TO ''
    AS $$
  select h.opens, h.closes from public.practitioner_hours h
  where p_practitioner is not null and h.practitioner_id = p_practitioner and h.weekday = p_weekday
  union all
  select h.opens, h.closes from public.clinic_opening_hours h
  where h.clinic_id = p_clinic_id and h.weekday = p_weekday
    and (p_practitioner is null
         or not exists (select from public.practitioner_hours x where x.practitioner_id = p_practitioner))
$$;


--
-- Name: diary_hours_text(uuid, uuid, integer); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.diary_hours_text(p_clinic_id uuid, p_practitioner uuid, p_weekday integer) RETURNS text
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select string_agg(to_char(opens, 'HH24:MI') || '-' ||
                    case when closes = time '24:00' then '24:00' else to_char(closes, 'HH24:MI') end,
                    ', ' order by opens)
  from private.diary_hours(p_clinic_id, p_practitioner, p_weekday)
$$;


--
-- Name: diary_mirror_stale(public.clinics, uuid); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.diary_mirror_stale(p_clinic public.clinics, p_practitioner uuid) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select exists (
    select from public.calendar_mirrors m
    where m.clinic_id = p_clinic.id
      and (p_practitioner is null or m.calendar_id = p_clinic.calendar_id
           or m.calendar_id = (select p.calendar_id from public.practitioners p where p.id = p_practitioner))
      and (m.last_synced_at < now() - make_interval(mins => p_clinic.mirror_max_age_minutes)
           or (m.last_synced_at is null and m.last_error is not null and m.calendar_id <> p_clinic.calendar_id)))
$$;


--
-- Name: diary_taken(uuid, uuid, timestamp with time zone, timestamp with time zone, uuid); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.diary_taken(p_clinic_id uuid, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select exists (
    select from public.appointments a
    where a.clinic_id = p_clinic_id and a.status = 'booked' and a.id is distinct from p_ignore
      and (p_practitioner is null or a.practitioner_id is null or a.practitioner_id = p_practitioner)
      and a.starts_at < p_ends and a.ends_at > p_starts)
$$;


--
-- Name: ensure_mirror_rows(uuid); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.ensure_mirror_rows(p_clinic_id uuid) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
begin
  insert into public.calendar_mirrors (clinic_id, calendar_id)
  select k.clinic_id, cal.calendar_id
  from public.calendar_connections k
  cross join lateral private.clinic_calendars(k.clinic_id) as cal(calendar_id)
  where k.status = 'active' and (p_clinic_id is null or k.clinic_id = p_clinic_id)
    and not exists (select from public.calendar_mirrors m
                    where m.clinic_id = k.clinic_id and m.calendar_id = cal.calendar_id)
  on conflict (clinic_id, calendar_id) do nothing;
  -- A calendar no longer used (a practitioner moved to another, or left with nothing booked ahead).
  with gone as (
    delete from public.calendar_mirrors m
    where (p_clinic_id is null or m.clinic_id = p_clinic_id)
      and m.calendar_id not in (select private.clinic_calendars(m.clinic_id))
    returning m.clinic_id, m.calendar_id
  ),
  unbusy as (
    delete from public.calendar_busy b using gone g
    where b.clinic_id = g.clinic_id and b.calendar_id = g.calendar_id
  )
  update public.calendar_channels c
     set retired_at = now(), retired_because = 'the calendar is no longer used'
    from gone g
   where c.clinic_id = g.clinic_id and c.calendar_id = g.calendar_id and c.retired_at is null;
end
$$;


--
-- Name: event_instant(jsonb, text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.event_instant(p_when jsonb, p_zone text) RETURNS timestamp with time zone
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select coalesce((p_when ->> 'dateTime')::timestamptz, ((p_when ->> 'date')::date)::timestamp at time zone p_zone)
$$;


--
-- Name: appointments; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.appointments (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    clinic_id uuid NOT NULL,
    contact_id uuid,
    reference text NOT NULL,
    patient jsonb NOT NULL,
    service text NOT NULL,
    notes text,
    starts_at timestamp with time zone NOT NULL,
    ends_at timestamp with time zone NOT NULL,
    status text DEFAULT 'booked'::text NOT NULL,
    cancelled_at timestamp with time zone,
    source text DEFAULT 'vapi'::text NOT NULL,
    vapi_call_id text,
    vapi_tool_call_id text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    revision integer DEFAULT 1 NOT NULL,
    sync_state text DEFAULT 'pending'::text NOT NULL,
    sync_attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at timestamp with time zone DEFAULT now(),
    lease_owner text,
    lease_expires_at timestamp with time zone,
    calendar_event_id text,
    calendar_event_link text,
    last_sync_error text,
    synced_at timestamp with time zone,
    synced_revision integer,
    change_reason text,
    event_generation integer DEFAULT 0 NOT NULL,
    practitioner_id uuid,
    event_calendar_id text,
    CONSTRAINT appointments_calendar_event_id_check CHECK (((calendar_event_id ~ '^[a-v0-9]{5,}$'::text) AND (length(calendar_event_id) <= 1024))),
    CONSTRAINT appointments_change_reason_check CHECK ((length(change_reason) <= 200)),
    CONSTRAINT appointments_check CHECK ((ends_at > starts_at)),
    CONSTRAINT appointments_check1 CHECK (((status = 'cancelled'::text) = (cancelled_at IS NOT NULL))),
    CONSTRAINT appointments_check2 CHECK (((sync_state = 'in_flight'::text) = ((lease_owner IS NOT NULL) AND (lease_expires_at IS NOT NULL)))),
    CONSTRAINT appointments_check3 CHECK (((sync_state <> 'synced'::text) OR (synced_revision IS NOT NULL))),
    CONSTRAINT appointments_event_calendar_id_check CHECK (((length(event_calendar_id) >= 1) AND (length(event_calendar_id) <= 1024))),
    CONSTRAINT appointments_event_generation_check CHECK (((event_generation >= 0) AND (event_generation <= 1000))),
    CONSTRAINT appointments_notes_check CHECK ((length(notes) <= 1000)),
    CONSTRAINT appointments_patient_check CHECK (((jsonb_typeof(patient) = 'object'::text) AND (NOT (jsonb_typeof((patient -> 'name'::text)) IS DISTINCT FROM 'string'::text)) AND ((length((patient ->> 'name'::text)) >= 1) AND (length((patient ->> 'name'::text)) <= 200)))),
    CONSTRAINT appointments_reference_check CHECK ((reference ~ '^[A-Z0-9]{4,12}$'::text)),
    CONSTRAINT appointments_service_check CHECK (((length(service) >= 1) AND (length(service) <= 80))),
    CONSTRAINT appointments_source_check CHECK ((source = ANY (ARRAY['vapi'::text, 'staff'::text, 'api'::text]))),
    CONSTRAINT appointments_status_check CHECK ((status = ANY (ARRAY['booked'::text, 'cancelled'::text]))),
    CONSTRAINT appointments_sync_attempts_check CHECK ((sync_attempts >= 0)),
    CONSTRAINT appointments_sync_state_check CHECK ((sync_state = ANY (ARRAY['pending'::text, 'in_flight'::text, 'synced'::text, 'failed'::text, 'parked'::text]))),
    CONSTRAINT appointments_vapi_call_id_check CHECK ((length(vapi_call_id) <= 200)),
    CONSTRAINT appointments_vapi_tool_call_id_check CHECK ((length(vapi_tool_call_id) <= 200))
);


--
-- Name: COLUMN appointments.sync_state; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.appointments.sync_state IS 'pending: waiting to be pushed; in_flight: leased by a daemon; synced: Google confirmed synced_revision; failed: permanent error (last_sync_error), re-queued by an operator; parked: the clinic''s Google connection needs re-authorisation.';


--
-- Name: COLUMN appointments.change_reason; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.appointments.change_reason IS 'Why the appointment last changed when the change came from outside the assistant, e.g. "deleted in Google Calendar".';


--
-- Name: COLUMN appointments.event_generation; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.appointments.event_generation IS 'Which of the appointment''s event ids is current: 0 is base32hex of its id, g > 0 the same followed by g (a new id, after Google refused to restore a deleted event).';


--
-- Name: COLUMN appointments.practitioner_id; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.appointments.practitioner_id IS 'Who the patient sees; null: the clinic as a whole (a booking without a practitioner blocks every practitioner).';


--
-- Name: COLUMN appointments.event_calendar_id; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.appointments.event_calendar_id IS 'The calendar that holds calendar_event_id (null: the clinic''s calendar).';


--
-- Name: find_appointment(public.clinics, jsonb, jsonb, text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.find_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb, p_start_text text) RETURNS public.appointments
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
declare
  v_reference text := upper(regexp_replace(coalesce(private.text_arg(p_args, 'reference', 20), ''),
                                           '[[:space:]-]', '', 'g'));
  v_phone text;
  v_start timestamptz;
  v_found public.appointments;
  v_count integer;
  v_list text;
begin
  if v_reference <> '' then
    select * into v_found from public.appointments
    where clinic_id = p_clinic.id and reference = v_reference
    for update;
    if not found then
      perform private.refuse(format('No booking has the reference %s', private.printable(v_reference, 20)));
    end if;
  else
    v_phone := private.patient_phone(p_clinic, p_args, p_ctx);
    if v_phone is null then
      perform private.refuse('Give the booking reference, or the phone number the booking was made with');
    end if;
    if p_start_text is not null then
      v_start := (private.parse_local_start(p_start_text, p_clinic.time_zone, 'start')).instant;
    end if;
    select count(*),
           string_agg(format('%s at %s (reference %s)', private.local_day(starts_at, p_clinic.time_zone),
                             private.local_clock(starts_at, p_clinic.time_zone), reference),
                      '; ' order by starts_at)
      into v_count, v_list
    from public.appointments
    where clinic_id = p_clinic.id and status = 'booked' and starts_at > now()
      and patient ->> 'phone' = v_phone
      and (v_start is null or starts_at = v_start);
    if v_count = 0 then
      perform private.refuse(case when v_start is null
                                  then 'No upcoming booking was found for that phone number'
                                  else 'No upcoming booking was found for that phone number at that time' end);
    elsif v_count > 1 then
      perform private.refuse(format('There are %s upcoming bookings for that phone number: %s. Which one?',
                                    v_count, v_list));
    end if;
    select * into v_found from public.appointments
    where clinic_id = p_clinic.id and status = 'booked' and starts_at > now()
      and patient ->> 'phone' = v_phone and (v_start is null or starts_at = v_start)
    for update;
  end if;
  if v_found.status = 'cancelled' then
    perform private.refuse(format('The booking %s is already cancelled', v_found.reference));
  end if;
  if v_found.starts_at <= now() then
    perform private.refuse(format('The booking %s has already started or taken place', v_found.reference));
  end if;
  return v_found;
end
$$;


--
-- Name: google_budget_key(uuid, text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.google_budget_key(p_clinic_id uuid, p_google_account text) RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path TO ''
    AS $$
  select coalesce(lower(nullif(btrim(p_google_account), '')), 'clinic:' || p_clinic_id::text)
$$;


--
-- Name: google_budget_key_of(uuid); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.google_budget_key_of(p_clinic_id uuid) RETURNS text
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select private.google_budget_key(p_clinic_id, (select google_account from public.calendar_connections
                                                  where clinic_id = p_clinic_id))
$$;


--
-- Name: google_budget_wait(text, integer, integer); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.google_budget_wait(p_budget_key text, p_account_limit integer, p_project_limit integer) RETURNS double precision
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  with spent as (select * from private.google_requests_in_window())
  select greatest(
    0,
    (select extract(epoch from max(t.throttled_until) - now()) from private.google_throttles t
      where t.budget_key = p_budget_key and t.throttled_until > now()),
    case when coalesce((select s.requests from spent s where s.budget_key = p_budget_key), 0) >= p_account_limit
         then (select extract(epoch from min(g.usable_until) + interval '60 seconds' - now())
               from private.google_requests g
               where g.budget_key = p_budget_key and g.usable_until > now() - interval '60 seconds') end,
    case when coalesce((select sum(s.requests) from spent s), 0) >= p_project_limit
         then (select extract(epoch from min(g.usable_until) + interval '60 seconds' - now())
               from private.google_requests g where g.usable_until > now() - interval '60 seconds') end
  )::double precision
$$;


--
-- Name: google_requests_in_window(); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.google_requests_in_window() RETURNS TABLE(budget_key text, requests bigint)
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select g.budget_key, sum(g.requests)::bigint
  from private.google_requests g
  where g.usable_until > now() - interval '60 seconds'
  group by g.budget_key
$$;


--
-- Name: local_clock(timestamp with time zone, text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.local_clock(p_instant timestamp with time zone, p_zone text) RETURNS text
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select to_char(p_instant at time zone p_zone, 'HH24:MI')
$$;


--
-- Name: local_day(timestamp with time zone, text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.local_day(p_instant timestamp with time zone, p_zone text) RETURNS text
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select to_char(p_instant at time zone p_zone, 'FMDay FMDD FMMonth YYYY')
$$;


--
-- Name: local_to_instant(timestamp without time zone, text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.local_to_instant(p_local timestamp without time zone, p_zone text, OUT instant timestamp with time zone, OUT ambiguous boolean) RETURNS record
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
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


--
-- Name: lock_diary(uuid); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.lock_diary(p_clinic_id uuid) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
begin
  perform set_config('lock_timeout', private.wait_left(), true);
  perform pg_catalog.pg_advisory_xact_lock(1147, pg_catalog.hashtext(p_clinic_id::text));
end
$$;


--
-- Name: mark_synced_from_calendar(uuid); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.mark_synced_from_calendar(p_appointment_id uuid) RETURNS void
    LANGUAGE sql
    SET search_path TO ''
    AS $$
  update public.appointments
     set sync_state = 'synced', synced_revision = revision, synced_at = now(), sync_attempts = 0,
         next_attempt_at = null, lease_owner = null, lease_expires_at = null, last_sync_error = null
   where id = p_appointment_id
$$;


--
-- Name: means_anyone(text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.means_anyone(p_name text) RETURNS boolean
    LANGUAGE sql IMMUTABLE
    SET search_path TO ''
    AS $_$
  select p_name is null
      or private.name_words(p_name) ~ '^(any|anyone|anybody|either|whoever|whichever|no preference|first available|no one in particular|nobody in particular|not fussy|don t mind|doesn t matter|does not matter)( |$)'
$_$;


--
-- Name: mirror_notified_since_listing(uuid, text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.mirror_notified_since_listing(p_clinic_id uuid, p_calendar_id text) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select coalesce((select m.notified_at > coalesce(m.listing_started_at, '-infinity')
                   from public.calendar_mirrors m
                   where m.clinic_id = p_clinic_id and m.calendar_id = p_calendar_id), false)
$$;


--
-- Name: name_words(text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.name_words(p_name text) RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path TO ''
    AS $$
  select btrim(regexp_replace(
    regexp_replace(regexp_replace(lower(coalesce(p_name, '')), '[^[:alnum:]]+', ' ', 'g'),
                   '\m(dr|doctor|mr|mrs|ms|miss|mx|prof|professor)\M', ' ', 'g'),
    ' +', ' ', 'g'))
$$;


--
-- Name: nearest_free_times(public.clinics, timestamp with time zone, integer, uuid, uuid[]); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.nearest_free_times(p_clinic public.clinics, p_wanted timestamp with time zone, p_minutes integer, p_ignore uuid, p_diaries uuid[]) RETURNS text
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select coalesce('Nearest free times that day: ' || string_agg(private.local_clock(s, p_clinic.time_zone), ', ' order by s),
                  'There are no other free times that day')
  from (select f.instant as s
        from private.diary_free_slots(p_clinic, (p_wanted at time zone p_clinic.time_zone)::date, p_minutes,
                                      p_diaries, p_ignore) as f
        group by f.instant
        order by abs(extract(epoch from f.instant - p_wanted)) limit 6) as nearest
$$;


--
-- Name: new_reference(uuid); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.new_reference(p_clinic_id uuid) RETURNS text
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
declare
  -- No 0/O or 1/I: references are read out over the phone.
  c_alphabet constant text := 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789';
  v_random bytea;
  v_reference text;
begin
  loop
    -- The first six bytes of a v4 UUID are uniformly random (CSPRNG); 256 % 32 = 0.
    v_random := uuid_send(gen_random_uuid());
    v_reference := '';
    for i in 0..5 loop
      v_reference := v_reference || substr(c_alphabet, get_byte(v_random, i) % 32 + 1, 1);
    end loop;
    exit when not exists (select from public.appointments
                          where clinic_id = p_clinic_id and reference = v_reference);
  end loop;
  return v_reference;
end
$$;


--
-- Name: normalise_phone(text, text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.normalise_phone(p_phone text, p_country_code text) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $_$
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
$_$;


--
-- Name: notify_calendar_sync(); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.notify_calendar_sync() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
begin
  perform pg_notify('calendar_sync', '');
  return null;
end
$$;


--
-- Name: offering_practitioners(public.clinics, text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.offering_practitioners(p_clinic public.clinics, p_service text) RETURNS uuid[]
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select coalesce(array_agg(p.id order by lower(p.name), p.id), '{}')
  from public.practitioners p
  where p.clinic_id = p_clinic.id and p.active
    and (p.services is null or p_service = any (p.services))
$$;


--
-- Name: opening_hours_text(uuid, integer); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.opening_hours_text(p_clinic_id uuid, p_weekday integer) RETURNS text
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select string_agg(to_char(opens, 'HH24:MI') || '-' ||
                    case when closes = time '24:00' then '24:00' else to_char(closes, 'HH24:MI') end,
                    ', ' order by opens)
  from public.clinic_opening_hours
  where clinic_id = p_clinic_id and weekday = p_weekday
$$;


--
-- Name: parse_local_date(text, text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.parse_local_date(p_text text, p_arg text) RETURNS date
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $_$
begin
  if p_text !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' then
    perform private.refuse(format('%s must be a date like 2026-12-01', p_arg));
  end if;
  return p_text::date;
exception
  when datetime_field_overflow or invalid_datetime_format then
    perform private.refuse(format('%s is not a real date', p_arg));
    return null;
end
$_$;


--
-- Name: parse_local_start(text, text, text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.parse_local_start(p_text text, p_zone text, p_arg text, OUT instant timestamp with time zone, OUT ambiguous boolean) RETURNS record
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $_$
declare
  v_local timestamp;
begin
  if p_text !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ]([01][0-9]|2[0-3]):[0-5][0-9](:00)?$' then
    perform private.refuse(format(
      '%s must be a clinic-local date and time like 2026-12-01T10:30, without a time zone', p_arg));
  end if;
  begin
    v_local := replace(p_text, 'T', ' ')::timestamp;
  exception
    when datetime_field_overflow or invalid_datetime_format then
      perform private.refuse(format('%s is not a real date', p_arg));
  end;
  select t.instant, t.ambiguous into instant, ambiguous
  from private.local_to_instant(v_local, p_zone) as t;
  if instant is null then
    perform private.refuse(format('%s does not exist in %s: clocks go forward',
                                  to_char(v_local, 'YYYY-MM-DD HH24:MI'), private.zone_place(p_zone)));
  end if;
end
$_$;


--
-- Name: parse_opening_hours(jsonb); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.parse_opening_hours(p_hours jsonb) RETURNS TABLE(weekday smallint, opens time without time zone, closes time without time zone)
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO ''
    AS $_$
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
$_$;


--
-- Name: patient_phone(public.clinics, jsonb, jsonb); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.patient_phone(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
declare
  v_given text := private.text_arg(p_args, 'patient_phone', 30);
  v_phone text;
begin
  if v_given is not null then
    v_phone := private.normalise_phone(v_given, p_clinic.phone_country_code);
    if v_phone is null then
      perform private.refuse('patient_phone does not look like a phone number');
    end if;
  else
    v_phone := private.normalise_phone(p_ctx ->> 'caller_number', p_clinic.phone_country_code);
  end if;
  return v_phone;
end
$$;


--
-- Name: pick_practitioner(public.clinics, text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.pick_practitioner(p_clinic public.clinics, p_name text) RETURNS uuid
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
declare
  v_words text := private.name_words(p_name);
  v_found uuid[];
  v_names text;
begin
  if private.means_anyone(p_name) then
    return null;
  end if;
  if not private.clinic_has_practitioners(p_clinic.id) then
    perform private.refuse('This clinic does not book with a particular practitioner: leave practitioner out');
  end if;
  if v_words <> '' then
    select array_agg(p.id order by p.id) into v_found from public.practitioners p
     where p.clinic_id = p_clinic.id and p.active and private.name_words(p.name) = v_words;
    if v_found is null then
      select array_agg(p.id order by p.id) into v_found from public.practitioners p
       where p.clinic_id = p_clinic.id and p.active
         and string_to_array(v_words, ' ') <@ string_to_array(private.name_words(p.name), ' ');
    end if;
  end if;
  if cardinality(v_found) = 1 then
    return v_found[1];
  end if;
  if cardinality(v_found) > 1 then
    select string_agg(p.name, ', ' order by lower(p.name)) into v_names
      from public.practitioners p where p.id = any (v_found);
    perform private.refuse(format('"%s" could be %s. Which one?', private.printable(p_name), v_names));
  end if;
  select string_agg(p.name, ', ' order by lower(p.name)) into v_names from public.practitioners p
   where p.clinic_id = p_clinic.id and not p.active and v_words <> ''
     and string_to_array(v_words, ' ') <@ string_to_array(private.name_words(p.name), ' ');
  if v_names is not null then
    perform private.refuse(format('%s no longer takes bookings. The practitioners are: %s',
                                  v_names, private.practitioner_roster(p_clinic.id)));
  end if;
  perform private.refuse(format('No practitioner here is called "%s". The practitioners are: %s',
                                private.printable(p_name), private.practitioner_roster(p_clinic.id)));
  return null;
end
$$;


--
-- Name: clinic_services; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.clinic_services (
    clinic_id uuid NOT NULL,
    name text NOT NULL,
    duration_minutes integer NOT NULL,
    is_default boolean DEFAULT false NOT NULL,
    CONSTRAINT clinic_services_duration_minutes_check CHECK (((duration_minutes >= 5) AND (duration_minutes <= 480))),
    CONSTRAINT clinic_services_name_check CHECK ((((length(btrim(name)) >= 1) AND (length(btrim(name)) <= 80)) AND (name !~ '[[:cntrl:]]'::text)))
);


--
-- Name: pick_service(uuid, text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.pick_service(p_clinic_id uuid, p_name text) RETURNS public.clinic_services
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
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


--
-- Name: practitioner_name(uuid); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.practitioner_name(p_practitioner uuid) RETURNS text
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select name from public.practitioners where id = p_practitioner
$$;


--
-- Name: practitioner_roster(uuid); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.practitioner_roster(p_clinic_id uuid) RETURNS text
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select string_agg(p.name || coalesce(' (' || array_to_string(p.services, ', ') || ')', ''), '; '
                    order by lower(p.name), p.id)
  from public.practitioners p where p.clinic_id = p_clinic_id and p.active
$$;


--
-- Name: practitioner_services(uuid, jsonb); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.practitioner_services(p_clinic_id uuid, p_services jsonb) RETURNS text[]
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
declare
  v_wanted text;
  v_name text;
  v_names text[] := '{}';
begin
  if p_services is null or jsonb_typeof(p_services) = 'null' then
    return null;
  end if;
  perform private.require(jsonb_typeof(p_services) = 'array' and jsonb_array_length(p_services) between 1 and 100,
                          'services must be a list of 1 to 100 of the clinic''s services (or null for all of them)');
  for v_wanted in select value #>> '{}' from jsonb_array_elements(p_services) loop
    select s.name into v_name from public.clinic_services s
     where s.clinic_id = p_clinic_id and lower(s.name) = lower(btrim(coalesce(v_wanted, '')));
    if v_name is null then
      raise exception using errcode = 'P0001', message = format(
        'The clinic has no service "%s". Its services: %s', private.printable(coalesce(v_wanted, ''), 80),
        (select string_agg(s.name, ', ' order by s.name) from public.clinic_services s where s.clinic_id = p_clinic_id));
    end if;
    if not v_name = any (v_names) then
      v_names := v_names || v_name;
    end if;
  end loop;
  return v_names;
end
$$;


--
-- Name: printable(text, integer); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.printable(p_text text, p_max integer DEFAULT 40) RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path TO ''
    AS $$
  select case when length(t) > p_max then left(t, p_max) || '...' else t end
  from (select regexp_replace(p_text, '[\x01-\x1f\x7f-\x9f\u2028\u2029]', '?', 'g') as t) s
$$;


--
-- Name: refuse(text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.refuse(p_message text) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
begin
  raise exception using errcode = 'VA001', message = p_message;
end
$$;


--
-- Name: refuse_if_closed(uuid, date); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.refuse_if_closed(p_clinic_id uuid, p_day date) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
begin
  if not exists (select from public.clinic_opening_hours
                 where clinic_id = p_clinic_id and weekday = extract(isodow from p_day)) then
    perform private.refuse(format('The clinic is closed on %ss', to_char(p_day, 'FMDay')));
  end if;
end
$$;


--
-- Name: refuse_if_diary_stale(public.clinics, uuid); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.refuse_if_diary_stale(p_clinic public.clinics, p_practitioner uuid) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
begin
  if private.diary_mirror_stale(p_clinic, p_practitioner) then
    perform private.refuse('The clinic''s calendar cannot be checked right now, so no time can be confirmed. '
                           'Please take the caller''s name and number and the clinic will call back');
  end if;
end
$$;


--
-- Name: refuse_if_mirror_stale(public.clinics); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.refuse_if_mirror_stale(p_clinic public.clinics) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
begin
  if exists (select from public.calendar_mirrors m
             where m.clinic_id = p_clinic.id
               and m.last_synced_at < now() - make_interval(mins => p_clinic.mirror_max_age_minutes)) then
    perform private.refuse('The clinic''s calendar cannot be checked right now, so no time can be confirmed. '
                           'Please take the caller''s name and number and the clinic will call back');
  end if;
end
$$;


--
-- Name: refuse_if_taken(public.clinics, uuid, timestamp with time zone, timestamp with time zone, uuid); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.refuse_if_taken(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
begin
  if private.diary_taken(p_clinic.id, p_practitioner, p_starts, p_ends, p_ignore) then
    perform private.slot_taken(p_clinic, p_starts, (extract(epoch from p_ends - p_starts) / 60)::integer, p_ignore,
                               array[p_practitioner]);
  end if;
end
$$;


--
-- Name: refuse_off_grid(public.clinics, uuid, timestamp with time zone, integer, uuid); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.refuse_off_grid(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
declare
  v_local timestamp := p_starts at time zone p_clinic.time_zone;
begin
  if not exists (
    select from private.diary_hours(p_clinic.id, p_practitioner, extract(isodow from v_local)::integer) h
    where v_local >= v_local::date + h.opens and v_local < v_local::date + h.closes
      and extract(epoch from v_local - (v_local::date + h.opens))::bigint % (p_clinic.slot_minutes * 60) = 0) then
    perform private.refuse(format('%s on %s is not a start time the clinic offers (appointments start every %s minutes). %s',
      private.local_clock(p_starts, p_clinic.time_zone), private.local_day(p_starts, p_clinic.time_zone),
      p_clinic.slot_minutes, private.nearest_free_times(p_clinic, p_starts, p_minutes, p_ignore, array[p_practitioner])));
  end if;
end
$$;


--
-- Name: refuse_unless_offered(uuid, text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.refuse_unless_offered(p_practitioner uuid, p_service text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
declare
  v_practitioner public.practitioners;
begin
  select * into v_practitioner from public.practitioners where id = p_practitioner;
  if v_practitioner.services is not null and not p_service = any (v_practitioner.services) then
    perform private.refuse(format('%s does not offer %s. %s offers: %s', v_practitioner.name, p_service,
                                  v_practitioner.name, array_to_string(v_practitioner.services, ', ')));
  end if;
end
$$;


--
-- Name: request_clinic_id(); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.request_clinic_id() RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO ''
    AS $$
  select k.clinic_id
  from public.clinic_api_keys k
  where k.key_hash = pg_catalog.sha256(pg_catalog.convert_to(
          nullif(current_setting('request.headers', true), '')::json ->> 'x-clinic-key', 'UTF8'))
    and (k.revoked_at is null or k.revoked_at > now())
$$;


--
-- Name: require(boolean, text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.require(p_condition boolean, p_message text) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
begin
  if p_condition is not true then
    raise exception using errcode = 'P0001', message = p_message;
  end if;
end
$$;


--
-- Name: require_owner(text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.require_owner(p_owner text) RETURNS void
    LANGUAGE sql
    SET search_path TO ''
    AS $$
  select private.require(length(p_owner) between 1 and 200, 'lease owner must be 1 to 200 characters')
$$;


--
-- Name: required_text_arg(jsonb, text, integer); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.required_text_arg(p_args jsonb, p_key text, p_max_length integer) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
declare
  v_text text := private.text_arg(p_args, p_key, p_max_length);
begin
  if v_text is null then
    perform private.refuse(format('%s is required', p_key));
  end if;
  return v_text;
end
$$;


--
-- Name: retire_channel_that_missed_changes(uuid, text, jsonb); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.retire_channel_that_missed_changes(p_clinic_id uuid, p_calendar_id text, p_events jsonb) RETURNS void
    LANGUAGE sql
    SET search_path TO ''
    AS $$
  update public.calendar_channels c
     set retired_at = now(), retired_because = 'lost: the calendar changed without a notification'
    from public.calendar_mirrors m
   where c.clinic_id = p_clinic_id and c.calendar_id = p_calendar_id
     and c.retired_at is null and c.confirmed_at is not null
     and m.clinic_id = p_clinic_id and m.calendar_id = p_calendar_id
     and coalesce(m.notified_at, '-infinity') < coalesce(m.last_synced_at, '-infinity')
     and exists (select from jsonb_array_elements(p_events) e
                 where e ->> 'updated' is not null and (e ->> 'updated')::timestamptz > c.confirmed_at)
$$;


--
-- Name: retire_channels(uuid, text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.retire_channels(p_clinic_id uuid, p_because text) RETURNS void
    LANGUAGE sql
    SET search_path TO ''
    AS $$
  update public.calendar_channels
     set retired_at = now(), retired_because = left(p_because, 200)
   where clinic_id = p_clinic_id and retired_at is null
$$;


--
-- Name: run_tool_call(public.clinics, jsonb, jsonb); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.run_tool_call(p_clinic public.clinics, p_call jsonb, p_ctx jsonb) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
declare
  v_id jsonb := p_call -> 'id';
  v_tool_call_id text := v_id #>> '{}';
  v_name text;
  v_args jsonb;
  v_hash bytea;
  v_prior public.vapi_tool_calls;
  v_result text;
begin
  if strpos(p_call::text, p_ctx ->> 'nul_marker') > 0 then
    return jsonb_build_object('toolCallId', v_id, 'error',
      'This tool call contains a NUL character (U+0000), which cannot be stored, so nothing was done');
  end if;
  if jsonb_typeof(v_id) is distinct from 'string' or length(v_tool_call_id) not between 1 and 200 then
    return jsonb_build_object('toolCallId', v_id, 'error', 'This tool call has no usable id');
  end if;
  begin
    v_name := private.vapi_call_name(p_call);
    v_args := private.vapi_call_arguments(p_call);
    if v_name <> 'check_availability' then
      -- The first attempt claims the id; a concurrent retry waits here (within the budget) for
      -- it to commit, then answers with what the first attempt answered.
      v_hash := sha256(convert_to(v_name || ' ' || v_args::text, 'UTF8'));
      perform set_config('lock_timeout', private.wait_left(), true);
      insert into public.vapi_tool_calls (clinic_id, tool_call_id, tool_name, request_hash)
      values (p_clinic.id, v_tool_call_id, v_name, v_hash)
      on conflict do nothing;
      if not found then
        select * into v_prior from public.vapi_tool_calls
        where clinic_id = p_clinic.id and tool_call_id = v_tool_call_id;
        if v_prior.request_hash <> v_hash then
          perform private.refuse('This toolCallId was already used for a different request');
        end if;
        return jsonb_build_object('toolCallId', v_id, 'result', v_prior.result);
      end if;
    end if;
    v_result := case v_name
      when 'check_availability' then private.tool_check_availability(p_clinic, v_args)
      when 'book_appointment' then
        private.tool_book_appointment(p_clinic, v_args, p_ctx || jsonb_build_object('tool_call_id', v_tool_call_id))
      when 'cancel_appointment' then private.tool_cancel_appointment(p_clinic, v_args, p_ctx)
      when 'reschedule_appointment' then private.tool_reschedule_appointment(p_clinic, v_args, p_ctx)
    end;
    if v_hash is not null then
      update public.vapi_tool_calls set result = v_result
      where clinic_id = p_clinic.id and tool_call_id = v_tool_call_id;
    end if;
    return jsonb_build_object('toolCallId', v_id, 'result', v_result);
  exception
    when sqlstate 'VA001' then
      return jsonb_build_object('toolCallId', v_id, 'error', sqlerrm);
    when lock_not_available or deadlock_detected then
      return jsonb_build_object('toolCallId', v_id, 'error', private.busy_message());
    when others then
      -- Only the tool name and SQLSTATE: arguments may carry patient details.
      raise warning 'vapi_tool_call: % failed with SQLSTATE %', coalesce(v_name, 'unnamed tool'), sqlstate;
      return jsonb_build_object('toolCallId', v_id, 'error',
        'Something went wrong on our side. Please take a message and the clinic will call back');
  end;
end
$$;


--
-- Name: practitioners; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.practitioners (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    clinic_id uuid NOT NULL,
    name text NOT NULL,
    services text[],
    calendar_id text,
    active boolean DEFAULT true NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    deactivated_at timestamp with time zone,
    CONSTRAINT practitioners_calendar_id_check CHECK (((length(calendar_id) >= 1) AND (length(calendar_id) <= 1024))),
    CONSTRAINT practitioners_check CHECK ((active = (deactivated_at IS NULL))),
    CONSTRAINT practitioners_name_check CHECK ((((length(btrim(name)) >= 1) AND (length(btrim(name)) <= 100)) AND (name !~ '[[:cntrl:]]'::text))),
    CONSTRAINT practitioners_services_check CHECK (((cardinality(services) >= 1) AND (cardinality(services) <= 100)))
);


--
-- Name: TABLE practitioners; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.practitioners IS 'The people a clinic books patients with. services null: every service of the clinic; calendar_id null: the clinic''s calendar; no practitioner_hours: the clinic''s opening hours.';


--
-- Name: set_practitioner_hours(public.practitioners, jsonb); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.set_practitioner_hours(p_practitioner public.practitioners, p_hours jsonb) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
declare
  v_period record;
begin
  delete from public.practitioner_hours where practitioner_id = p_practitioner.id;
  if p_hours is null or jsonb_typeof(p_hours) = 'null' then
    return;  -- the clinic's hours
  end if;
  for v_period in select * from private.parse_opening_hours(p_hours) loop
    begin
      insert into public.practitioner_hours (clinic_id, practitioner_id, weekday, opens, closes)
      values (p_practitioner.clinic_id, p_practitioner.id, v_period.weekday, v_period.opens, v_period.closes);
    exception when exclusion_violation then
      raise exception using errcode = 'P0001',
        message = format('Opening hours: two periods overlap on day %s', v_period.weekday);
    end;
  end loop;
end
$$;


--
-- Name: slot_taken(public.clinics, timestamp with time zone, integer, uuid, uuid[]); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.slot_taken(p_clinic public.clinics, p_wanted timestamp with time zone, p_minutes integer, p_ignore uuid, p_diaries uuid[]) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
begin
  perform private.refuse(format('%s on %s is not available%s. %s',
    private.local_clock(p_wanted, p_clinic.time_zone), private.local_day(p_wanted, p_clinic.time_zone),
    case when cardinality(p_diaries) = 1 then private.with_whom(p_diaries[1])
         else ' with anyone' end,
    private.nearest_free_times(p_clinic, p_wanted, p_minutes, p_ignore, p_diaries)));
end
$$;


--
-- Name: text_arg(jsonb, text, integer, boolean); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.text_arg(p_args jsonb, p_key text, p_max_length integer, p_multiline boolean DEFAULT false) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
declare
  v_value jsonb := p_args -> p_key;
  v_text text;
begin
  if v_value is null or jsonb_typeof(v_value) = 'null' then
    return null;
  end if;
  if jsonb_typeof(v_value) <> 'string' then
    perform private.refuse(format('%s must be text', p_key));
  end if;
  v_text := btrim(v_value #>> '{}');
  if v_text = '' then
    return null;
  end if;
  if length(v_text) > p_max_length then
    perform private.refuse(format('%s is too long (at most %s characters)', p_key, p_max_length));
  end if;
  if v_text ~ (case when p_multiline then '[\x01-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]'
                    else '[\x01-\x1f\x7f-\x9f\u2028\u2029]' end) then
    perform private.refuse(format('%s contains control characters', p_key));
  end if;
  return v_text;
end
$$;


--
-- Name: tool_book_appointment(public.clinics, jsonb, jsonb); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.tool_book_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) RETURNS text
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
declare
  v_start_text text;
  v_name text;
  v_phone text;
  v_notes text;
  v_service public.clinic_services;
  v_start record;
  v_ends timestamptz;
  v_reference text;
  v_named uuid;
  v_practitioner uuid;
  v_with_practitioners boolean;
begin
  perform private.check_arg_names(p_args, array['start', 'patient_name', 'patient_phone', 'service', 'notes',
                                                'practitioner']);
  v_start_text := private.required_text_arg(p_args, 'start', 40);
  v_name := private.required_text_arg(p_args, 'patient_name', 100);
  v_phone := private.patient_phone(p_clinic, p_args, p_ctx);
  if v_phone is null then
    perform private.refuse('patient_phone is required: the caller''s number is not available, so ask for one');
  end if;
  v_notes := private.text_arg(p_args, 'notes', 500, true);
  v_service := private.pick_service(p_clinic.id, private.text_arg(p_args, 'service', 80));
  v_named := private.pick_practitioner(p_clinic, private.text_arg(p_args, 'practitioner', 100));
  v_start := private.parse_local_start(v_start_text, p_clinic.time_zone, 'start');
  v_ends := v_start.instant + make_interval(mins => v_service.duration_minutes);
  perform private.lock_diary(p_clinic.id);
  perform set_config('lock_timeout', private.wait_left(), true);
  v_with_practitioners := private.clinic_has_practitioners(p_clinic.id);
  v_practitioner := private.diary_for_booking(p_clinic, v_named, v_with_practitioners and v_named is null,
                                              v_service.name, v_start.instant, v_service.duration_minutes, null);
  v_reference := private.new_reference(p_clinic.id);
  begin
    insert into public.appointments (
      clinic_id, reference, patient, service, notes, starts_at, ends_at, source,
      vapi_call_id, vapi_tool_call_id, practitioner_id)
    values (
      p_clinic.id, v_reference, jsonb_build_object('name', v_name, 'phone', v_phone),
      v_service.name, v_notes, v_start.instant, v_ends, 'vapi',
      p_ctx ->> 'call_id', p_ctx ->> 'tool_call_id', v_practitioner);
  exception
    when exclusion_violation then  -- a writer that does not hold the diary (staff, the service role)
      perform private.slot_taken(p_clinic, v_start.instant, v_service.duration_minutes, null, array[v_practitioner]);
  end;
  return format('Booked: %s%s on %s at %s%s for %s. Reference %s.',
                v_service.name, private.with_whom(v_practitioner),
                private.local_day(v_start.instant, p_clinic.time_zone),
                private.local_clock(v_start.instant, p_clinic.time_zone),
                case when v_start.ambiguous
                     then ' (the first of the two times the clock shows that hour, before the clocks go back)'
                     else '' end,
                v_name, v_reference);
end
$$;


--
-- Name: tool_cancel_appointment(public.clinics, jsonb, jsonb); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.tool_cancel_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) RETURNS text
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
declare
  v_appointment public.appointments;
begin
  perform private.check_arg_names(p_args, array['reference', 'patient_phone', 'start']);
  perform private.lock_diary(p_clinic.id);
  perform set_config('lock_timeout', private.wait_left(), true);
  v_appointment := private.find_appointment(p_clinic, p_args, p_ctx, private.text_arg(p_args, 'start', 40));
  update public.appointments
     set status = 'cancelled', cancelled_at = now()
   where id = v_appointment.id;
  return format('Cancelled: %s%s on %s at %s (reference %s).',
                v_appointment.service, private.with_whom(v_appointment.practitioner_id),
                private.local_day(v_appointment.starts_at, p_clinic.time_zone),
                private.local_clock(v_appointment.starts_at, p_clinic.time_zone), v_appointment.reference);
end
$$;


--
-- Name: tool_check_availability(public.clinics, jsonb); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.tool_check_availability(p_clinic public.clinics, p_args jsonb) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
declare
  v_day date;
  v_service public.clinic_services;
  v_today date := (now() at time zone p_clinic.time_zone)::date;
  v_slots text;
  v_day_name text;
  v_practitioner uuid;
  v_diaries uuid[];
  v_working uuid[];
  v_weekday integer;
begin
  perform private.check_arg_names(p_args, array['date', 'service', 'practitioner']);
  v_day := private.parse_local_date(private.required_text_arg(p_args, 'date', 40), 'date');
  v_service := private.pick_service(p_clinic.id, private.text_arg(p_args, 'service', 80));
  v_practitioner := private.pick_practitioner(p_clinic, private.text_arg(p_args, 'practitioner', 100));
  if v_day < v_today then
    perform private.refuse('That date has already passed');
  end if;
  if v_day > (now() at time zone p_clinic.time_zone)::date + p_clinic.booking_horizon_days then
    perform private.refuse(format('Bookings can be made at most %s days ahead', p_clinic.booking_horizon_days));
  end if;
  v_day_name := to_char(v_day, 'FMDay FMDD FMMonth YYYY');
  v_weekday := extract(isodow from v_day)::integer;

  if not private.clinic_has_practitioners(p_clinic.id) then
    perform private.refuse_if_closed(p_clinic.id, v_day);
    perform private.refuse_if_mirror_stale(p_clinic);
    select string_agg(private.local_clock(f.instant, p_clinic.time_zone), ', ' order by f.instant) into v_slots
    from private.diary_free_slots(p_clinic, v_day, v_service.duration_minutes, array[null::uuid]) as f;
    if v_slots is null then
      return format('No free times on %s for a %s (opening hours that day: %s).',
                    v_day_name, v_service.name, private.opening_hours_text(p_clinic.id, v_weekday));
    end if;
    return format('Free start times on %s for a %s-minute %s (%s time): %s.',
                  v_day_name, v_service.duration_minutes, v_service.name,
                  private.zone_place(p_clinic.time_zone), v_slots);
  end if;

  if v_practitioner is not null then
    perform private.refuse_unless_offered(v_practitioner, v_service.name);
    if not exists (select from private.diary_hours(p_clinic.id, v_practitioner, v_weekday)) then
      perform private.refuse(format('%s does not see patients on %ss', private.practitioner_name(v_practitioner),
                                    to_char(v_day, 'FMDay')));
    end if;
    perform private.refuse_if_diary_stale(p_clinic, v_practitioner);
    select string_agg(private.local_clock(f.instant, p_clinic.time_zone), ', ' order by f.instant) into v_slots
    from private.diary_free_slots(p_clinic, v_day, v_service.duration_minutes, array[v_practitioner]) as f;
    if v_slots is null then
      return format('No free times on %s for a %s with %s (their hours that day: %s).',
                    v_day_name, v_service.name, private.practitioner_name(v_practitioner),
                    private.diary_hours_text(p_clinic.id, v_practitioner, v_weekday));
    end if;
    return format('Free start times on %s for a %s-minute %s with %s (%s time): %s.',
                  v_day_name, v_service.duration_minutes, v_service.name, private.practitioner_name(v_practitioner),
                  private.zone_place(p_clinic.time_zone), v_slots);
  end if;

  v_diaries := private.offering_practitioners(p_clinic, v_service.name);
  if cardinality(v_diaries) = 0 then
    perform private.refuse(format('No practitioner here offers %s. The practitioners are: %s',
                                  v_service.name, private.practitioner_roster(p_clinic.id)));
  end if;
  select coalesce(array_agg(d order by o), '{}') into v_diaries
  from unnest(v_diaries) with ordinality as x(d, o)
  where exists (select from private.diary_hours(p_clinic.id, d, v_weekday));
  if cardinality(v_diaries) = 0 then
    perform private.refuse(format('No one sees patients for a %s on %ss', v_service.name, to_char(v_day, 'FMDay')));
  end if;
  v_working := v_diaries;
  select coalesce(array_agg(d order by o), '{}') into v_diaries
  from unnest(v_working) with ordinality as x(d, o)
  where not private.diary_mirror_stale(p_clinic, d);
  if cardinality(v_diaries) = 0 then  -- no one's calendar can be trusted: say so, not "no free times"
    perform private.refuse_if_diary_stale(p_clinic, v_working[1]);
  end if;
  select string_agg(format('%s: %s', private.practitioner_name(per.practitioner_id), per.times), '; '
                    order by per.first_free, per.o)
    into v_slots
  from (select f.practitioner_id, min(f.instant) as first_free,
               min(x.o) as o,
               string_agg(private.local_clock(f.instant, p_clinic.time_zone), ', ' order by f.instant) as times
        from private.diary_free_slots(p_clinic, v_day, v_service.duration_minutes, v_diaries) as f
        join unnest(v_diaries) with ordinality as x(d, o) on x.d = f.practitioner_id
        group by f.practitioner_id) per;
  if v_slots is null then
    return format('No free times on %s for a %s with anyone.', v_day_name, v_service.name);
  end if;
  return format('Free start times on %s for a %s-minute %s (%s time), by practitioner: %s. '
                'Book with a practitioner by name, or leave practitioner out for whoever is free.',
                v_day_name, v_service.duration_minutes, v_service.name, private.zone_place(p_clinic.time_zone), v_slots);
end
$$;


--
-- Name: tool_reschedule_appointment(public.clinics, jsonb, jsonb); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.tool_reschedule_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) RETURNS text
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
declare
  v_new_start_text text;
  v_practitioner_text text;
  v_appointment public.appointments;
  v_new record;
  v_length interval;
  v_minutes integer;
  v_named uuid;
  v_anyone boolean;
  v_practitioner uuid;
  v_with_practitioners boolean;
begin
  perform private.check_arg_names(p_args, array['reference', 'patient_phone', 'new_start', 'practitioner']);
  v_practitioner_text := private.text_arg(p_args, 'practitioner', 100);
  if v_practitioner_text is null then
    v_new_start_text := private.required_text_arg(p_args, 'new_start', 40);
  else
    v_new_start_text := private.text_arg(p_args, 'new_start', 40);
    v_named := private.pick_practitioner(p_clinic, v_practitioner_text);
  end if;
  perform private.lock_diary(p_clinic.id);
  perform set_config('lock_timeout', private.wait_left(), true);
  v_appointment := private.find_appointment(p_clinic, p_args, p_ctx, null);
  if v_new_start_text is null then
    select v_appointment.starts_at as instant, false as ambiguous into v_new;
  else
    v_new := private.parse_local_start(v_new_start_text, p_clinic.time_zone, 'new_start');
  end if;
  v_with_practitioners := private.clinic_has_practitioners(p_clinic.id);
  if v_practitioner_text is null then
    -- Kept, unless the practitioner no longer takes bookings: then whoever is free.
    v_named := v_appointment.practitioner_id;
    v_anyone := v_with_practitioners and v_named is not null
                and not (select active from public.practitioners where id = v_named);
  else
    v_anyone := v_with_practitioners and v_named is null;
  end if;
  if v_new.instant = v_appointment.starts_at
     and (v_named is not distinct from v_appointment.practitioner_id and not v_anyone) then
    perform private.refuse(format('The booking %s is already at that time%s', v_appointment.reference,
                                  private.with_whom(v_named)));
  end if;
  v_length := v_appointment.ends_at - v_appointment.starts_at;
  v_minutes := (extract(epoch from v_length) / 60)::integer;
  v_practitioner := private.diary_for_booking(p_clinic, case when v_anyone then null else v_named end, v_anyone,
                                              v_appointment.service, v_new.instant, v_minutes, v_appointment.id);
  begin
    update public.appointments
       set starts_at = v_new.instant, ends_at = v_new.instant + v_length, practitioner_id = v_practitioner
     where id = v_appointment.id;
  exception
    when exclusion_violation then  -- a writer that does not hold the diary (staff, the service role)
      perform private.slot_taken(p_clinic, v_new.instant, v_minutes, v_appointment.id, array[v_practitioner]);
  end;
  return format('Moved: %s%s from %s at %s to %s%s at %s%s (reference %s).',
                v_appointment.service, private.with_whom(v_appointment.practitioner_id),
                private.local_day(v_appointment.starts_at, p_clinic.time_zone),
                private.local_clock(v_appointment.starts_at, p_clinic.time_zone),
                case when v_practitioner is distinct from v_appointment.practitioner_id
                     then private.practitioner_name(v_practitioner) || ' on ' else '' end,
                private.local_day(v_new.instant, p_clinic.time_zone),
                private.local_clock(v_new.instant, p_clinic.time_zone),
                case when v_new.ambiguous
                     then ' (the first of the two times the clock shows that hour, before the clocks go back)'
                     else '' end,
                v_appointment.reference);
end
$$;


--
-- Name: vapi_answer(jsonb, text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.vapi_answer(p_body jsonb, p_nul_marker text) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
declare
  v_message jsonb := p_body -> 'message';
  v_calls jsonb;
  v_clinic public.clinics;
  v_clinic_id uuid;
  v_org_id jsonb;
  v_ctx jsonb;
  v_results jsonb := '[]'::jsonb;
  v_call jsonb;
  v_call_id text;
  v_deadline timestamptz := nullif(current_setting('vapi.deadline', true), '')::timestamptz;
begin
  if jsonb_typeof(v_message) is distinct from 'object' then
    return private.vapi_refuse_message(private.vapi_calls_found(p_body),
      'The body must be a Vapi server message: {"message": {"type": "tool-calls", ...}}');
  end if;
  v_calls := private.vapi_calls_of(v_message);
  if v_calls is null then
    return private.vapi_refuse_message(private.vapi_calls_found(v_message), 'The message has no toolCallList');
  end if;
  if jsonb_array_length(v_calls) > 20 then
    return private.vapi_refuse_message(v_calls, 'Too many tool calls in one message (at most 20)');
  end if;

  v_clinic_id := private.authenticate_request();
  if v_clinic_id is null then
    return private.vapi_refuse_all(v_calls,
      'Not authorised: this assistant''s clinic key is missing, wrong or revoked');
  end if;
  v_org_id := v_message -> 'assistant' -> 'metadata' -> 'org_id';
  if v_org_id is not null and v_org_id is distinct from to_jsonb(v_clinic_id::text) then
    return private.vapi_refuse_all(v_calls,
      'Not authorised: the assistant''s org_id does not match its clinic key');
  end if;
  select * into strict v_clinic from public.clinics where id = v_clinic_id;

  v_call_id := v_message #>> '{call,id}';
  v_ctx := jsonb_build_object(
    'caller_number', coalesce(v_message #>> '{call,customer,number}', v_message #>> '{customer,number}'),
    'call_id', case when length(v_call_id) <= 200 and (p_nul_marker is null or strpos(v_call_id, p_nul_marker) = 0)
                    then v_call_id end,
    'nul_marker', p_nul_marker);
  for v_call in select value from jsonb_array_elements(v_calls) loop
    v_results := v_results || jsonb_build_array(
      case when clock_timestamp() < v_deadline or v_deadline is null
           then private.run_tool_call(v_clinic, v_call, v_ctx)
           else jsonb_build_object('toolCallId', v_call -> 'id', 'error', private.busy_message()) end);
  end loop;
  return jsonb_build_object('results', v_results);
end
$$;


--
-- Name: vapi_call_arguments(jsonb); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.vapi_call_arguments(p_call jsonb) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
declare
  v_args jsonb := coalesce(p_call -> 'function' -> 'arguments', p_call -> 'function' -> 'parameters',
                           p_call -> 'arguments', p_call -> 'parameters');
begin
  if v_args is null or jsonb_typeof(v_args) = 'null'
     or (jsonb_typeof(v_args) = 'string' and btrim(v_args #>> '{}') = '') then
    return '{}'::jsonb;
  end if;
  if jsonb_typeof(v_args) = 'string' then
    begin
      v_args := (v_args #>> '{}')::jsonb;
    exception
      when invalid_text_representation then
        perform private.refuse('The tool call''s arguments are not valid JSON');
    end;
  end if;
  if jsonb_typeof(v_args) <> 'object' then
    perform private.refuse('The tool call''s arguments must be a JSON object');
  end if;
  return v_args;
end
$$;


--
-- Name: vapi_call_name(jsonb); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.vapi_call_name(p_call jsonb) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
declare
  v_name jsonb := coalesce(p_call -> 'function' -> 'name', p_call -> 'name');
begin
  if jsonb_typeof(v_name) is distinct from 'string' then
    perform private.refuse('This tool call has no function name');
  end if;
  if v_name #>> '{}' not in ('check_availability', 'book_appointment', 'cancel_appointment',
                             'reschedule_appointment') then
    perform private.refuse(format('Unknown tool "%s". Available tools: check_availability, '
                                  'book_appointment, cancel_appointment, reschedule_appointment',
                                  private.printable(v_name #>> '{}')));
  end if;
  return v_name #>> '{}';
end
$$;


--
-- Name: vapi_calls_found(jsonb); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.vapi_calls_found(p_container jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    SET search_path TO ''
    AS $$
  select coalesce(
    case when jsonb_typeof(p_container) = 'object' then coalesce(
      private.vapi_calls_of(p_container),
      case when jsonb_typeof(p_container -> 'toolCallList') = 'object' then jsonb_build_array(p_container -> 'toolCallList') end,
      case when jsonb_typeof(p_container -> 'toolCalls') = 'object' then jsonb_build_array(p_container -> 'toolCalls') end)
    end,
    '[]'::jsonb)
$$;


--
-- Name: vapi_calls_of(jsonb); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.vapi_calls_of(p_message jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    SET search_path TO ''
    AS $$
  select case
    when jsonb_typeof(p_message -> 'toolCallList') = 'array' then p_message -> 'toolCallList'
    when jsonb_typeof(p_message -> 'toolCalls') = 'array' then p_message -> 'toolCalls'
    when jsonb_typeof(p_message -> 'toolWithToolCallList') = 'array' then (
      select coalesce(jsonb_agg(
               case when jsonb_typeof(entry -> 'toolCall') = 'object'
                    then jsonb_build_object('name', coalesce(entry -> 'function' -> 'name', entry -> 'name'))
                         || (entry -> 'toolCall')
                    else entry end
               order by position), '[]'::jsonb)
      from jsonb_array_elements(p_message -> 'toolWithToolCallList') with ordinality as e(entry, position))
  end
$$;


--
-- Name: vapi_refuse_all(jsonb, text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.vapi_refuse_all(p_calls jsonb, p_message text) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    SET search_path TO ''
    AS $$
  select jsonb_build_object('results', coalesce(jsonb_agg(
           jsonb_build_object('toolCallId', call -> 'id', 'error', p_message) order by position), '[]'::jsonb))
  from jsonb_array_elements(p_calls) with ordinality as c(call, position)
$$;


--
-- Name: vapi_refuse_message(jsonb, text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.vapi_refuse_message(p_calls jsonb, p_message text) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    SET search_path TO ''
    AS $$
  select private.vapi_refuse_all(p_calls, p_message) || jsonb_build_object('error', p_message)
$$;


--
-- Name: vapi_refuse_unreadable(json, text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.vapi_refuse_unreadable(p_body json, p_message text) RETURNS json
    LANGUAGE sql IMMUTABLE
    SET search_path TO ''
    AS $$
  with container as (
    select case when json_typeof(p_body -> 'message') = 'object' then p_body -> 'message' else p_body end as c
  ),
  calls as (
    select case
      when json_typeof(c) <> 'object' then '[]'::json
      when json_typeof(c -> 'toolCallList') = 'array' then c -> 'toolCallList'
      when json_typeof(c -> 'toolCalls') = 'array' then c -> 'toolCalls'
      when json_typeof(c -> 'toolWithToolCallList') = 'array' then (
        select coalesce(json_agg(coalesce(entry -> 'toolCall', entry) order by position), '[]'::json)
        from json_array_elements(c -> 'toolWithToolCallList') with ordinality as e(entry, position))
      when json_typeof(c -> 'toolCallList') = 'object' then json_build_array(c -> 'toolCallList')
      when json_typeof(c -> 'toolCalls') = 'object' then json_build_array(c -> 'toolCalls')
      else '[]'::json end as list
    from container
  )
  select json_build_object(
    'results', coalesce(json_agg(json_build_object('toolCallId', call -> 'id', 'error', p_message) order by position),
                        '[]'::json),
    'error', p_message)
  from calls
  left join lateral json_array_elements(calls.list) with ordinality as c(call, position) on true
$$;


--
-- Name: vapi_wait_budget(); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.vapi_wait_budget() RETURNS interval
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select case when s.setting::bigint > 0
              then least(interval '2 seconds', make_interval(secs => s.setting::bigint * 0.6 / 1000))
              else interval '2 seconds' end
  from pg_catalog.pg_settings s
  where s.name = 'statement_timeout'
$$;


--
-- Name: wait_left(); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.wait_left() RETURNS text
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
declare
  v_deadline timestamptz := nullif(current_setting('vapi.deadline', true), '')::timestamptz;
  v_left_ms bigint;
begin
  if v_deadline is null then
    return current_setting('lock_timeout');
  end if;
  -- Rounded up, so a wait that times out ends at or after the deadline, never just before it.
  v_left_ms := ceil(extract(epoch from v_deadline - clock_timestamp()) * 1000);
  if v_left_ms <= 0 then
    perform private.refuse(private.busy_message());
  end if;
  return v_left_ms || 'ms';
end
$$;


--
-- Name: with_whom(uuid); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.with_whom(p_practitioner uuid) RETURNS text
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select coalesce(' with ' || private.practitioner_name(p_practitioner), '')
$$;


--
-- Name: zone_place(text); Type: FUNCTION; Schema: private; Owner: -
--

CREATE FUNCTION private.zone_place(p_zone text) RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path TO ''
    AS $$
  select replace(regexp_replace(p_zone, '^.*/', ''), '_', ' ')
$$;


--
-- Name: abandon_calendar_channel(text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.abandon_calendar_channel(p_channel_id text) RETURNS void
    LANGUAGE sql
    SET search_path TO ''
    AS $$
  update public.calendar_channels
     set retired_at = now(), retired_because = 'Google did not make it', stopped_at = now()
   where id = p_channel_id and resource_id is null and retired_at is null
$$;


--
-- Name: add_practitioner(uuid, text, jsonb, jsonb, text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.add_practitioner(p_clinic_id uuid, p_name text, p_services jsonb DEFAULT NULL::jsonb, p_opening_hours jsonb DEFAULT NULL::jsonb, p_calendar_id text DEFAULT NULL::text) RETURNS uuid
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
declare
  v_practitioner public.practitioners;
begin
  perform private.require(exists (select from public.clinics where id = p_clinic_id),
                          format('No clinic with id %s', p_clinic_id));
  insert into public.practitioners (clinic_id, name, services, calendar_id)
  values (p_clinic_id, private.check_practitioner_name(p_clinic_id, p_name, null),
          private.practitioner_services(p_clinic_id, p_services), private.check_calendar_id(p_calendar_id))
  returning * into v_practitioner;
  perform private.set_practitioner_hours(v_practitioner, p_opening_hours);
  return v_practitioner.id;
end
$$;


--
-- Name: apply_calendar_changes(uuid, jsonb, text, boolean, text, text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.apply_calendar_changes(p_clinic_id uuid, p_events jsonb, p_sync_token text, p_full boolean DEFAULT false, p_owner text DEFAULT NULL::text, p_calendar_id text DEFAULT NULL::text) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
declare
  v_clinic public.clinics;
  v_calendar text;
  v_event jsonb;
  v_busy integer := 0;
  v_freed integer := 0;
  v_cancelled integer := 0;
  v_moved integer := 0;
  v_restored integer := 0;
  v_outcome text;
  v_gone integer;
  v_ours boolean;
begin
  select * into v_clinic from public.clinics where id = p_clinic_id;
  perform private.require(v_clinic.id is not null, format('No clinic with id %s', p_clinic_id));
  perform private.require(jsonb_typeof(p_events) = 'array', 'p_events must be a JSON array');
  v_calendar := coalesce(p_calendar_id, v_clinic.calendar_id);
  if not p_full and jsonb_array_length(p_events) > 0 then
    perform private.retire_channel_that_missed_changes(p_clinic_id, v_calendar, p_events);
  end if;

  for v_event in select value from jsonb_array_elements(p_events) loop
    v_ours := v_event ->> 'appointment_id' is not null
              and exists (select from public.appointments
                          where id = (v_event ->> 'appointment_id')::uuid and clinic_id = p_clinic_id);
    if v_ours then
      -- Only the calendar that holds the event speaks for the appointment: a copy left behind by a
      -- move between calendars (until the daemon deletes it) is neither a change nor busy time.
      if exists (select from public.appointments
                 where id = (v_event ->> 'appointment_id')::uuid
                   and coalesce(event_calendar_id, v_clinic.calendar_id) = v_calendar) then
        v_outcome := private.apply_appointment_event(p_clinic_id, v_event, v_clinic.time_zone);
        v_cancelled := v_cancelled + (v_outcome = 'cancelled')::integer;
        v_moved := v_moved + (v_outcome = 'moved')::integer;
        v_restored := v_restored + (v_outcome = 'restored')::integer;
      end if;
      delete from public.calendar_busy
       where clinic_id = p_clinic_id and calendar_id = v_calendar and event_id = v_event ->> 'id';
    elsif v_event ->> 'status' = 'cancelled' or v_event ->> 'transparency' = 'transparent'
          or private.event_instant(v_event -> 'end', v_clinic.time_zone)
             <= private.event_instant(v_event -> 'start', v_clinic.time_zone) then
      delete from public.calendar_busy
       where clinic_id = p_clinic_id and calendar_id = v_calendar and event_id = v_event ->> 'id';
      v_freed := v_freed + (case when found then 1 else 0 end);
    else
      insert into public.calendar_busy (clinic_id, calendar_id, event_id, starts_at, ends_at)
      values (p_clinic_id, v_calendar, v_event ->> 'id', private.event_instant(v_event -> 'start', v_clinic.time_zone),
              private.event_instant(v_event -> 'end', v_clinic.time_zone))
      on conflict (clinic_id, calendar_id, event_id) do update
        set starts_at = excluded.starts_at, ends_at = excluded.ends_at;
      v_busy := v_busy + 1;
    end if;
  end loop;

  if p_full then
    delete from public.calendar_busy b
     where b.clinic_id = p_clinic_id and b.calendar_id = v_calendar
       and not exists (select from jsonb_array_elements(p_events) e
                       where e ->> 'id' = b.event_id and e ->> 'status' <> 'cancelled');
    get diagnostics v_gone = row_count;
    v_freed := v_freed + v_gone;
  end if;

  -- Busy time long past is of no use to availability (incremental listings report old events too).
  delete from public.calendar_busy
   where clinic_id = p_clinic_id and calendar_id = v_calendar and ends_at < now() - interval '1 day';

  insert into public.calendar_mirrors as m (clinic_id, calendar_id, sync_token, last_synced_at, last_full_sync_at,
                                            last_error, updated_at)
  values (p_clinic_id, v_calendar, p_sync_token, now(), case when p_full then now() end, null, now())
  on conflict (clinic_id, calendar_id) do update
    set sync_token = excluded.sync_token, last_synced_at = now(),
        last_full_sync_at = coalesce(excluded.last_full_sync_at, m.last_full_sync_at),
        last_error = null, updated_at = now(),
        lease_owner = case when m.lease_owner = p_owner then null else m.lease_owner end,
        lease_expires_at = case when m.lease_owner = p_owner then null else m.lease_expires_at end;
  return jsonb_build_object('busy', v_busy, 'freed', v_freed, 'cancelled', v_cancelled, 'moved', v_moved,
                            'restored', v_restored,
                            'again', private.mirror_notified_since_listing(p_clinic_id, v_calendar));
end
$$;


--
-- Name: appointment_sync_status(uuid, text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.appointment_sync_status(p_clinic_id uuid, p_reference text) RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select jsonb_build_object('appointment_id', id, 'status', status, 'sync_state', sync_state,
                            'calendar_event_id', calendar_event_id, 'last_sync_error', last_sync_error,
                            'revision', revision, 'synced_revision', synced_revision)
  from public.appointments
  where clinic_id = p_clinic_id and reference = upper(btrim(p_reference))
$$;


--
-- Name: begin_calendar_channel(uuid, text, text, text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.begin_calendar_channel(p_clinic_id uuid, p_channel_id text, p_token_hash text, p_calendar_id text) RETURNS void
    LANGUAGE sql
    SET search_path TO ''
    AS $$
  insert into public.calendar_channels (id, clinic_id, calendar_id, token_hash, expires_at)
  values (p_channel_id, p_clinic_id, p_calendar_id, p_token_hash, now() + interval '10 minutes')
$$;


--
-- Name: begin_connect_consent(text, text, text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.begin_connect_consent(p_secret text, p_state text, p_verifier_encrypted text) RETURNS text
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
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


--
-- Name: calendar_channel_stopped(text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.calendar_channel_stopped(p_channel_id text) RETURNS void
    LANGUAGE sql
    SET search_path TO ''
    AS $$
  update public.calendar_channels set stopped_at = now() where id = p_channel_id and stopped_at is null
$$;


--
-- Name: calendar_channel_work(text, integer, integer, integer, integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.calendar_channel_work(p_owner text, p_renew_within_seconds integer, p_confirm_within_seconds integer, p_lease_seconds integer, p_limit integer DEFAULT 50) RETURNS TABLE(action text, clinic_id uuid, calendar_id text, channel_id text, resource_id text)
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
begin
  perform private.require_owner(p_owner);
  perform private.require(p_renew_within_seconds between 0 and 2592000, 'renewal must be 0 to 2592000 seconds');
  perform private.require(p_confirm_within_seconds between 1 and 3600, 'confirmation must be 1 to 3600 seconds');
  perform private.require(p_lease_seconds between 5 and 3600, 'lease must be 5 to 3600 seconds');
  perform private.require(p_limit between 1 and 1000, 'limit must be 1 to 1000');
  update public.calendar_channels c
     set retired_at = now(), retired_because = 'lost: Google never confirmed it'
   where c.retired_at is null and c.confirmed_at is null
     and c.created_at < now() - make_interval(secs => p_confirm_within_seconds);
  perform private.ensure_mirror_rows(null);
  return query
  with needing as (
    select m.clinic_id, m.calendar_id
    from public.calendar_mirrors m
    join public.calendar_connections k on k.clinic_id = m.clinic_id and k.status = 'active'
    -- No channel that will do: a live one that is not close to expiring, or one waiting for Google's answer.
    -- A renewed calendar keeps its old channel until the new one is recorded (no notification falls between).
    where not exists (select from public.calendar_channels c
                      where c.clinic_id = m.clinic_id and c.calendar_id = m.calendar_id and c.retired_at is null
                        and (c.resource_id is null
                             or c.expires_at >= now() + make_interval(secs => p_renew_within_seconds)))
      and (m.channel_lease_expires_at is null or m.channel_lease_expires_at < now() or m.channel_lease_owner = p_owner)
    limit p_limit
    for update of m skip locked
  ),
  leased as (
    update public.calendar_mirrors m
       set channel_lease_owner = p_owner, channel_lease_expires_at = now() + make_interval(secs => p_lease_seconds)
      from needing n
     where m.clinic_id = n.clinic_id and m.calendar_id = n.calendar_id
    returning m.clinic_id, m.calendar_id
  )
  select 'create', l.clinic_id, l.calendar_id, null::text, null::text
  from leased l
  union all
  select 'stop', c.clinic_id, c.calendar_id, c.id, c.resource_id
  from public.calendar_channels c
  where c.retired_at is not null and c.stopped_at is null and c.resource_id is not null
  limit p_limit;
end
$$;


--
-- Name: calendar_connection_tokens(uuid); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.calendar_connection_tokens(p_clinic_id uuid) RETURNS TABLE(clinic_id uuid, status text, refresh_token_encrypted text, access_token_encrypted text, access_token_expires_at timestamp with time zone)
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select clinic_id, status, refresh_token_encrypted, access_token_encrypted, access_token_expires_at
  from public.calendar_connections
  where clinic_id = p_clinic_id
$$;


--
-- Name: calendar_connections_overview(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.calendar_connections_overview() RETURNS TABLE(clinic_id uuid, clinic_name text, calendar_id text, time_zone text, status text, google_account text, last_refreshed_at timestamp with time zone, last_error text, refresh_token_expires_at timestamp with time zone)
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select c.id, c.name, c.calendar_id, c.time_zone, coalesce(k.status, 'not_connected'), k.google_account,
         k.last_refreshed_at, k.last_error, k.refresh_token_expires_at
  from public.clinics c
  left join public.calendar_connections k on k.clinic_id = c.id
  order by c.name, c.id
$$;


--
-- Name: calendar_connections_to_refresh(integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.calendar_connections_to_refresh(p_within_seconds integer DEFAULT 600) RETURNS TABLE(clinic_id uuid, access_token_expires_at timestamp with time zone)
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select clinic_id, access_token_expires_at from public.calendar_connections
  where status = 'active'
    and (access_token_expires_at is null
         or access_token_expires_at < now() + make_interval(secs => p_within_seconds))
  order by access_token_expires_at nulls first
$$;


--
-- Name: calendar_mirror_freshness(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.calendar_mirror_freshness() RETURNS TABLE(clinic_id uuid, clinic_name text, last_synced_at timestamp with time zone, age_seconds double precision, stale boolean, last_error text)
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select c.id, c.name, m.last_synced_at, extract(epoch from now() - m.last_synced_at)::double precision,
         coalesce(m.last_synced_at < now() - make_interval(mins => c.mirror_max_age_minutes), false),
         m.last_error
  from public.calendar_connections k
  join public.clinics c on c.id = k.clinic_id
  left join lateral (
    -- A calendar never listed makes the clinic's never listed.
    select case when count(*) = count(x.last_synced_at) then min(x.last_synced_at) end as last_synced_at,
           string_agg(x.last_error, '; ' order by x.calendar_id) as last_error
    from public.calendar_mirrors x where x.clinic_id = c.id
  ) m on true
  order by c.name, c.id
$$;


--
-- Name: change_practitioner(uuid, jsonb); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.change_practitioner(p_practitioner_id uuid, p_changes jsonb) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
declare
  v_practitioner public.practitioners;
  v_unknown text;
begin
  select * into v_practitioner from public.practitioners where id = p_practitioner_id for update;
  perform private.require(found, format('No practitioner with id %s', p_practitioner_id));
  perform private.require(jsonb_typeof(p_changes) = 'object' and p_changes <> '{}'::jsonb, 'Nothing to change');
  select string_agg(k, ', ') into v_unknown from jsonb_object_keys(p_changes) k
   where k not in ('name', 'services', 'opening_hours', 'calendar_id', 'active');
  perform private.require(v_unknown is null, format('Unknown change: %s', v_unknown));
  if p_changes ? 'name' then
    update public.practitioners
       set name = private.check_practitioner_name(clinic_id, p_changes ->> 'name', id)
     where id = p_practitioner_id;
  end if;
  if p_changes ? 'services' then
    update public.practitioners
       set services = private.practitioner_services(clinic_id, p_changes -> 'services')
     where id = p_practitioner_id;
  end if;
  if p_changes ? 'calendar_id' then
    update public.practitioners set calendar_id = private.check_calendar_id(p_changes ->> 'calendar_id')
     where id = p_practitioner_id;
  end if;
  if p_changes ? 'opening_hours' then
    perform private.set_practitioner_hours(v_practitioner, p_changes -> 'opening_hours');
  end if;
  if p_changes ? 'active' then
    perform private.require(jsonb_typeof(p_changes -> 'active') = 'boolean', 'active is true or false');
    perform private.require((p_changes ->> 'active')::boolean,
                            'To deactivate a practitioner use deactivate_practitioner (it says what happens to their bookings)');
    update public.practitioners set active = true, deactivated_at = null where id = p_practitioner_id;
  end if;
end
$$;


--
-- Name: claim_appointments(text, integer, integer, integer, integer, integer, double precision, jsonb); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.claim_appointments(p_owner text, p_limit integer DEFAULT 50, p_lease_seconds integer DEFAULT 120, p_per_clinic integer DEFAULT 10, p_account_limit integer DEFAULT NULL::integer, p_project_limit integer DEFAULT NULL::integer, p_hold_seconds double precision DEFAULT 2, p_returns jsonb DEFAULT NULL::jsonb) RETURNS TABLE(appointment_id uuid, clinic_id uuid, revision integer, status text, reference text, patient jsonb, service text, notes text, starts_at timestamp with time zone, ends_at timestamp with time zone, calendar_event_id text, sync_attempts integer, created_at timestamp with time zone, time_zone text, calendar_id text, changed_at timestamp with time zone, budget_key text, budget_entry bigint, event_generation integer, event_calendar_id text, practitioner_name text)
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
declare
  v_budgeted boolean := p_account_limit is not null;
begin
  perform private.require_owner(p_owner);
  perform private.require(p_limit between 1 and 1000, 'limit must be 1 to 1000');
  perform private.require(p_lease_seconds between 5 and 3600, 'lease must be 5 to 3600 seconds');
  perform private.require(p_per_clinic between 1 and 1000, 'per-clinic limit must be 1 to 1000');
  perform private.check_budget_arguments(p_account_limit, p_project_limit, p_hold_seconds);
  if v_budgeted then
    perform private.begin_budget_change(p_returns);
  end if;

  return query
  with recursive due_clinics (clinic_id) as (
    -- Each clinic with a due pending row, in clinic order, one index probe apiece.
    (select a.clinic_id from public.appointments a
      where a.sync_state = 'pending' and a.next_attempt_at <= now()
      order by a.clinic_id
      limit 1)
    union all
    select (select a.clinic_id from public.appointments a
             where a.sync_state = 'pending' and a.next_attempt_at <= now() and a.clinic_id > d.clinic_id
             order by a.clinic_id
             limit 1)
    from due_clinics d
    where d.clinic_id is not null
  ),
  candidates as (
    -- The head of each such clinic's queue ...
    select h.id, h.clinic_id, h.next_attempt_at as due_at
    from due_clinics d
    cross join lateral (
      select a.id, a.clinic_id, a.next_attempt_at
      from public.appointments a
      where a.clinic_id = d.clinic_id and a.sync_state = 'pending' and a.next_attempt_at <= now()
      order by a.next_attempt_at, a.id
      limit p_per_clinic
    ) h
    where d.clinic_id is not null
    union all
    -- ... and leases a crashed replica left to expire (rare, and few).
    select x.id, x.clinic_id, x.due_at
    from (select a.id, a.clinic_id, coalesce(a.next_attempt_at, a.lease_expires_at) as due_at
          from public.appointments a
          where a.sync_state = 'in_flight' and a.lease_expires_at < now()
          order by a.lease_expires_at
          limit p_limit * p_per_clinic) x
  ),
  ranked as (
    select c.id, c.clinic_id, c.due_at,
           row_number() over (partition by c.clinic_id order by c.due_at, c.id) as nth,
           private.google_budget_key(c.clinic_id, k.google_account) as budget_key,
           coalesce(k.status = 'active', false) as connected
    from candidates c
    left join public.calendar_connections k on k.clinic_id = c.clinic_id
  ),
  spent as (
    select w.budget_key, w.requests from private.google_requests_in_window() w where v_budgeted
  ),
  throttled as (
    select t.budget_key from private.google_throttles t where v_budgeted and t.throttled_until > now()
  ),
  within_account as (
    -- Connected rows, by rank then due time, as far as their key's budget goes; unconnected rows
    -- (to be parked) need no budget.
    select r.*, count(*) filter (where r.connected) over (order by r.nth, r.due_at, r.id) as nth_connected
    from (
      select r.*,
             count(*) filter (where r.connected)
               over (partition by r.budget_key order by r.nth, r.due_at, r.id) as nth_of_key
      from ranked r
      where r.nth <= p_per_clinic
    ) r
    where not v_budgeted or not r.connected
       or (r.nth_of_key <= p_account_limit - coalesce((select s.requests from spent s where s.budget_key = r.budget_key), 0)
           and not exists (select from throttled t where t.budget_key = r.budget_key))
  ),
  chosen as (
    select w.id from within_account w
    where not v_budgeted or not w.connected
       or w.nth_connected <= p_project_limit - coalesce((select sum(s.requests) from spent s), 0)
    order by w.nth, w.due_at, w.id
    limit p_limit
  ),
  locked as (
    select a.id, a.clinic_id
    from public.appointments a
    where a.id in (select chosen.id from chosen)
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
  ),
  reserved as (
    insert into private.google_requests as g (budget_key, usable_until, requests)
    select r.budget_key, now() + make_interval(secs => p_hold_seconds), count(*)
    from claimed c
    join ranked r on r.id = c.id
    where v_budgeted
    group by r.budget_key
    returning g.id, g.budget_key
  )
  select c.id, c.clinic_id, c.revision, c.status, c.reference, c.patient, c.service, c.notes,
         c.starts_at, c.ends_at, c.calendar_event_id, c.sync_attempts, c.created_at,
         k.time_zone, coalesce(p.calendar_id, k.calendar_id), c.updated_at, r.budget_key, v.id, c.event_generation,
         case when c.calendar_event_id is not null then coalesce(c.event_calendar_id, k.calendar_id) end,
         p.name
  from claimed c
  join public.clinics k on k.id = c.clinic_id
  left join public.practitioners p on p.id = c.practitioner_id
  join ranked r on r.id = c.id
  left join reserved v on v.budget_key = r.budget_key
  order by c.starts_at;
end
$$;


--
-- Name: claim_mirror_targets(text, integer, double precision, integer, uuid, text, boolean); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.claim_mirror_targets(p_owner text, p_lease_seconds integer, p_interval_seconds double precision, p_limit integer DEFAULT 100, p_clinic_id uuid DEFAULT NULL::uuid, p_calendar_id text DEFAULT NULL::text, p_only_due boolean DEFAULT false) RETURNS TABLE(clinic_id uuid, calendar_id text, time_zone text, sync_token text, last_synced_at timestamp with time zone)
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
begin
  perform private.require_owner(p_owner);
  perform private.require(p_lease_seconds between 5 and 3600, 'lease must be 5 to 3600 seconds');
  perform private.require(p_interval_seconds between 0.1 and 86400, 'interval must be 0.1 to 86400 seconds');
  perform private.require(p_limit between 1 and 10000, 'limit must be 1 to 10000');
  perform private.require(p_calendar_id is null or p_clinic_id is not null, 'a calendar is named with its clinic');
  perform private.ensure_mirror_rows(p_clinic_id);
  return query
  with due as (
    select m.clinic_id, m.calendar_id
    from public.calendar_mirrors m
    join public.calendar_connections k on k.clinic_id = m.clinic_id and k.status = 'active'
    where (p_clinic_id is null or m.clinic_id = p_clinic_id)
      and (p_calendar_id is null or m.calendar_id = p_calendar_id)
      and (m.lease_expires_at is null or m.lease_expires_at < now() or m.lease_owner = p_owner)
      and ((p_clinic_id is not null and not p_only_due)
           or m.last_synced_at is null
           or m.last_synced_at < now() - make_interval(secs => p_interval_seconds)
           or m.notified_at > coalesce(m.listing_started_at, '-infinity'))
    order by m.notified_at desc nulls last, m.last_synced_at nulls first
    limit p_limit
    for update of m skip locked
  ),
  leased as (
    update public.calendar_mirrors m
       set lease_owner = p_owner, lease_expires_at = now() + make_interval(secs => p_lease_seconds),
           listing_started_at = now()
      from due
     where m.clinic_id = due.clinic_id and m.calendar_id = due.calendar_id
    returning m.clinic_id, m.calendar_id, m.sync_token, m.last_synced_at
  )
  select c.id, l.calendar_id, c.time_zone, l.sync_token, l.last_synced_at
  from leased l
  join public.clinics c on c.id = l.clinic_id
  order by l.last_synced_at nulls first;
end
$$;


--
-- Name: clinic_keys(uuid); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.clinic_keys(p_clinic_id uuid) RETURNS TABLE(id uuid, key_prefix text, label text, created_at timestamp with time zone, revoked_at timestamp with time zone, last_used_at timestamp with time zone)
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select id, key_prefix, label, created_at, revoked_at, last_used_at
  from public.clinic_api_keys
  where clinic_id = p_clinic_id
  order by created_at
$$;


--
-- Name: clinic_links(uuid); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.clinic_links(p_clinic_id uuid) RETURNS TABLE(id uuid, purpose text, state text, created_at timestamp with time zone, expires_at timestamp with time zone, used_at timestamp with time zone, revoked_at timestamp with time zone)
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select l.id, l.purpose, private.clinic_link_state(l), l.created_at, l.expires_at, l.used_at, l.revoked_at
  from public.clinic_links l
  where l.clinic_id = p_clinic_id
  order by l.created_at desc
$$;


--
-- Name: clinic_practitioners(uuid); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.clinic_practitioners(p_clinic_id uuid) RETURNS TABLE(id uuid, name text, services text[], calendar_id text, active boolean, opening_hours jsonb, upcoming_bookings integer)
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select p.id, p.name, p.services, p.calendar_id, p.active,
         (select jsonb_agg(jsonb_build_object('weekday', h.weekday, 'opens', to_char(h.opens, 'HH24:MI'),
                                              'closes', case when h.closes = time '24:00' then '24:00'
                                                             else to_char(h.closes, 'HH24:MI') end)
                           order by h.weekday, h.opens)
            from public.practitioner_hours h where h.practitioner_id = p.id),
         (select count(*)::integer from public.appointments a
           where a.practitioner_id = p.id and a.status = 'booked' and a.ends_at > now())
  from public.practitioners p
  where p.clinic_id = p_clinic_id
  order by p.active desc, lower(p.name), p.id
$$;


--
-- Name: clinic_profile(uuid); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.clinic_profile(p_clinic_id uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
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


--
-- Name: clinic_status_page(text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.clinic_status_page(p_secret text) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
    AS $$
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


--
-- Name: complete_appointment_sync(uuid, text, integer, text, text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.complete_appointment_sync(p_appointment_id uuid, p_owner text, p_revision integer, p_event_id text, p_event_link text DEFAULT NULL::text) RETURNS text
    LANGUAGE sql
    SET search_path TO ''
    AS $$
  select c.state
  from public.complete_appointment_syncs(jsonb_build_array(jsonb_build_object(
    'appointment_id', p_appointment_id, 'owner', p_owner, 'revision', p_revision,
    'event_id', p_event_id, 'event_link', p_event_link))) c
$$;


--
-- Name: complete_appointment_syncs(jsonb); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.complete_appointment_syncs(p_completions jsonb) RETURNS TABLE(appointment_id uuid, state text)
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
begin
  perform private.require(jsonb_typeof(p_completions) = 'array' and jsonb_array_length(p_completions) between 1 and 1000,
                          'completions must be an array of 1 to 1000 items');
  -- Lock the rows in id order first, so two writers of several rows that do the same cannot deadlock.
  perform 1 from public.appointments a
   where a.id in (select (e ->> 'appointment_id')::uuid from jsonb_array_elements(p_completions) e)
   order by a.id
   for update;
  return query
  with item as (
    select (e ->> 'appointment_id')::uuid as id, e ->> 'owner' as owner, (e ->> 'revision')::integer as revision,
           e ->> 'event_id' as event_id, e ->> 'event_link' as event_link, e ->> 'calendar_id' as calendar_id, n
    from jsonb_array_elements(p_completions) with ordinality as i(e, n)
  ),
  done as (
    update public.appointments a
       set sync_state = case when a.revision = i.revision then 'synced' else 'pending' end,
           next_attempt_at = case when a.revision = i.revision then null else now() end,
           sync_attempts = case when a.revision = i.revision then a.sync_attempts else 0 end,
           synced_revision = i.revision, synced_at = now(),
           calendar_event_id = i.event_id, calendar_event_link = coalesce(i.event_link, a.calendar_event_link),
           event_calendar_id = coalesce(i.calendar_id, a.event_calendar_id),
           lease_owner = null, lease_expires_at = null, last_sync_error = null
      from item i
     where a.id = i.id and a.sync_state = 'in_flight' and a.lease_owner = i.owner
    returning a.id, a.sync_state
  )
  select i.id, coalesce(d.sync_state, 'lease_lost')
  from item i
  left join done d on d.id = i.id
  order by i.n;
end
$$;


--
-- Name: complete_connect_consent(text, text, text, text[], text, timestamp with time zone, timestamp with time zone); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.complete_connect_consent(p_state text, p_google_account text, p_refresh_token_encrypted text, p_scopes text[], p_access_token_encrypted text DEFAULT NULL::text, p_access_token_expires_at timestamp with time zone DEFAULT NULL::timestamp with time zone, p_refresh_token_expires_at timestamp with time zone DEFAULT NULL::timestamp with time zone) RETURNS text
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
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


--
-- Name: connect_consent(text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.connect_consent(p_state text) RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
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


--
-- Name: connect_readiness(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.connect_readiness() RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
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


--
-- Name: create_clinic(text, text, text, jsonb, jsonb, text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.create_clinic(p_name text, p_time_zone text DEFAULT 'Europe/London'::text, p_calendar_id text DEFAULT 'primary'::text, p_opening_hours jsonb DEFAULT NULL::jsonb, p_services jsonb DEFAULT NULL::jsonb, p_phone_country_code text DEFAULT '44'::text) RETURNS uuid
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $_$
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
$_$;


--
-- Name: deactivate_practitioner(uuid, boolean); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.deactivate_practitioner(p_practitioner_id uuid, p_reassign boolean DEFAULT false) RETURNS TABLE(appointment_id uuid, reference text, starts_at timestamp with time zone, service text, practitioner_name text, outcome text)
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
declare
  v_practitioner public.practitioners;
  v_clinic public.clinics;
  v_appointment public.appointments;
  v_to uuid;
begin
  select * into v_practitioner from public.practitioners where id = p_practitioner_id;
  perform private.require(found, format('No practitioner with id %s', p_practitioner_id));
  select * into v_clinic from public.clinics where id = v_practitioner.clinic_id;
  perform private.lock_diary(v_clinic.id);  -- outside a Vapi call it waits as long as lock_timeout allows
  update public.practitioners set active = false, deactivated_at = coalesce(deactivated_at, now())
   where id = p_practitioner_id;
  for v_appointment in
    select * from public.appointments a
    where a.practitioner_id = p_practitioner_id and a.status = 'booked' and a.ends_at > now()
    order by a.starts_at, a.id
  loop
    v_to := null;
    if p_reassign and v_appointment.starts_at > now() then
      v_to := private.choose_practitioner(v_clinic, v_appointment.service, v_appointment.starts_at,
                (extract(epoch from v_appointment.ends_at - v_appointment.starts_at) / 60)::integer, v_appointment.id);
    end if;
    if v_to is not null then
      update public.appointments set practitioner_id = v_to where id = v_appointment.id;
    end if;
    appointment_id := v_appointment.id;
    reference := v_appointment.reference;
    starts_at := v_appointment.starts_at;
    service := v_appointment.service;
    practitioner_name := private.practitioner_name(coalesce(v_to, p_practitioner_id));
    outcome := case when v_to is not null then 'moved' else 'kept' end;
    return next;
  end loop;
end
$$;


--
-- Name: delete_cancelled_appointment(uuid); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.delete_cancelled_appointment(p_appointment_id uuid) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
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


--
-- Name: end_appointment_attempt(uuid, text, text, text, double precision); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.end_appointment_attempt(p_appointment_id uuid, p_owner text, p_state text, p_error text, p_delay_seconds double precision DEFAULT 0) RETURNS text
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
declare
  v_target text := p_state;
  v_state text;
begin
  perform private.require(p_state in ('pending', 'failed', 'parked'), 'state must be pending, failed or parked');
  perform private.require(p_delay_seconds between 0 and 86400, 'delay must be 0 to 86400 seconds');
  if p_state = 'parked' then
    perform from public.calendar_connections c
      join public.appointments a on a.clinic_id = c.clinic_id
     where a.id = p_appointment_id and c.status = 'active'
       for share of c;
    if found then
      v_target := 'pending';
    end if;
  end if;
  update public.appointments
     set sync_state = v_target,
         next_attempt_at = case when v_target = 'pending' then now() + make_interval(secs => p_delay_seconds) end,
         last_sync_error = left(p_error, 500), lease_owner = null, lease_expires_at = null
   where id = p_appointment_id and sync_state = 'in_flight' and lease_owner = p_owner
  returning sync_state into v_state;
  return coalesce(v_state, 'lease_lost');
end
$$;


--
-- Name: google_budget_snapshot(integer, integer, integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.google_budget_snapshot(p_account_limit integer, p_project_limit integer, p_top integer DEFAULT 5) RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  with spent as (select * from private.google_requests_in_window()),
  throttled as (select t.budget_key from private.google_throttles t where t.throttled_until > now()),
  project as (select coalesce(sum(s.requests), 0) as used from spent s),
  due as (
    select distinct private.google_budget_key(a.clinic_id, k.google_account) as budget_key, a.clinic_id
    from public.appointments a
    join public.calendar_connections k on k.clinic_id = a.clinic_id and k.status = 'active'
    where a.sync_state = 'pending' and a.next_attempt_at <= now()
  ),
  held as (
    select d.clinic_id, d.budget_key
    from due d
    where exists (select from throttled t where t.budget_key = d.budget_key)
       or coalesce((select s.requests from spent s where s.budget_key = d.budget_key), 0) >= p_account_limit
       or (select used from project) >= p_project_limit
  )
  select jsonb_build_object(
    'project_used', (select used from project),
    'project_limit', p_project_limit,
    'account_limit', p_account_limit,
    'accounts', coalesce((select jsonb_agg(jsonb_build_object('key', s.budget_key, 'used', s.requests)
                                           order by s.requests desc, s.budget_key)
                          from (select * from spent order by requests desc, budget_key limit greatest(p_top, 0)) s),
                         '[]'::jsonb),
    'throttled', (select count(*) from throttled),
    'held_back_clinics', (select count(*) from held),
    'next_budget_seconds', (select min(greatest(0.05, private.google_budget_wait(h.budget_key, p_account_limit,
                                                                                 p_project_limit)))
                            from held h))
$$;


--
-- Name: issue_clinic_key(uuid, text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.issue_clinic_key(p_clinic_id uuid, p_label text DEFAULT ''::text) RETURNS text
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
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


--
-- Name: issue_clinic_link(uuid, text, interval); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.issue_clinic_link(p_clinic_id uuid, p_purpose text, p_valid_for interval) RETURNS TABLE(id uuid, secret text, expires_at timestamp with time zone)
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
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


--
-- Name: next_event_generation(uuid, text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.next_event_generation(p_appointment_id uuid, p_owner text) RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
declare
  v_generation integer;
begin
  perform private.require_owner(p_owner);
  update public.appointments
     set event_generation = event_generation + 1, calendar_event_id = null, calendar_event_link = null
   where id = p_appointment_id and sync_state = 'in_flight' and lease_owner = p_owner
  returning event_generation into v_generation;
  return v_generation;
end
$$;


--
-- Name: open_clinic_link(text, text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.open_clinic_link(p_secret text, p_purpose text) RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
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


--
-- Name: purge_vapi_tool_calls(interval, integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.purge_vapi_tool_calls(p_older_than interval, p_limit integer DEFAULT 10000) RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
declare
  v_deleted integer;
begin
  perform private.require(p_older_than is not null, 'p_older_than is required, e.g. ''30 days''');
  perform private.require(p_older_than >= interval '1 day',
    format('p_older_than must be at least 1 day, not %s: Vapi may still retry a younger tool call', p_older_than));
  perform private.require(p_limit between 1 and 100000, 'p_limit must be between 1 and 100000');
  delete from public.vapi_tool_calls
   where (clinic_id, tool_call_id) in (select clinic_id, tool_call_id from public.vapi_tool_calls
                                       where created_at < now() - p_older_than
                                       order by created_at
                                       limit p_limit);
  get diagnostics v_deleted = row_count;
  return v_deleted;
end
$$;


--
-- Name: readiness_facts(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.readiness_facts() RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path TO ''
    AS $$
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


--
-- Name: reconnect_link(text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.reconnect_link(p_status_secret text) RETURNS TABLE(id uuid, secret text, expires_at timestamp with time zone)
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
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


--
-- Name: record_calendar_channel(text, text, timestamp with time zone, text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.record_calendar_channel(p_channel_id text, p_resource_id text, p_expires_at timestamp with time zone, p_owner text) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
declare
  v_clinic uuid;
  v_calendar text;
begin
  perform private.require(p_expires_at > now(), 'the channel has already expired');
  update public.calendar_channels
     set resource_id = coalesce(resource_id, p_resource_id), expires_at = p_expires_at
   where id = p_channel_id and retired_at is null
  returning clinic_id, calendar_id into v_clinic, v_calendar;
  perform private.require(v_clinic is not null, format('No channel %s waits for Google''s answer', p_channel_id));
  update public.calendar_channels
     set retired_at = now(),
         retired_because = case when id = p_channel_id then 'Google named another resource' else 'replaced' end
   where clinic_id = v_clinic and calendar_id = v_calendar and retired_at is null
     and (id <> p_channel_id or resource_id <> p_resource_id);
  update public.calendar_mirrors
     set channel_lease_owner = null, channel_lease_expires_at = null
   where clinic_id = v_clinic and calendar_id = v_calendar and channel_lease_owner = p_owner;
end
$$;


--
-- Name: record_calendar_notification(text, text, text, text, bigint); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.record_calendar_notification(p_channel_id text, p_resource_id text, p_token text, p_state text, p_message_number bigint) RETURNS uuid
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
declare
  v_clinic uuid;
  v_calendar text;
begin
  update public.calendar_channels c
     set last_message_number = p_message_number,
         confirmed_at = coalesce(c.confirmed_at, now()),
         resource_id = coalesce(c.resource_id, p_resource_id)
   where c.id = p_channel_id and c.retired_at is null and c.expires_at > now()
     and coalesce(c.resource_id, p_resource_id) = p_resource_id
     and c.token_hash = encode(sha256(convert_to(coalesce(p_token, ''), 'UTF8')), 'hex')
     and p_state in ('sync', 'exists', 'not_exists')
     and p_message_number > coalesce(c.last_message_number, 0)
  returning c.clinic_id, c.calendar_id into v_clinic, v_calendar;
  if v_clinic is not null and p_state <> 'sync' then
    update public.calendar_mirrors set notified_at = now()
     where clinic_id = v_clinic and calendar_id = v_calendar;
  end if;
  return v_clinic;
end
$$;


--
-- Name: record_mirror_failure(uuid, text, text, text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.record_mirror_failure(p_clinic_id uuid, p_error text, p_owner text DEFAULT NULL::text, p_calendar_id text DEFAULT NULL::text) RETURNS void
    LANGUAGE sql
    SET search_path TO ''
    AS $$
  insert into public.calendar_mirrors as m (clinic_id, calendar_id, last_error, updated_at)
  select c.id, coalesce(p_calendar_id, c.calendar_id), left(p_error, 500), now()
  from public.clinics c where c.id = p_clinic_id
  on conflict (clinic_id, calendar_id) do update
    set last_error = excluded.last_error, updated_at = now(),
        lease_owner = case when m.lease_owner = p_owner then null else m.lease_owner end,
        lease_expires_at = case when m.lease_owner = p_owner then null else m.lease_expires_at end
$$;


--
-- Name: record_token_failure(uuid, text, boolean); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.record_token_failure(p_clinic_id uuid, p_error text, p_needs_reauth boolean) RETURNS text
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
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


--
-- Name: record_token_refresh(uuid, text, timestamp with time zone, text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.record_token_refresh(p_clinic_id uuid, p_access_token_encrypted text, p_access_token_expires_at timestamp with time zone, p_refresh_token_encrypted text DEFAULT NULL::text) RETURNS text
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
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


--
-- Name: release_appointment_leases(text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.release_appointment_leases(p_owner text) RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
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


--
-- Name: reserve_google_requests(uuid, integer, integer, integer, double precision, jsonb); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.reserve_google_requests(p_clinic_id uuid, p_requests integer, p_account_limit integer, p_project_limit integer, p_hold_seconds double precision DEFAULT 2, p_returns jsonb DEFAULT NULL::jsonb) RETURNS TABLE(granted integer, entry bigint, retry_after_seconds double precision)
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
declare
  v_key text;
  v_grant integer;
  v_entry bigint;
begin
  perform private.require(p_clinic_id is not null, 'a clinic is required');
  perform private.require(p_requests between 1 and 1000, 'requests must be 1 to 1000');
  perform private.require(p_account_limit is not null, 'give both the per-account and the per-project limit');
  perform private.check_budget_arguments(p_account_limit, p_project_limit, p_hold_seconds);
  perform private.begin_budget_change(p_returns);
  v_key := private.google_budget_key_of(p_clinic_id);
  if exists (select from private.google_throttles t where t.budget_key = v_key and t.throttled_until > now()) then
    v_grant := 0;
  else
    v_grant := greatest(0, least(
      p_requests,
      p_account_limit - coalesce((select w.requests from private.google_requests_in_window() w
                                  where w.budget_key = v_key), 0),
      p_project_limit - coalesce((select sum(w.requests) from private.google_requests_in_window() w), 0)))::integer;
  end if;
  if v_grant = 0 then
    return query select 0, null::bigint,
                        greatest(0.05, private.google_budget_wait(v_key, p_account_limit, p_project_limit));
    return;
  end if;
  insert into private.google_requests (budget_key, usable_until, requests)
  values (v_key, now() + make_interval(secs => p_hold_seconds), v_grant)
  returning id into v_entry;
  return query select v_grant, v_entry, 0::double precision;
end
$$;


--
-- Name: resync_appointment(uuid); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.resync_appointment(p_appointment_id uuid) RETURNS text
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
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


--
-- Name: retry_failed_appointments(uuid, uuid); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.retry_failed_appointments(p_clinic_id uuid DEFAULT NULL::uuid, p_appointment_id uuid DEFAULT NULL::uuid) RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
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


--
-- Name: revoke_clinic_key(uuid); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.revoke_clinic_key(p_key_id uuid) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
begin
  update public.clinic_api_keys
     set revoked_at = least(coalesce(revoked_at, now()), now())
   where id = p_key_id;
  if not found then
    raise exception 'No clinic key with id %', p_key_id using errcode = 'P0002';
  end if;
end
$$;


--
-- Name: revoke_clinic_link(uuid); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.revoke_clinic_link(p_link_id uuid) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
begin
  update public.clinic_links
     set revoked_at = coalesce(revoked_at, now()), code_verifier_encrypted = null
   where id = p_link_id;
  if not found then
    raise exception 'No clinic link with id %', p_link_id using errcode = 'P0002';
  end if;
end
$$;


--
-- Name: rotate_clinic_key(uuid, text, interval); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.rotate_clinic_key(p_clinic_id uuid, p_label text DEFAULT ''::text, p_grace interval DEFAULT '00:00:00'::interval) RETURNS text
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
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


--
-- Name: save_calendar_connection(uuid, text, text, text[], text, timestamp with time zone, timestamp with time zone); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.save_calendar_connection(p_clinic_id uuid, p_google_account text, p_refresh_token_encrypted text, p_scopes text[], p_access_token_encrypted text DEFAULT NULL::text, p_access_token_expires_at timestamp with time zone DEFAULT NULL::timestamp with time zone, p_refresh_token_expires_at timestamp with time zone DEFAULT NULL::timestamp with time zone) RETURNS text
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
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


--
-- Name: sync_backlog(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.sync_backlog() RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path TO ''
    AS $$
  select jsonb_build_object(
    'by_state', coalesce((select jsonb_object_agg(sync_state, n)
                          from (select sync_state, count(*) as n from public.appointments group by sync_state) s),
                         '{}'::jsonb),
    'oldest_pending_age_seconds', coalesce((
       select extract(epoch from now() - min(updated_at))
       from public.appointments where sync_state in ('pending', 'in_flight')), 0),
    'clinics_needing_reauth', (select count(*) from public.calendar_connections where status = 'needs_reauth'))
$$;


--
-- Name: throttle_google_requests(uuid, double precision, double precision, text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.throttle_google_requests(p_clinic_id uuid, p_seconds double precision, p_max_seconds double precision, p_reason text) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO ''
    AS $$
begin
  perform private.require(p_clinic_id is not null, 'a clinic is required');
  perform private.require(p_seconds > 0 and p_max_seconds <= 86400 and p_seconds <= p_max_seconds,
                          'seconds must be more than 0 and at most the maximum, itself at most 86400');
  insert into private.google_throttles as t (budget_key, throttled_until, hold_seconds, reason)
  values (private.google_budget_key_of(p_clinic_id), now() + make_interval(secs => p_seconds), p_seconds,
          left(coalesce(p_reason, 'rate limited'), 200))
  on conflict (budget_key) do update
    set hold_seconds = case when t.throttled_until > now() then t.hold_seconds
                            when t.throttled_until > now() - make_interval(secs => greatest(t.hold_seconds, 60))
                            then least(greatest(t.hold_seconds * 2, excluded.hold_seconds), p_max_seconds)
                            else excluded.hold_seconds end,
        reason = excluded.reason;
  update private.google_throttles t
     set throttled_until = greatest(t.throttled_until, now() + make_interval(secs => t.hold_seconds))
   where t.budget_key = private.google_budget_key_of(p_clinic_id);
end
$$;


--
-- Name: vapi_tool_call(json); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.vapi_tool_call(json) RETURNS json
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO ''
    AS $_$
declare
  v_text text := $1::text;
  v_marker text;
  v_body jsonb;
  v_answer text;
begin
  perform set_config('vapi.deadline', (statement_timestamp() + private.vapi_wait_budget())::text, true);
  if strpos(v_text, '\u0000') > 0 then
    v_marker := 'NUL' || replace(gen_random_uuid()::text, '-', '');
    -- A `\u0000` escape is one whose backslash is not itself escaped: preceded by an even run of them.
    v_text := regexp_replace(v_text, '(?<!\\)((?:\\\\)*)\\u0000', '\1' || v_marker, 'g');
  end if;
  begin
    v_body := v_text::jsonb;
  exception
    when others then  -- valid JSON that jsonb cannot hold (a number beyond numeric's range)
      v_answer := private.vapi_refuse_unreadable(v_text::json,
        'The body could not be read: ' || regexp_replace(sqlerrm, '[\r\n]+', ' ', 'g'))::text;
  end;
  if v_answer is null then
    v_answer := private.vapi_answer(v_body, v_marker)::text;
  end if;
  if v_marker is null then
    return v_answer::json;
  end if;
  return replace(v_answer, v_marker, '\u0000')::json;
end
$_$;


--
-- Name: google_requests; Type: TABLE; Schema: private; Owner: -
--

CREATE TABLE private.google_requests (
    id bigint NOT NULL,
    budget_key text NOT NULL,
    reserved_at timestamp with time zone DEFAULT now() NOT NULL,
    usable_until timestamp with time zone NOT NULL,
    requests integer NOT NULL,
    CONSTRAINT google_requests_budget_key_check CHECK (((length(budget_key) >= 1) AND (length(budget_key) <= 400))),
    CONSTRAINT google_requests_check CHECK ((usable_until >= reserved_at)),
    CONSTRAINT google_requests_requests_check CHECK ((requests >= 0))
);


--
-- Name: TABLE google_requests; Type: COMMENT; Schema: private; Owner: -
--

COMMENT ON TABLE private.google_requests IS 'Google Calendar requests reserved by the daemon''s replicas (the shared budget); rows older than the window are pruned.';


--
-- Name: google_requests_id_seq; Type: SEQUENCE; Schema: private; Owner: -
--

ALTER TABLE private.google_requests ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME private.google_requests_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: google_throttles; Type: TABLE; Schema: private; Owner: -
--

CREATE TABLE private.google_throttles (
    budget_key text NOT NULL,
    throttled_until timestamp with time zone NOT NULL,
    hold_seconds double precision NOT NULL,
    reason text NOT NULL,
    CONSTRAINT google_throttles_budget_key_check CHECK (((length(budget_key) >= 1) AND (length(budget_key) <= 400))),
    CONSTRAINT google_throttles_hold_seconds_check CHECK (((hold_seconds >= (0)::double precision) AND (hold_seconds <= (86400)::double precision))),
    CONSTRAINT google_throttles_reason_check CHECK ((length(reason) <= 200))
);


--
-- Name: TABLE google_throttles; Type: COMMENT; Schema: private; Owner: -
--

COMMENT ON TABLE private.google_throttles IS 'Budget keys Google answered with a rate-limit error, held back for every replica until throttled_until.';


--
-- Name: calendar_busy; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.calendar_busy (
    clinic_id uuid NOT NULL,
    event_id text NOT NULL,
    starts_at timestamp with time zone NOT NULL,
    ends_at timestamp with time zone NOT NULL,
    calendar_id text NOT NULL,
    CONSTRAINT calendar_busy_check CHECK ((ends_at > starts_at)),
    CONSTRAINT calendar_busy_event_id_check CHECK (((length(event_id) >= 1) AND (length(event_id) <= 1024)))
);


--
-- Name: TABLE calendar_busy; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.calendar_busy IS 'Busy intervals from events in the clinic''s Google Calendar that are not our appointments.';


--
-- Name: calendar_channels; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.calendar_channels (
    id text NOT NULL,
    clinic_id uuid NOT NULL,
    calendar_id text NOT NULL,
    resource_id text,
    token_hash text NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    confirmed_at timestamp with time zone,
    last_message_number bigint,
    retired_at timestamp with time zone,
    retired_because text,
    stopped_at timestamp with time zone,
    CONSTRAINT calendar_channels_calendar_id_check CHECK (((length(calendar_id) >= 1) AND (length(calendar_id) <= 1024))),
    CONSTRAINT calendar_channels_id_check CHECK ((id ~ '^[A-Za-z0-9/_+=-]{1,64}$'::text)),
    CONSTRAINT calendar_channels_resource_id_check CHECK (((length(resource_id) >= 1) AND (length(resource_id) <= 1024))),
    CONSTRAINT calendar_channels_retired_because_check CHECK ((length(retired_because) <= 200)),
    CONSTRAINT calendar_channels_token_hash_check CHECK ((token_hash ~ '^[0-9a-f]{64}$'::text))
);


--
-- Name: TABLE calendar_channels; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.calendar_channels IS 'Google push-notification channels (events.watch) of the connected calendars; only a hash of each secret token. A channel is recorded before Google is asked for it (Google''s first message may arrive before its answer).';


--
-- Name: calendar_connections; Type: TABLE; Schema: public; Owner: -
--

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


--
-- Name: COLUMN calendar_connections.refresh_token_expires_at; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.calendar_connections.refresh_token_expires_at IS 'When Google said the refresh token dies (it says so for time-limited grants, e.g. a project in "Testing" gives 7 days); null when Google set no limit.';


--
-- Name: calendar_mirrors; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.calendar_mirrors (
    clinic_id uuid NOT NULL,
    sync_token text,
    last_synced_at timestamp with time zone,
    last_full_sync_at timestamp with time zone,
    last_error text,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    lease_owner text,
    lease_expires_at timestamp with time zone,
    listing_started_at timestamp with time zone,
    notified_at timestamp with time zone,
    channel_lease_owner text,
    channel_lease_expires_at timestamp with time zone,
    calendar_id text NOT NULL,
    CONSTRAINT calendar_mirrors_channel_lease_owner_check CHECK ((length(channel_lease_owner) <= 200)),
    CONSTRAINT calendar_mirrors_lease_owner_check CHECK ((length(lease_owner) <= 200)),
    CONSTRAINT calendar_mirrors_sync_token_check CHECK ((length(sync_token) <= 4096))
);


--
-- Name: COLUMN calendar_mirrors.notified_at; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.calendar_mirrors.notified_at IS 'When Google last notified a change of this calendar (push); a listing that began before it is listed again.';


--
-- Name: clinic_api_keys; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.clinic_api_keys (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    clinic_id uuid NOT NULL,
    key_hash bytea NOT NULL,
    key_prefix text NOT NULL,
    label text DEFAULT ''::text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    revoked_at timestamp with time zone,
    last_used_at timestamp with time zone,
    CONSTRAINT clinic_api_keys_key_hash_check CHECK ((length(key_hash) = 32)),
    CONSTRAINT clinic_api_keys_label_check CHECK ((length(label) <= 100))
);


--
-- Name: clinic_members; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.clinic_members (
    clinic_id uuid NOT NULL,
    user_id uuid NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: clinic_opening_hours; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.clinic_opening_hours (
    clinic_id uuid NOT NULL,
    weekday smallint NOT NULL,
    opens time without time zone NOT NULL,
    closes time without time zone NOT NULL,
    CONSTRAINT clinic_opening_hours_check CHECK ((closes > opens)),
    CONSTRAINT clinic_opening_hours_weekday_check CHECK (((weekday >= 1) AND (weekday <= 7)))
);


--
-- Name: contacts; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.contacts (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    clinic_id uuid NOT NULL,
    full_name text NOT NULL,
    phone text,
    email text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT contacts_email_check CHECK ((length(email) <= 320)),
    CONSTRAINT contacts_full_name_check CHECK (((length(full_name) >= 1) AND (length(full_name) <= 200))),
    CONSTRAINT contacts_phone_check CHECK ((phone ~ '^\+[1-9][0-9]{6,14}$'::text))
);


--
-- Name: practitioner_hours; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.practitioner_hours (
    clinic_id uuid NOT NULL,
    practitioner_id uuid NOT NULL,
    weekday smallint NOT NULL,
    opens time without time zone NOT NULL,
    closes time without time zone NOT NULL,
    CONSTRAINT practitioner_hours_check CHECK ((closes > opens)),
    CONSTRAINT practitioner_hours_weekday_check CHECK (((weekday >= 1) AND (weekday <= 7)))
);


--
-- Name: TABLE practitioner_hours; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.practitioner_hours IS 'A practitioner''s own hours, in the clinic''s time zone; a practitioner without any works the clinic''s opening hours.';


--
-- Name: vapi_tool_calls; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.vapi_tool_calls (
    clinic_id uuid NOT NULL,
    tool_call_id text NOT NULL,
    tool_name text NOT NULL,
    request_hash bytea NOT NULL,
    result text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT vapi_tool_calls_tool_call_id_check CHECK (((length(tool_call_id) >= 1) AND (length(tool_call_id) <= 200)))
);


--
-- Name: google_requests google_requests_pkey; Type: CONSTRAINT; Schema: private; Owner: -
--

ALTER TABLE ONLY private.google_requests
    ADD CONSTRAINT google_requests_pkey PRIMARY KEY (id);


--
-- Name: google_throttles google_throttles_pkey; Type: CONSTRAINT; Schema: private; Owner: -
--

ALTER TABLE ONLY private.google_throttles
    ADD CONSTRAINT google_throttles_pkey PRIMARY KEY (budget_key);


--
-- Name: appointments appointments_clinic_id_reference_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.appointments
    ADD CONSTRAINT appointments_clinic_id_reference_key UNIQUE (clinic_id, reference);


--
-- Name: appointments appointments_no_overlap; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.appointments
    ADD CONSTRAINT appointments_no_overlap EXCLUDE USING gist (clinic_id WITH =, COALESCE(practitioner_id, '00000000-0000-0000-0000-000000000000'::uuid) WITH =, tstzrange(starts_at, ends_at, '[)'::text) WITH &&) WHERE ((status = 'booked'::text));


--
-- Name: appointments appointments_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.appointments
    ADD CONSTRAINT appointments_pkey PRIMARY KEY (id);


--
-- Name: calendar_busy calendar_busy_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.calendar_busy
    ADD CONSTRAINT calendar_busy_pkey PRIMARY KEY (clinic_id, calendar_id, event_id);


--
-- Name: calendar_channels calendar_channels_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.calendar_channels
    ADD CONSTRAINT calendar_channels_pkey PRIMARY KEY (id);


--
-- Name: calendar_connections calendar_connections_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.calendar_connections
    ADD CONSTRAINT calendar_connections_pkey PRIMARY KEY (clinic_id);


--
-- Name: calendar_mirrors calendar_mirrors_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.calendar_mirrors
    ADD CONSTRAINT calendar_mirrors_pkey PRIMARY KEY (clinic_id, calendar_id);


--
-- Name: clinic_api_keys clinic_api_keys_key_hash_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.clinic_api_keys
    ADD CONSTRAINT clinic_api_keys_key_hash_key UNIQUE (key_hash);


--
-- Name: clinic_api_keys clinic_api_keys_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.clinic_api_keys
    ADD CONSTRAINT clinic_api_keys_pkey PRIMARY KEY (id);


--
-- Name: clinic_links clinic_links_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.clinic_links
    ADD CONSTRAINT clinic_links_pkey PRIMARY KEY (id);


--
-- Name: clinic_links clinic_links_secret_hash_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.clinic_links
    ADD CONSTRAINT clinic_links_secret_hash_key UNIQUE (secret_hash);


--
-- Name: clinic_links clinic_links_state_hash_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.clinic_links
    ADD CONSTRAINT clinic_links_state_hash_key UNIQUE (state_hash);


--
-- Name: clinic_members clinic_members_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.clinic_members
    ADD CONSTRAINT clinic_members_pkey PRIMARY KEY (clinic_id, user_id);


--
-- Name: clinic_opening_hours clinic_opening_hours_clinic_id_weekday_tsrange_excl; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.clinic_opening_hours
    ADD CONSTRAINT clinic_opening_hours_clinic_id_weekday_tsrange_excl EXCLUDE USING gist (clinic_id WITH =, weekday WITH =, tsrange(('2000-01-01'::date + opens), ('2000-01-01'::date + closes)) WITH &&);


--
-- Name: clinic_opening_hours clinic_opening_hours_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.clinic_opening_hours
    ADD CONSTRAINT clinic_opening_hours_pkey PRIMARY KEY (clinic_id, weekday, opens);


--
-- Name: clinic_services clinic_services_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.clinic_services
    ADD CONSTRAINT clinic_services_pkey PRIMARY KEY (clinic_id, name);


--
-- Name: clinics clinics_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.clinics
    ADD CONSTRAINT clinics_pkey PRIMARY KEY (id);


--
-- Name: contacts contacts_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.contacts
    ADD CONSTRAINT contacts_pkey PRIMARY KEY (id);


--
-- Name: practitioner_hours practitioner_hours_practitioner_id_weekday_tsrange_excl; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.practitioner_hours
    ADD CONSTRAINT practitioner_hours_practitioner_id_weekday_tsrange_excl EXCLUDE USING gist (practitioner_id WITH =, weekday WITH =, tsrange(('2000-01-01'::date + opens), ('2000-01-01'::date + closes)) WITH &&);


--
-- Name: practitioners practitioners_clinic_id_id_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.practitioners
    ADD CONSTRAINT practitioners_clinic_id_id_key UNIQUE (clinic_id, id);


--
-- Name: practitioners practitioners_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.practitioners
    ADD CONSTRAINT practitioners_pkey PRIMARY KEY (id);


--
-- Name: vapi_tool_calls vapi_tool_calls_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.vapi_tool_calls
    ADD CONSTRAINT vapi_tool_calls_pkey PRIMARY KEY (clinic_id, tool_call_id);


--
-- Name: google_requests_window; Type: INDEX; Schema: private; Owner: -
--

CREATE INDEX google_requests_window ON private.google_requests USING btree (usable_until) INCLUDE (budget_key, requests);


--
-- Name: appointments_booked_span; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX appointments_booked_span ON public.appointments USING gist (clinic_id, starts_at, ends_at) WHERE (status = 'booked'::text);


--
-- Name: appointments_clinic_phone; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX appointments_clinic_phone ON public.appointments USING btree (clinic_id, ((patient ->> 'phone'::text))) WHERE (status = 'booked'::text);


--
-- Name: appointments_clinic_start; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX appointments_clinic_start ON public.appointments USING btree (clinic_id, starts_at);


--
-- Name: appointments_due_by_clinic; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX appointments_due_by_clinic ON public.appointments USING btree (clinic_id, next_attempt_at, id) WHERE (sync_state = 'pending'::text);


--
-- Name: appointments_lease_expiry; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX appointments_lease_expiry ON public.appointments USING btree (lease_expires_at) WHERE (sync_state = 'in_flight'::text);


--
-- Name: appointments_practitioner_start; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX appointments_practitioner_start ON public.appointments USING btree (practitioner_id, starts_at) WHERE ((practitioner_id IS NOT NULL) AND (status = 'booked'::text));


--
-- Name: appointments_sync_queue; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX appointments_sync_queue ON public.appointments USING btree (next_attempt_at) WHERE (sync_state = 'pending'::text);


--
-- Name: calendar_busy_during; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX calendar_busy_during ON public.calendar_busy USING gist (clinic_id, calendar_id, tstzrange(starts_at, ends_at, '[)'::text));


--
-- Name: calendar_busy_span; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX calendar_busy_span ON public.calendar_busy USING gist (clinic_id, starts_at, ends_at);


--
-- Name: calendar_channels_live_calendar; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX calendar_channels_live_calendar ON public.calendar_channels USING btree (clinic_id, calendar_id) WHERE (retired_at IS NULL);


--
-- Name: clinic_api_keys_clinic; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX clinic_api_keys_clinic ON public.clinic_api_keys USING btree (clinic_id);


--
-- Name: clinic_links_clinic; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX clinic_links_clinic ON public.clinic_links USING btree (clinic_id, created_at DESC);


--
-- Name: clinic_members_user; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX clinic_members_user ON public.clinic_members USING btree (user_id);


--
-- Name: clinic_services_name_ci; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX clinic_services_name_ci ON public.clinic_services USING btree (clinic_id, lower(name));


--
-- Name: clinic_services_one_default; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX clinic_services_one_default ON public.clinic_services USING btree (clinic_id) WHERE is_default;


--
-- Name: contacts_clinic; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX contacts_clinic ON public.contacts USING btree (clinic_id);


--
-- Name: practitioners_name_ci; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX practitioners_name_ci ON public.practitioners USING btree (clinic_id, lower(btrim(name)));


--
-- Name: vapi_tool_calls_created; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX vapi_tool_calls_created ON public.vapi_tool_calls USING btree (created_at);


--
-- Name: appointments appointments_broadcast_calendar_sync; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER appointments_broadcast_calendar_sync AFTER INSERT OR UPDATE ON public.appointments FOR EACH ROW WHEN (((new.sync_state = 'pending'::text) AND (new.next_attempt_at <= now()))) EXECUTE FUNCTION private.broadcast_calendar_sync();


--
-- Name: appointments appointments_notify_calendar_sync; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER appointments_notify_calendar_sync AFTER INSERT OR UPDATE ON public.appointments FOR EACH ROW WHEN (((new.sync_state = 'pending'::text) AND (new.next_attempt_at <= now()))) EXECUTE FUNCTION private.notify_calendar_sync();


--
-- Name: appointments appointments_start_pending; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER appointments_start_pending BEFORE INSERT ON public.appointments FOR EACH ROW EXECUTE FUNCTION private.appointments_start_pending();


--
-- Name: appointments appointments_track_changes; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER appointments_track_changes BEFORE UPDATE ON public.appointments FOR EACH ROW EXECUTE FUNCTION private.appointments_track_changes();


--
-- Name: calendar_connections calendar_connection_changed; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER calendar_connection_changed AFTER DELETE OR UPDATE OF status, refresh_token_encrypted, google_account ON public.calendar_connections FOR EACH ROW EXECUTE FUNCTION private.calendar_connection_changed();


--
-- Name: calendar_connections calendar_connections_status_changed; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER calendar_connections_status_changed AFTER INSERT OR UPDATE OF status ON public.calendar_connections FOR EACH ROW WHEN ((new.status IS NOT NULL)) EXECUTE FUNCTION private.calendar_connections_status_changed();


--
-- Name: calendar_connections calendar_connections_touch; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER calendar_connections_touch BEFORE UPDATE ON public.calendar_connections FOR EACH ROW EXECUTE FUNCTION private.calendar_connections_touch();


--
-- Name: appointments appointments_clinic_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.appointments
    ADD CONSTRAINT appointments_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;


--
-- Name: appointments appointments_contact_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.appointments
    ADD CONSTRAINT appointments_contact_id_fkey FOREIGN KEY (contact_id) REFERENCES public.contacts(id) ON DELETE SET NULL;


--
-- Name: appointments appointments_practitioner_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.appointments
    ADD CONSTRAINT appointments_practitioner_fkey FOREIGN KEY (clinic_id, practitioner_id) REFERENCES public.practitioners(clinic_id, id);


--
-- Name: calendar_busy calendar_busy_clinic_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.calendar_busy
    ADD CONSTRAINT calendar_busy_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;


--
-- Name: calendar_channels calendar_channels_clinic_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.calendar_channels
    ADD CONSTRAINT calendar_channels_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;


--
-- Name: calendar_connections calendar_connections_clinic_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.calendar_connections
    ADD CONSTRAINT calendar_connections_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;


--
-- Name: calendar_mirrors calendar_mirrors_clinic_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.calendar_mirrors
    ADD CONSTRAINT calendar_mirrors_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;


--
-- Name: clinic_api_keys clinic_api_keys_clinic_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.clinic_api_keys
    ADD CONSTRAINT clinic_api_keys_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;


--
-- Name: clinic_links clinic_links_clinic_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.clinic_links
    ADD CONSTRAINT clinic_links_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;


--
-- Name: clinic_members clinic_members_clinic_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.clinic_members
    ADD CONSTRAINT clinic_members_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;


--
-- Name: clinic_members clinic_members_user_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.clinic_members
    ADD CONSTRAINT clinic_members_user_id_fkey FOREIGN KEY (user_id) REFERENCES auth.users(id) ON DELETE CASCADE;


--
-- Name: clinic_opening_hours clinic_opening_hours_clinic_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.clinic_opening_hours
    ADD CONSTRAINT clinic_opening_hours_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;


--
-- Name: clinic_services clinic_services_clinic_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.clinic_services
    ADD CONSTRAINT clinic_services_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;


--
-- Name: contacts contacts_clinic_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.contacts
    ADD CONSTRAINT contacts_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;


--
-- Name: practitioner_hours practitioner_hours_clinic_id_practitioner_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.practitioner_hours
    ADD CONSTRAINT practitioner_hours_clinic_id_practitioner_id_fkey FOREIGN KEY (clinic_id, practitioner_id) REFERENCES public.practitioners(clinic_id, id) ON DELETE CASCADE;


--
-- Name: practitioners practitioners_clinic_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.practitioners
    ADD CONSTRAINT practitioners_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;


--
-- Name: vapi_tool_calls vapi_tool_calls_clinic_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.vapi_tool_calls
    ADD CONSTRAINT vapi_tool_calls_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;


--
-- Name: appointments; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.appointments ENABLE ROW LEVEL SECURITY;

--
-- Name: calendar_busy; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.calendar_busy ENABLE ROW LEVEL SECURITY;

--
-- Name: calendar_channels; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.calendar_channels ENABLE ROW LEVEL SECURITY;

--
-- Name: calendar_connections; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.calendar_connections ENABLE ROW LEVEL SECURITY;

--
-- Name: calendar_mirrors; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.calendar_mirrors ENABLE ROW LEVEL SECURITY;

--
-- Name: clinic_api_keys; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.clinic_api_keys ENABLE ROW LEVEL SECURITY;

--
-- Name: clinic_links; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.clinic_links ENABLE ROW LEVEL SECURITY;

--
-- Name: clinic_members; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.clinic_members ENABLE ROW LEVEL SECURITY;

--
-- Name: clinic_opening_hours; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.clinic_opening_hours ENABLE ROW LEVEL SECURITY;

--
-- Name: clinic_services; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.clinic_services ENABLE ROW LEVEL SECURITY;

--
-- Name: clinics; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.clinics ENABLE ROW LEVEL SECURITY;

--
-- Name: contacts; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.contacts ENABLE ROW LEVEL SECURITY;

--
-- Name: appointments members_read; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY members_read ON public.appointments FOR SELECT TO authenticated USING ((clinic_id IN ( SELECT clinic_members.clinic_id
   FROM public.clinic_members)));


--
-- Name: calendar_busy members_read; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY members_read ON public.calendar_busy FOR SELECT TO authenticated USING ((clinic_id IN ( SELECT clinic_members.clinic_id
   FROM public.clinic_members)));


--
-- Name: calendar_connections members_read; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY members_read ON public.calendar_connections FOR SELECT TO authenticated USING ((clinic_id IN ( SELECT clinic_members.clinic_id
   FROM public.clinic_members)));


--
-- Name: calendar_mirrors members_read; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY members_read ON public.calendar_mirrors FOR SELECT TO authenticated USING ((clinic_id IN ( SELECT clinic_members.clinic_id
   FROM public.clinic_members)));


--
-- Name: clinic_opening_hours members_read; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY members_read ON public.clinic_opening_hours FOR SELECT TO authenticated USING ((clinic_id IN ( SELECT clinic_members.clinic_id
   FROM public.clinic_members)));


--
-- Name: clinic_services members_read; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY members_read ON public.clinic_services FOR SELECT TO authenticated USING ((clinic_id IN ( SELECT clinic_members.clinic_id
   FROM public.clinic_members)));


--
-- Name: clinics members_read; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY members_read ON public.clinics FOR SELECT TO authenticated USING ((id IN ( SELECT clinic_members.clinic_id
   FROM public.clinic_members)));


--
-- Name: contacts members_read; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY members_read ON public.contacts FOR SELECT TO authenticated USING ((clinic_id IN ( SELECT clinic_members.clinic_id
   FROM public.clinic_members)));


--
-- Name: practitioner_hours members_read; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY members_read ON public.practitioner_hours FOR SELECT TO authenticated USING ((clinic_id IN ( SELECT clinic_members.clinic_id
   FROM public.clinic_members)));


--
-- Name: practitioners members_read; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY members_read ON public.practitioners FOR SELECT TO authenticated USING ((clinic_id IN ( SELECT clinic_members.clinic_id
   FROM public.clinic_members)));


--
-- Name: appointments own_clinic; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY own_clinic ON public.appointments TO vapi_clinic USING ((clinic_id = ( SELECT private.request_clinic_id() AS request_clinic_id))) WITH CHECK ((clinic_id = ( SELECT private.request_clinic_id() AS request_clinic_id)));


--
-- Name: calendar_busy own_clinic; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY own_clinic ON public.calendar_busy FOR SELECT TO vapi_clinic USING ((clinic_id = ( SELECT private.request_clinic_id() AS request_clinic_id)));


--
-- Name: calendar_mirrors own_clinic; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY own_clinic ON public.calendar_mirrors FOR SELECT TO vapi_clinic USING ((clinic_id = ( SELECT private.request_clinic_id() AS request_clinic_id)));


--
-- Name: clinic_opening_hours own_clinic; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY own_clinic ON public.clinic_opening_hours FOR SELECT TO vapi_clinic USING ((clinic_id = ( SELECT private.request_clinic_id() AS request_clinic_id)));


--
-- Name: clinic_services own_clinic; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY own_clinic ON public.clinic_services FOR SELECT TO vapi_clinic USING ((clinic_id = ( SELECT private.request_clinic_id() AS request_clinic_id)));


--
-- Name: clinics own_clinic; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY own_clinic ON public.clinics FOR SELECT TO vapi_clinic USING ((id = ( SELECT private.request_clinic_id() AS request_clinic_id)));


--
-- Name: practitioner_hours own_clinic; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY own_clinic ON public.practitioner_hours FOR SELECT TO vapi_clinic USING ((clinic_id = ( SELECT private.request_clinic_id() AS request_clinic_id)));


--
-- Name: practitioners own_clinic; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY own_clinic ON public.practitioners FOR SELECT TO vapi_clinic USING ((clinic_id = ( SELECT private.request_clinic_id() AS request_clinic_id)));


--
-- Name: vapi_tool_calls own_clinic; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY own_clinic ON public.vapi_tool_calls TO vapi_clinic USING ((clinic_id = ( SELECT private.request_clinic_id() AS request_clinic_id))) WITH CHECK ((clinic_id = ( SELECT private.request_clinic_id() AS request_clinic_id)));


--
-- Name: clinic_members own_memberships; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY own_memberships ON public.clinic_members FOR SELECT TO authenticated USING ((user_id = ( SELECT auth.uid() AS uid)));


--
-- Name: practitioner_hours; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.practitioner_hours ENABLE ROW LEVEL SECURITY;

--
-- Name: practitioners; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.practitioners ENABLE ROW LEVEL SECURITY;

--
-- Name: clinic_api_keys resolve_keys; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY resolve_keys ON public.clinic_api_keys FOR SELECT TO clinic_key_resolver USING (true);


--
-- Name: clinic_api_keys touch_keys; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY touch_keys ON public.clinic_api_keys FOR UPDATE TO clinic_key_resolver USING (true);


--
-- Name: vapi_tool_calls; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.vapi_tool_calls ENABLE ROW LEVEL SECURITY;

--
-- Name: supabase_realtime; Type: PUBLICATION; Schema: -; Owner: -
--

CREATE PUBLICATION supabase_realtime WITH (publish = 'insert, update, delete, truncate');


--
-- Name: SCHEMA private; Type: ACL; Schema: -; Owner: -
--

GRANT USAGE ON SCHEMA private TO vapi_clinic;
GRANT USAGE ON SCHEMA private TO clinic_key_resolver;
GRANT USAGE ON SCHEMA private TO service_role;


--
-- Name: SCHEMA public; Type: ACL; Schema: -; Owner: -
--

GRANT USAGE ON SCHEMA public TO anon;
GRANT USAGE ON SCHEMA public TO authenticated;
GRANT USAGE ON SCHEMA public TO service_role;


--
-- Name: FUNCTION apply_appointment_event(p_clinic_id uuid, p_event jsonb, p_zone text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.apply_appointment_event(p_clinic_id uuid, p_event jsonb, p_zone text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.apply_appointment_event(p_clinic_id uuid, p_event jsonb, p_zone text) TO service_role;


--
-- Name: FUNCTION appointments_start_pending(); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.appointments_start_pending() FROM PUBLIC;
GRANT ALL ON FUNCTION private.appointments_start_pending() TO vapi_clinic;


--
-- Name: FUNCTION appointments_track_changes(); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.appointments_track_changes() FROM PUBLIC;
GRANT ALL ON FUNCTION private.appointments_track_changes() TO vapi_clinic;


--
-- Name: FUNCTION authenticate_request(); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.authenticate_request() FROM PUBLIC;
GRANT ALL ON FUNCTION private.authenticate_request() TO vapi_clinic;


--
-- Name: FUNCTION begin_budget_change(p_returns jsonb); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.begin_budget_change(p_returns jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION private.begin_budget_change(p_returns jsonb) TO service_role;


--
-- Name: FUNCTION broadcast_calendar_sync(); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.broadcast_calendar_sync() FROM PUBLIC;


--
-- Name: FUNCTION busy_message(); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.busy_message() FROM PUBLIC;
GRANT ALL ON FUNCTION private.busy_message() TO vapi_clinic;


--
-- Name: FUNCTION calendar_connection_changed(); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.calendar_connection_changed() FROM PUBLIC;


--
-- Name: FUNCTION calendar_connections_status_changed(); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.calendar_connections_status_changed() FROM PUBLIC;


--
-- Name: FUNCTION calendar_connections_touch(); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.calendar_connections_touch() FROM PUBLIC;


--
-- Name: FUNCTION check_arg_names(p_args jsonb, p_allowed text[]); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.check_arg_names(p_args jsonb, p_allowed text[]) FROM PUBLIC;
GRANT ALL ON FUNCTION private.check_arg_names(p_args jsonb, p_allowed text[]) TO vapi_clinic;


--
-- Name: FUNCTION is_valid_time_zone(zone text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.is_valid_time_zone(zone text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.is_valid_time_zone(zone text) TO service_role;
GRANT ALL ON FUNCTION private.is_valid_time_zone(zone text) TO vapi_clinic;


--
-- Name: TABLE clinics; Type: ACL; Schema: public; Owner: -
--

GRANT ALL ON TABLE public.clinics TO service_role;
GRANT SELECT ON TABLE public.clinics TO authenticated;
GRANT SELECT ON TABLE public.clinics TO vapi_clinic;


--
-- Name: FUNCTION check_bookable(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.check_bookable(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION private.check_bookable(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid) TO vapi_clinic;
GRANT ALL ON FUNCTION private.check_bookable(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid) TO service_role;


--
-- Name: FUNCTION check_budget_arguments(p_account_limit integer, p_project_limit integer, p_hold_seconds double precision); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.check_budget_arguments(p_account_limit integer, p_project_limit integer, p_hold_seconds double precision) FROM PUBLIC;
GRANT ALL ON FUNCTION private.check_budget_arguments(p_account_limit integer, p_project_limit integer, p_hold_seconds double precision) TO service_role;


--
-- Name: FUNCTION check_calendar_id(p_calendar_id text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.check_calendar_id(p_calendar_id text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.check_calendar_id(p_calendar_id text) TO service_role;


--
-- Name: FUNCTION check_diary(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.check_diary(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION private.check_diary(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) TO vapi_clinic;
GRANT ALL ON FUNCTION private.check_diary(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) TO service_role;


--
-- Name: FUNCTION check_practitioner_name(p_clinic_id uuid, p_name text, p_except uuid); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.check_practitioner_name(p_clinic_id uuid, p_name text, p_except uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION private.check_practitioner_name(p_clinic_id uuid, p_name text, p_except uuid) TO service_role;


--
-- Name: FUNCTION choose_practitioner(p_clinic public.clinics, p_service text, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.choose_practitioner(p_clinic public.clinics, p_service text, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION private.choose_practitioner(p_clinic public.clinics, p_service text, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) TO vapi_clinic;
GRANT ALL ON FUNCTION private.choose_practitioner(p_clinic public.clinics, p_service text, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) TO service_role;


--
-- Name: FUNCTION clinic_calendars(p_clinic_id uuid); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.clinic_calendars(p_clinic_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION private.clinic_calendars(p_clinic_id uuid) TO service_role;


--
-- Name: FUNCTION clinic_has_practitioners(p_clinic_id uuid); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.clinic_has_practitioners(p_clinic_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION private.clinic_has_practitioners(p_clinic_id uuid) TO vapi_clinic;
GRANT ALL ON FUNCTION private.clinic_has_practitioners(p_clinic_id uuid) TO service_role;


--
-- Name: FUNCTION clinic_link_hash(p_secret text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.clinic_link_hash(p_secret text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.clinic_link_hash(p_secret text) TO service_role;


--
-- Name: TABLE clinic_links; Type: ACL; Schema: public; Owner: -
--

GRANT ALL ON TABLE public.clinic_links TO service_role;


--
-- Name: FUNCTION clinic_link_state(p_link public.clinic_links); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.clinic_link_state(p_link public.clinic_links) FROM PUBLIC;
GRANT ALL ON FUNCTION private.clinic_link_state(p_link public.clinic_links) TO service_role;


--
-- Name: FUNCTION diary_busy(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.diary_busy(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone) FROM PUBLIC;
GRANT ALL ON FUNCTION private.diary_busy(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone) TO vapi_clinic;
GRANT ALL ON FUNCTION private.diary_busy(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone) TO service_role;


--
-- Name: FUNCTION diary_for_booking(p_clinic public.clinics, p_named uuid, p_anyone boolean, p_service text, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.diary_for_booking(p_clinic public.clinics, p_named uuid, p_anyone boolean, p_service text, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION private.diary_for_booking(p_clinic public.clinics, p_named uuid, p_anyone boolean, p_service text, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) TO vapi_clinic;
GRANT ALL ON FUNCTION private.diary_for_booking(p_clinic public.clinics, p_named uuid, p_anyone boolean, p_service text, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) TO service_role;


--
-- Name: FUNCTION diary_free_slots(p_clinic public.clinics, p_day date, p_minutes integer, p_diaries uuid[], p_ignore uuid); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.diary_free_slots(p_clinic public.clinics, p_day date, p_minutes integer, p_diaries uuid[], p_ignore uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION private.diary_free_slots(p_clinic public.clinics, p_day date, p_minutes integer, p_diaries uuid[], p_ignore uuid) TO vapi_clinic;
GRANT ALL ON FUNCTION private.diary_free_slots(p_clinic public.clinics, p_day date, p_minutes integer, p_diaries uuid[], p_ignore uuid) TO service_role;


--
-- Name: FUNCTION diary_hours(p_clinic_id uuid, p_practitioner uuid, p_weekday integer); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.diary_hours(p_clinic_id uuid, p_practitioner uuid, p_weekday integer) FROM PUBLIC;
GRANT ALL ON FUNCTION private.diary_hours(p_clinic_id uuid, p_practitioner uuid, p_weekday integer) TO vapi_clinic;
GRANT ALL ON FUNCTION private.diary_hours(p_clinic_id uuid, p_practitioner uuid, p_weekday integer) TO service_role;


--
-- Name: FUNCTION diary_hours_text(p_clinic_id uuid, p_practitioner uuid, p_weekday integer); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.diary_hours_text(p_clinic_id uuid, p_practitioner uuid, p_weekday integer) FROM PUBLIC;
GRANT ALL ON FUNCTION private.diary_hours_text(p_clinic_id uuid, p_practitioner uuid, p_weekday integer) TO vapi_clinic;
GRANT ALL ON FUNCTION private.diary_hours_text(p_clinic_id uuid, p_practitioner uuid, p_weekday integer) TO service_role;


--
-- Name: FUNCTION diary_mirror_stale(p_clinic public.clinics, p_practitioner uuid); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.diary_mirror_stale(p_clinic public.clinics, p_practitioner uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION private.diary_mirror_stale(p_clinic public.clinics, p_practitioner uuid) TO vapi_clinic;
GRANT ALL ON FUNCTION private.diary_mirror_stale(p_clinic public.clinics, p_practitioner uuid) TO service_role;


--
-- Name: FUNCTION diary_taken(p_clinic_id uuid, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.diary_taken(p_clinic_id uuid, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION private.diary_taken(p_clinic_id uuid, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid) TO vapi_clinic;
GRANT ALL ON FUNCTION private.diary_taken(p_clinic_id uuid, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid) TO service_role;


--
-- Name: FUNCTION ensure_mirror_rows(p_clinic_id uuid); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.ensure_mirror_rows(p_clinic_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION private.ensure_mirror_rows(p_clinic_id uuid) TO service_role;


--
-- Name: FUNCTION event_instant(p_when jsonb, p_zone text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.event_instant(p_when jsonb, p_zone text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.event_instant(p_when jsonb, p_zone text) TO service_role;


--
-- Name: TABLE appointments; Type: ACL; Schema: public; Owner: -
--

GRANT ALL ON TABLE public.appointments TO service_role;
GRANT SELECT ON TABLE public.appointments TO authenticated;
GRANT SELECT,INSERT,UPDATE ON TABLE public.appointments TO vapi_clinic;


--
-- Name: FUNCTION find_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb, p_start_text text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.find_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb, p_start_text text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.find_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb, p_start_text text) TO vapi_clinic;


--
-- Name: FUNCTION google_budget_key(p_clinic_id uuid, p_google_account text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.google_budget_key(p_clinic_id uuid, p_google_account text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.google_budget_key(p_clinic_id uuid, p_google_account text) TO service_role;


--
-- Name: FUNCTION google_budget_key_of(p_clinic_id uuid); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.google_budget_key_of(p_clinic_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION private.google_budget_key_of(p_clinic_id uuid) TO service_role;


--
-- Name: FUNCTION google_budget_wait(p_budget_key text, p_account_limit integer, p_project_limit integer); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.google_budget_wait(p_budget_key text, p_account_limit integer, p_project_limit integer) FROM PUBLIC;
GRANT ALL ON FUNCTION private.google_budget_wait(p_budget_key text, p_account_limit integer, p_project_limit integer) TO service_role;


--
-- Name: FUNCTION google_requests_in_window(); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.google_requests_in_window() FROM PUBLIC;
GRANT ALL ON FUNCTION private.google_requests_in_window() TO service_role;


--
-- Name: FUNCTION local_clock(p_instant timestamp with time zone, p_zone text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.local_clock(p_instant timestamp with time zone, p_zone text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.local_clock(p_instant timestamp with time zone, p_zone text) TO vapi_clinic;
GRANT ALL ON FUNCTION private.local_clock(p_instant timestamp with time zone, p_zone text) TO service_role;


--
-- Name: FUNCTION local_day(p_instant timestamp with time zone, p_zone text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.local_day(p_instant timestamp with time zone, p_zone text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.local_day(p_instant timestamp with time zone, p_zone text) TO vapi_clinic;
GRANT ALL ON FUNCTION private.local_day(p_instant timestamp with time zone, p_zone text) TO service_role;


--
-- Name: FUNCTION local_to_instant(p_local timestamp without time zone, p_zone text, OUT instant timestamp with time zone, OUT ambiguous boolean); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.local_to_instant(p_local timestamp without time zone, p_zone text, OUT instant timestamp with time zone, OUT ambiguous boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION private.local_to_instant(p_local timestamp without time zone, p_zone text, OUT instant timestamp with time zone, OUT ambiguous boolean) TO vapi_clinic;
GRANT ALL ON FUNCTION private.local_to_instant(p_local timestamp without time zone, p_zone text, OUT instant timestamp with time zone, OUT ambiguous boolean) TO service_role;


--
-- Name: FUNCTION lock_diary(p_clinic_id uuid); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.lock_diary(p_clinic_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION private.lock_diary(p_clinic_id uuid) TO vapi_clinic;
GRANT ALL ON FUNCTION private.lock_diary(p_clinic_id uuid) TO service_role;


--
-- Name: FUNCTION mark_synced_from_calendar(p_appointment_id uuid); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.mark_synced_from_calendar(p_appointment_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION private.mark_synced_from_calendar(p_appointment_id uuid) TO service_role;


--
-- Name: FUNCTION means_anyone(p_name text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.means_anyone(p_name text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.means_anyone(p_name text) TO vapi_clinic;
GRANT ALL ON FUNCTION private.means_anyone(p_name text) TO service_role;


--
-- Name: FUNCTION mirror_notified_since_listing(p_clinic_id uuid, p_calendar_id text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.mirror_notified_since_listing(p_clinic_id uuid, p_calendar_id text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.mirror_notified_since_listing(p_clinic_id uuid, p_calendar_id text) TO service_role;


--
-- Name: FUNCTION name_words(p_name text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.name_words(p_name text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.name_words(p_name text) TO vapi_clinic;
GRANT ALL ON FUNCTION private.name_words(p_name text) TO service_role;


--
-- Name: FUNCTION nearest_free_times(p_clinic public.clinics, p_wanted timestamp with time zone, p_minutes integer, p_ignore uuid, p_diaries uuid[]); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.nearest_free_times(p_clinic public.clinics, p_wanted timestamp with time zone, p_minutes integer, p_ignore uuid, p_diaries uuid[]) FROM PUBLIC;
GRANT ALL ON FUNCTION private.nearest_free_times(p_clinic public.clinics, p_wanted timestamp with time zone, p_minutes integer, p_ignore uuid, p_diaries uuid[]) TO vapi_clinic;
GRANT ALL ON FUNCTION private.nearest_free_times(p_clinic public.clinics, p_wanted timestamp with time zone, p_minutes integer, p_ignore uuid, p_diaries uuid[]) TO service_role;


--
-- Name: FUNCTION new_reference(p_clinic_id uuid); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.new_reference(p_clinic_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION private.new_reference(p_clinic_id uuid) TO vapi_clinic;


--
-- Name: FUNCTION normalise_phone(p_phone text, p_country_code text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.normalise_phone(p_phone text, p_country_code text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.normalise_phone(p_phone text, p_country_code text) TO vapi_clinic;


--
-- Name: FUNCTION notify_calendar_sync(); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.notify_calendar_sync() FROM PUBLIC;


--
-- Name: FUNCTION offering_practitioners(p_clinic public.clinics, p_service text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.offering_practitioners(p_clinic public.clinics, p_service text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.offering_practitioners(p_clinic public.clinics, p_service text) TO vapi_clinic;
GRANT ALL ON FUNCTION private.offering_practitioners(p_clinic public.clinics, p_service text) TO service_role;


--
-- Name: FUNCTION opening_hours_text(p_clinic_id uuid, p_weekday integer); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.opening_hours_text(p_clinic_id uuid, p_weekday integer) FROM PUBLIC;
GRANT ALL ON FUNCTION private.opening_hours_text(p_clinic_id uuid, p_weekday integer) TO vapi_clinic;


--
-- Name: FUNCTION parse_local_date(p_text text, p_arg text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.parse_local_date(p_text text, p_arg text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.parse_local_date(p_text text, p_arg text) TO vapi_clinic;


--
-- Name: FUNCTION parse_local_start(p_text text, p_zone text, p_arg text, OUT instant timestamp with time zone, OUT ambiguous boolean); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.parse_local_start(p_text text, p_zone text, p_arg text, OUT instant timestamp with time zone, OUT ambiguous boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION private.parse_local_start(p_text text, p_zone text, p_arg text, OUT instant timestamp with time zone, OUT ambiguous boolean) TO vapi_clinic;


--
-- Name: FUNCTION parse_opening_hours(p_hours jsonb); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.parse_opening_hours(p_hours jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION private.parse_opening_hours(p_hours jsonb) TO service_role;


--
-- Name: FUNCTION patient_phone(p_clinic public.clinics, p_args jsonb, p_ctx jsonb); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.patient_phone(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION private.patient_phone(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) TO vapi_clinic;


--
-- Name: FUNCTION pick_practitioner(p_clinic public.clinics, p_name text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.pick_practitioner(p_clinic public.clinics, p_name text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.pick_practitioner(p_clinic public.clinics, p_name text) TO vapi_clinic;
GRANT ALL ON FUNCTION private.pick_practitioner(p_clinic public.clinics, p_name text) TO service_role;


--
-- Name: TABLE clinic_services; Type: ACL; Schema: public; Owner: -
--

GRANT ALL ON TABLE public.clinic_services TO service_role;
GRANT SELECT ON TABLE public.clinic_services TO authenticated;
GRANT SELECT ON TABLE public.clinic_services TO vapi_clinic;


--
-- Name: FUNCTION pick_service(p_clinic_id uuid, p_name text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.pick_service(p_clinic_id uuid, p_name text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.pick_service(p_clinic_id uuid, p_name text) TO vapi_clinic;


--
-- Name: FUNCTION practitioner_name(p_practitioner uuid); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.practitioner_name(p_practitioner uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION private.practitioner_name(p_practitioner uuid) TO vapi_clinic;
GRANT ALL ON FUNCTION private.practitioner_name(p_practitioner uuid) TO service_role;


--
-- Name: FUNCTION practitioner_roster(p_clinic_id uuid); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.practitioner_roster(p_clinic_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION private.practitioner_roster(p_clinic_id uuid) TO vapi_clinic;
GRANT ALL ON FUNCTION private.practitioner_roster(p_clinic_id uuid) TO service_role;


--
-- Name: FUNCTION practitioner_services(p_clinic_id uuid, p_services jsonb); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.practitioner_services(p_clinic_id uuid, p_services jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION private.practitioner_services(p_clinic_id uuid, p_services jsonb) TO service_role;


--
-- Name: FUNCTION printable(p_text text, p_max integer); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.printable(p_text text, p_max integer) FROM PUBLIC;
GRANT ALL ON FUNCTION private.printable(p_text text, p_max integer) TO vapi_clinic;
GRANT ALL ON FUNCTION private.printable(p_text text, p_max integer) TO service_role;


--
-- Name: FUNCTION refuse(p_message text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.refuse(p_message text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.refuse(p_message text) TO vapi_clinic;


--
-- Name: FUNCTION refuse_if_closed(p_clinic_id uuid, p_day date); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.refuse_if_closed(p_clinic_id uuid, p_day date) FROM PUBLIC;
GRANT ALL ON FUNCTION private.refuse_if_closed(p_clinic_id uuid, p_day date) TO vapi_clinic;


--
-- Name: FUNCTION refuse_if_diary_stale(p_clinic public.clinics, p_practitioner uuid); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.refuse_if_diary_stale(p_clinic public.clinics, p_practitioner uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION private.refuse_if_diary_stale(p_clinic public.clinics, p_practitioner uuid) TO vapi_clinic;
GRANT ALL ON FUNCTION private.refuse_if_diary_stale(p_clinic public.clinics, p_practitioner uuid) TO service_role;


--
-- Name: FUNCTION refuse_if_mirror_stale(p_clinic public.clinics); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.refuse_if_mirror_stale(p_clinic public.clinics) FROM PUBLIC;
GRANT ALL ON FUNCTION private.refuse_if_mirror_stale(p_clinic public.clinics) TO vapi_clinic;


--
-- Name: FUNCTION refuse_if_taken(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.refuse_if_taken(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION private.refuse_if_taken(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid) TO vapi_clinic;
GRANT ALL ON FUNCTION private.refuse_if_taken(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid) TO service_role;


--
-- Name: FUNCTION refuse_off_grid(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.refuse_off_grid(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION private.refuse_off_grid(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) TO vapi_clinic;
GRANT ALL ON FUNCTION private.refuse_off_grid(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) TO service_role;


--
-- Name: FUNCTION refuse_unless_offered(p_practitioner uuid, p_service text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.refuse_unless_offered(p_practitioner uuid, p_service text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.refuse_unless_offered(p_practitioner uuid, p_service text) TO vapi_clinic;
GRANT ALL ON FUNCTION private.refuse_unless_offered(p_practitioner uuid, p_service text) TO service_role;


--
-- Name: FUNCTION request_clinic_id(); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.request_clinic_id() FROM PUBLIC;
GRANT ALL ON FUNCTION private.request_clinic_id() TO vapi_clinic;


--
-- Name: FUNCTION require(p_condition boolean, p_message text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.require(p_condition boolean, p_message text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.require(p_condition boolean, p_message text) TO service_role;


--
-- Name: FUNCTION require_owner(p_owner text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.require_owner(p_owner text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.require_owner(p_owner text) TO service_role;


--
-- Name: FUNCTION required_text_arg(p_args jsonb, p_key text, p_max_length integer); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.required_text_arg(p_args jsonb, p_key text, p_max_length integer) FROM PUBLIC;
GRANT ALL ON FUNCTION private.required_text_arg(p_args jsonb, p_key text, p_max_length integer) TO vapi_clinic;


--
-- Name: FUNCTION retire_channel_that_missed_changes(p_clinic_id uuid, p_calendar_id text, p_events jsonb); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.retire_channel_that_missed_changes(p_clinic_id uuid, p_calendar_id text, p_events jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION private.retire_channel_that_missed_changes(p_clinic_id uuid, p_calendar_id text, p_events jsonb) TO service_role;


--
-- Name: FUNCTION retire_channels(p_clinic_id uuid, p_because text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.retire_channels(p_clinic_id uuid, p_because text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.retire_channels(p_clinic_id uuid, p_because text) TO service_role;


--
-- Name: FUNCTION run_tool_call(p_clinic public.clinics, p_call jsonb, p_ctx jsonb); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.run_tool_call(p_clinic public.clinics, p_call jsonb, p_ctx jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION private.run_tool_call(p_clinic public.clinics, p_call jsonb, p_ctx jsonb) TO vapi_clinic;


--
-- Name: TABLE practitioners; Type: ACL; Schema: public; Owner: -
--

GRANT ALL ON TABLE public.practitioners TO service_role;
GRANT SELECT ON TABLE public.practitioners TO authenticated;
GRANT SELECT ON TABLE public.practitioners TO vapi_clinic;


--
-- Name: FUNCTION set_practitioner_hours(p_practitioner public.practitioners, p_hours jsonb); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.set_practitioner_hours(p_practitioner public.practitioners, p_hours jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION private.set_practitioner_hours(p_practitioner public.practitioners, p_hours jsonb) TO service_role;


--
-- Name: FUNCTION slot_taken(p_clinic public.clinics, p_wanted timestamp with time zone, p_minutes integer, p_ignore uuid, p_diaries uuid[]); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.slot_taken(p_clinic public.clinics, p_wanted timestamp with time zone, p_minutes integer, p_ignore uuid, p_diaries uuid[]) FROM PUBLIC;
GRANT ALL ON FUNCTION private.slot_taken(p_clinic public.clinics, p_wanted timestamp with time zone, p_minutes integer, p_ignore uuid, p_diaries uuid[]) TO vapi_clinic;
GRANT ALL ON FUNCTION private.slot_taken(p_clinic public.clinics, p_wanted timestamp with time zone, p_minutes integer, p_ignore uuid, p_diaries uuid[]) TO service_role;


--
-- Name: FUNCTION text_arg(p_args jsonb, p_key text, p_max_length integer, p_multiline boolean); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.text_arg(p_args jsonb, p_key text, p_max_length integer, p_multiline boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION private.text_arg(p_args jsonb, p_key text, p_max_length integer, p_multiline boolean) TO vapi_clinic;


--
-- Name: FUNCTION tool_book_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.tool_book_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION private.tool_book_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) TO vapi_clinic;


--
-- Name: FUNCTION tool_cancel_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.tool_cancel_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION private.tool_cancel_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) TO vapi_clinic;


--
-- Name: FUNCTION tool_check_availability(p_clinic public.clinics, p_args jsonb); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.tool_check_availability(p_clinic public.clinics, p_args jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION private.tool_check_availability(p_clinic public.clinics, p_args jsonb) TO vapi_clinic;


--
-- Name: FUNCTION tool_reschedule_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.tool_reschedule_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION private.tool_reschedule_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) TO vapi_clinic;


--
-- Name: FUNCTION vapi_answer(p_body jsonb, p_nul_marker text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.vapi_answer(p_body jsonb, p_nul_marker text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.vapi_answer(p_body jsonb, p_nul_marker text) TO vapi_clinic;


--
-- Name: FUNCTION vapi_call_arguments(p_call jsonb); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.vapi_call_arguments(p_call jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION private.vapi_call_arguments(p_call jsonb) TO vapi_clinic;


--
-- Name: FUNCTION vapi_call_name(p_call jsonb); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.vapi_call_name(p_call jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION private.vapi_call_name(p_call jsonb) TO vapi_clinic;


--
-- Name: FUNCTION vapi_calls_found(p_container jsonb); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.vapi_calls_found(p_container jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION private.vapi_calls_found(p_container jsonb) TO vapi_clinic;


--
-- Name: FUNCTION vapi_calls_of(p_message jsonb); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.vapi_calls_of(p_message jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION private.vapi_calls_of(p_message jsonb) TO vapi_clinic;


--
-- Name: FUNCTION vapi_refuse_all(p_calls jsonb, p_message text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.vapi_refuse_all(p_calls jsonb, p_message text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.vapi_refuse_all(p_calls jsonb, p_message text) TO vapi_clinic;


--
-- Name: FUNCTION vapi_refuse_message(p_calls jsonb, p_message text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.vapi_refuse_message(p_calls jsonb, p_message text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.vapi_refuse_message(p_calls jsonb, p_message text) TO vapi_clinic;


--
-- Name: FUNCTION vapi_refuse_unreadable(p_body json, p_message text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.vapi_refuse_unreadable(p_body json, p_message text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.vapi_refuse_unreadable(p_body json, p_message text) TO vapi_clinic;


--
-- Name: FUNCTION vapi_wait_budget(); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.vapi_wait_budget() FROM PUBLIC;
GRANT ALL ON FUNCTION private.vapi_wait_budget() TO vapi_clinic;


--
-- Name: FUNCTION wait_left(); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.wait_left() FROM PUBLIC;
GRANT ALL ON FUNCTION private.wait_left() TO vapi_clinic;
GRANT ALL ON FUNCTION private.wait_left() TO service_role;


--
-- Name: FUNCTION with_whom(p_practitioner uuid); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.with_whom(p_practitioner uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION private.with_whom(p_practitioner uuid) TO vapi_clinic;
GRANT ALL ON FUNCTION private.with_whom(p_practitioner uuid) TO service_role;


--
-- Name: FUNCTION zone_place(p_zone text); Type: ACL; Schema: private; Owner: -
--

REVOKE ALL ON FUNCTION private.zone_place(p_zone text) FROM PUBLIC;
GRANT ALL ON FUNCTION private.zone_place(p_zone text) TO vapi_clinic;


--
-- Name: FUNCTION abandon_calendar_channel(p_channel_id text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.abandon_calendar_channel(p_channel_id text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.abandon_calendar_channel(p_channel_id text) TO service_role;


--
-- Name: FUNCTION add_practitioner(p_clinic_id uuid, p_name text, p_services jsonb, p_opening_hours jsonb, p_calendar_id text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.add_practitioner(p_clinic_id uuid, p_name text, p_services jsonb, p_opening_hours jsonb, p_calendar_id text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.add_practitioner(p_clinic_id uuid, p_name text, p_services jsonb, p_opening_hours jsonb, p_calendar_id text) TO service_role;


--
-- Name: FUNCTION apply_calendar_changes(p_clinic_id uuid, p_events jsonb, p_sync_token text, p_full boolean, p_owner text, p_calendar_id text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.apply_calendar_changes(p_clinic_id uuid, p_events jsonb, p_sync_token text, p_full boolean, p_owner text, p_calendar_id text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.apply_calendar_changes(p_clinic_id uuid, p_events jsonb, p_sync_token text, p_full boolean, p_owner text, p_calendar_id text) TO service_role;


--
-- Name: FUNCTION appointment_sync_status(p_clinic_id uuid, p_reference text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.appointment_sync_status(p_clinic_id uuid, p_reference text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.appointment_sync_status(p_clinic_id uuid, p_reference text) TO service_role;


--
-- Name: FUNCTION begin_calendar_channel(p_clinic_id uuid, p_channel_id text, p_token_hash text, p_calendar_id text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.begin_calendar_channel(p_clinic_id uuid, p_channel_id text, p_token_hash text, p_calendar_id text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.begin_calendar_channel(p_clinic_id uuid, p_channel_id text, p_token_hash text, p_calendar_id text) TO service_role;


--
-- Name: FUNCTION begin_connect_consent(p_secret text, p_state text, p_verifier_encrypted text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.begin_connect_consent(p_secret text, p_state text, p_verifier_encrypted text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.begin_connect_consent(p_secret text, p_state text, p_verifier_encrypted text) TO service_role;


--
-- Name: FUNCTION calendar_channel_stopped(p_channel_id text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.calendar_channel_stopped(p_channel_id text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.calendar_channel_stopped(p_channel_id text) TO service_role;


--
-- Name: FUNCTION calendar_channel_work(p_owner text, p_renew_within_seconds integer, p_confirm_within_seconds integer, p_lease_seconds integer, p_limit integer); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.calendar_channel_work(p_owner text, p_renew_within_seconds integer, p_confirm_within_seconds integer, p_lease_seconds integer, p_limit integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.calendar_channel_work(p_owner text, p_renew_within_seconds integer, p_confirm_within_seconds integer, p_lease_seconds integer, p_limit integer) TO service_role;


--
-- Name: FUNCTION calendar_connection_tokens(p_clinic_id uuid); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.calendar_connection_tokens(p_clinic_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.calendar_connection_tokens(p_clinic_id uuid) TO service_role;


--
-- Name: FUNCTION calendar_connections_overview(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.calendar_connections_overview() FROM PUBLIC;
GRANT ALL ON FUNCTION public.calendar_connections_overview() TO service_role;


--
-- Name: FUNCTION calendar_connections_to_refresh(p_within_seconds integer); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.calendar_connections_to_refresh(p_within_seconds integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.calendar_connections_to_refresh(p_within_seconds integer) TO service_role;


--
-- Name: FUNCTION calendar_mirror_freshness(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.calendar_mirror_freshness() FROM PUBLIC;
GRANT ALL ON FUNCTION public.calendar_mirror_freshness() TO service_role;


--
-- Name: FUNCTION change_practitioner(p_practitioner_id uuid, p_changes jsonb); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.change_practitioner(p_practitioner_id uuid, p_changes jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.change_practitioner(p_practitioner_id uuid, p_changes jsonb) TO service_role;


--
-- Name: FUNCTION claim_appointments(p_owner text, p_limit integer, p_lease_seconds integer, p_per_clinic integer, p_account_limit integer, p_project_limit integer, p_hold_seconds double precision, p_returns jsonb); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.claim_appointments(p_owner text, p_limit integer, p_lease_seconds integer, p_per_clinic integer, p_account_limit integer, p_project_limit integer, p_hold_seconds double precision, p_returns jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.claim_appointments(p_owner text, p_limit integer, p_lease_seconds integer, p_per_clinic integer, p_account_limit integer, p_project_limit integer, p_hold_seconds double precision, p_returns jsonb) TO service_role;


--
-- Name: FUNCTION claim_mirror_targets(p_owner text, p_lease_seconds integer, p_interval_seconds double precision, p_limit integer, p_clinic_id uuid, p_calendar_id text, p_only_due boolean); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.claim_mirror_targets(p_owner text, p_lease_seconds integer, p_interval_seconds double precision, p_limit integer, p_clinic_id uuid, p_calendar_id text, p_only_due boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION public.claim_mirror_targets(p_owner text, p_lease_seconds integer, p_interval_seconds double precision, p_limit integer, p_clinic_id uuid, p_calendar_id text, p_only_due boolean) TO service_role;


--
-- Name: FUNCTION clinic_keys(p_clinic_id uuid); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.clinic_keys(p_clinic_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.clinic_keys(p_clinic_id uuid) TO service_role;


--
-- Name: FUNCTION clinic_links(p_clinic_id uuid); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.clinic_links(p_clinic_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.clinic_links(p_clinic_id uuid) TO service_role;


--
-- Name: FUNCTION clinic_practitioners(p_clinic_id uuid); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.clinic_practitioners(p_clinic_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.clinic_practitioners(p_clinic_id uuid) TO service_role;


--
-- Name: FUNCTION clinic_profile(p_clinic_id uuid); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.clinic_profile(p_clinic_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.clinic_profile(p_clinic_id uuid) TO service_role;


--
-- Name: FUNCTION clinic_status_page(p_secret text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.clinic_status_page(p_secret text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.clinic_status_page(p_secret text) TO service_role;


--
-- Name: FUNCTION complete_appointment_sync(p_appointment_id uuid, p_owner text, p_revision integer, p_event_id text, p_event_link text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.complete_appointment_sync(p_appointment_id uuid, p_owner text, p_revision integer, p_event_id text, p_event_link text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.complete_appointment_sync(p_appointment_id uuid, p_owner text, p_revision integer, p_event_id text, p_event_link text) TO service_role;


--
-- Name: FUNCTION complete_appointment_syncs(p_completions jsonb); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.complete_appointment_syncs(p_completions jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.complete_appointment_syncs(p_completions jsonb) TO service_role;


--
-- Name: FUNCTION complete_connect_consent(p_state text, p_google_account text, p_refresh_token_encrypted text, p_scopes text[], p_access_token_encrypted text, p_access_token_expires_at timestamp with time zone, p_refresh_token_expires_at timestamp with time zone); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.complete_connect_consent(p_state text, p_google_account text, p_refresh_token_encrypted text, p_scopes text[], p_access_token_encrypted text, p_access_token_expires_at timestamp with time zone, p_refresh_token_expires_at timestamp with time zone) FROM PUBLIC;
GRANT ALL ON FUNCTION public.complete_connect_consent(p_state text, p_google_account text, p_refresh_token_encrypted text, p_scopes text[], p_access_token_encrypted text, p_access_token_expires_at timestamp with time zone, p_refresh_token_expires_at timestamp with time zone) TO service_role;


--
-- Name: FUNCTION connect_consent(p_state text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.connect_consent(p_state text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.connect_consent(p_state text) TO service_role;


--
-- Name: FUNCTION connect_readiness(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.connect_readiness() FROM PUBLIC;
GRANT ALL ON FUNCTION public.connect_readiness() TO service_role;


--
-- Name: FUNCTION create_clinic(p_name text, p_time_zone text, p_calendar_id text, p_opening_hours jsonb, p_services jsonb, p_phone_country_code text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.create_clinic(p_name text, p_time_zone text, p_calendar_id text, p_opening_hours jsonb, p_services jsonb, p_phone_country_code text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.create_clinic(p_name text, p_time_zone text, p_calendar_id text, p_opening_hours jsonb, p_services jsonb, p_phone_country_code text) TO service_role;


--
-- Name: FUNCTION deactivate_practitioner(p_practitioner_id uuid, p_reassign boolean); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.deactivate_practitioner(p_practitioner_id uuid, p_reassign boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION public.deactivate_practitioner(p_practitioner_id uuid, p_reassign boolean) TO service_role;


--
-- Name: FUNCTION delete_cancelled_appointment(p_appointment_id uuid); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.delete_cancelled_appointment(p_appointment_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.delete_cancelled_appointment(p_appointment_id uuid) TO service_role;


--
-- Name: FUNCTION end_appointment_attempt(p_appointment_id uuid, p_owner text, p_state text, p_error text, p_delay_seconds double precision); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.end_appointment_attempt(p_appointment_id uuid, p_owner text, p_state text, p_error text, p_delay_seconds double precision) FROM PUBLIC;
GRANT ALL ON FUNCTION public.end_appointment_attempt(p_appointment_id uuid, p_owner text, p_state text, p_error text, p_delay_seconds double precision) TO service_role;


--
-- Name: FUNCTION google_budget_snapshot(p_account_limit integer, p_project_limit integer, p_top integer); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.google_budget_snapshot(p_account_limit integer, p_project_limit integer, p_top integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.google_budget_snapshot(p_account_limit integer, p_project_limit integer, p_top integer) TO service_role;


--
-- Name: FUNCTION issue_clinic_key(p_clinic_id uuid, p_label text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.issue_clinic_key(p_clinic_id uuid, p_label text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.issue_clinic_key(p_clinic_id uuid, p_label text) TO service_role;


--
-- Name: FUNCTION issue_clinic_link(p_clinic_id uuid, p_purpose text, p_valid_for interval); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.issue_clinic_link(p_clinic_id uuid, p_purpose text, p_valid_for interval) FROM PUBLIC;
GRANT ALL ON FUNCTION public.issue_clinic_link(p_clinic_id uuid, p_purpose text, p_valid_for interval) TO service_role;


--
-- Name: FUNCTION next_event_generation(p_appointment_id uuid, p_owner text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.next_event_generation(p_appointment_id uuid, p_owner text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.next_event_generation(p_appointment_id uuid, p_owner text) TO service_role;


--
-- Name: FUNCTION open_clinic_link(p_secret text, p_purpose text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.open_clinic_link(p_secret text, p_purpose text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.open_clinic_link(p_secret text, p_purpose text) TO service_role;


--
-- Name: FUNCTION purge_vapi_tool_calls(p_older_than interval, p_limit integer); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.purge_vapi_tool_calls(p_older_than interval, p_limit integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.purge_vapi_tool_calls(p_older_than interval, p_limit integer) TO service_role;


--
-- Name: FUNCTION readiness_facts(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.readiness_facts() FROM PUBLIC;
GRANT ALL ON FUNCTION public.readiness_facts() TO service_role;


--
-- Name: FUNCTION reconnect_link(p_status_secret text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.reconnect_link(p_status_secret text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.reconnect_link(p_status_secret text) TO service_role;


--
-- Name: FUNCTION record_calendar_channel(p_channel_id text, p_resource_id text, p_expires_at timestamp with time zone, p_owner text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.record_calendar_channel(p_channel_id text, p_resource_id text, p_expires_at timestamp with time zone, p_owner text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.record_calendar_channel(p_channel_id text, p_resource_id text, p_expires_at timestamp with time zone, p_owner text) TO service_role;


--
-- Name: FUNCTION record_calendar_notification(p_channel_id text, p_resource_id text, p_token text, p_state text, p_message_number bigint); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.record_calendar_notification(p_channel_id text, p_resource_id text, p_token text, p_state text, p_message_number bigint) FROM PUBLIC;
GRANT ALL ON FUNCTION public.record_calendar_notification(p_channel_id text, p_resource_id text, p_token text, p_state text, p_message_number bigint) TO service_role;


--
-- Name: FUNCTION record_mirror_failure(p_clinic_id uuid, p_error text, p_owner text, p_calendar_id text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.record_mirror_failure(p_clinic_id uuid, p_error text, p_owner text, p_calendar_id text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.record_mirror_failure(p_clinic_id uuid, p_error text, p_owner text, p_calendar_id text) TO service_role;


--
-- Name: FUNCTION record_token_failure(p_clinic_id uuid, p_error text, p_needs_reauth boolean); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.record_token_failure(p_clinic_id uuid, p_error text, p_needs_reauth boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION public.record_token_failure(p_clinic_id uuid, p_error text, p_needs_reauth boolean) TO service_role;


--
-- Name: FUNCTION record_token_refresh(p_clinic_id uuid, p_access_token_encrypted text, p_access_token_expires_at timestamp with time zone, p_refresh_token_encrypted text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.record_token_refresh(p_clinic_id uuid, p_access_token_encrypted text, p_access_token_expires_at timestamp with time zone, p_refresh_token_encrypted text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.record_token_refresh(p_clinic_id uuid, p_access_token_encrypted text, p_access_token_expires_at timestamp with time zone, p_refresh_token_encrypted text) TO service_role;


--
-- Name: FUNCTION release_appointment_leases(p_owner text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.release_appointment_leases(p_owner text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.release_appointment_leases(p_owner text) TO service_role;


--
-- Name: FUNCTION reserve_google_requests(p_clinic_id uuid, p_requests integer, p_account_limit integer, p_project_limit integer, p_hold_seconds double precision, p_returns jsonb); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.reserve_google_requests(p_clinic_id uuid, p_requests integer, p_account_limit integer, p_project_limit integer, p_hold_seconds double precision, p_returns jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION public.reserve_google_requests(p_clinic_id uuid, p_requests integer, p_account_limit integer, p_project_limit integer, p_hold_seconds double precision, p_returns jsonb) TO service_role;


--
-- Name: FUNCTION resync_appointment(p_appointment_id uuid); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.resync_appointment(p_appointment_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.resync_appointment(p_appointment_id uuid) TO service_role;


--
-- Name: FUNCTION retry_failed_appointments(p_clinic_id uuid, p_appointment_id uuid); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.retry_failed_appointments(p_clinic_id uuid, p_appointment_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.retry_failed_appointments(p_clinic_id uuid, p_appointment_id uuid) TO service_role;


--
-- Name: FUNCTION revoke_clinic_key(p_key_id uuid); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.revoke_clinic_key(p_key_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.revoke_clinic_key(p_key_id uuid) TO service_role;


--
-- Name: FUNCTION revoke_clinic_link(p_link_id uuid); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.revoke_clinic_link(p_link_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION public.revoke_clinic_link(p_link_id uuid) TO service_role;


--
-- Name: FUNCTION rotate_clinic_key(p_clinic_id uuid, p_label text, p_grace interval); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.rotate_clinic_key(p_clinic_id uuid, p_label text, p_grace interval) FROM PUBLIC;
GRANT ALL ON FUNCTION public.rotate_clinic_key(p_clinic_id uuid, p_label text, p_grace interval) TO service_role;


--
-- Name: FUNCTION save_calendar_connection(p_clinic_id uuid, p_google_account text, p_refresh_token_encrypted text, p_scopes text[], p_access_token_encrypted text, p_access_token_expires_at timestamp with time zone, p_refresh_token_expires_at timestamp with time zone); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.save_calendar_connection(p_clinic_id uuid, p_google_account text, p_refresh_token_encrypted text, p_scopes text[], p_access_token_encrypted text, p_access_token_expires_at timestamp with time zone, p_refresh_token_expires_at timestamp with time zone) FROM PUBLIC;
GRANT ALL ON FUNCTION public.save_calendar_connection(p_clinic_id uuid, p_google_account text, p_refresh_token_encrypted text, p_scopes text[], p_access_token_encrypted text, p_access_token_expires_at timestamp with time zone, p_refresh_token_expires_at timestamp with time zone) TO service_role;


--
-- Name: FUNCTION sync_backlog(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.sync_backlog() FROM PUBLIC;
GRANT ALL ON FUNCTION public.sync_backlog() TO service_role;


--
-- Name: FUNCTION throttle_google_requests(p_clinic_id uuid, p_seconds double precision, p_max_seconds double precision, p_reason text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.throttle_google_requests(p_clinic_id uuid, p_seconds double precision, p_max_seconds double precision, p_reason text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.throttle_google_requests(p_clinic_id uuid, p_seconds double precision, p_max_seconds double precision, p_reason text) TO service_role;


--
-- Name: FUNCTION vapi_tool_call(json); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.vapi_tool_call(json) FROM PUBLIC;
GRANT ALL ON FUNCTION public.vapi_tool_call(json) TO anon;


--
-- Name: TABLE google_requests; Type: ACL; Schema: private; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE private.google_requests TO service_role;


--
-- Name: TABLE google_throttles; Type: ACL; Schema: private; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE private.google_throttles TO service_role;


--
-- Name: TABLE calendar_busy; Type: ACL; Schema: public; Owner: -
--

GRANT ALL ON TABLE public.calendar_busy TO service_role;
GRANT SELECT ON TABLE public.calendar_busy TO authenticated;


--
-- Name: COLUMN calendar_busy.clinic_id; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(clinic_id) ON TABLE public.calendar_busy TO vapi_clinic;


--
-- Name: COLUMN calendar_busy.starts_at; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(starts_at) ON TABLE public.calendar_busy TO vapi_clinic;


--
-- Name: COLUMN calendar_busy.ends_at; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(ends_at) ON TABLE public.calendar_busy TO vapi_clinic;


--
-- Name: COLUMN calendar_busy.calendar_id; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(calendar_id) ON TABLE public.calendar_busy TO vapi_clinic;


--
-- Name: TABLE calendar_channels; Type: ACL; Schema: public; Owner: -
--

GRANT ALL ON TABLE public.calendar_channels TO service_role;


--
-- Name: TABLE calendar_connections; Type: ACL; Schema: public; Owner: -
--

GRANT ALL ON TABLE public.calendar_connections TO service_role;


--
-- Name: COLUMN calendar_connections.clinic_id; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(clinic_id) ON TABLE public.calendar_connections TO authenticated;


--
-- Name: COLUMN calendar_connections.google_account; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(google_account) ON TABLE public.calendar_connections TO authenticated;


--
-- Name: COLUMN calendar_connections.scopes; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(scopes) ON TABLE public.calendar_connections TO authenticated;


--
-- Name: COLUMN calendar_connections.status; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(status) ON TABLE public.calendar_connections TO authenticated;


--
-- Name: COLUMN calendar_connections.last_refreshed_at; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(last_refreshed_at) ON TABLE public.calendar_connections TO authenticated;


--
-- Name: COLUMN calendar_connections.last_error; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(last_error) ON TABLE public.calendar_connections TO authenticated;


--
-- Name: COLUMN calendar_connections.connected_at; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(connected_at) ON TABLE public.calendar_connections TO authenticated;


--
-- Name: COLUMN calendar_connections.updated_at; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(updated_at) ON TABLE public.calendar_connections TO authenticated;


--
-- Name: TABLE calendar_mirrors; Type: ACL; Schema: public; Owner: -
--

GRANT ALL ON TABLE public.calendar_mirrors TO service_role;


--
-- Name: COLUMN calendar_mirrors.clinic_id; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(clinic_id) ON TABLE public.calendar_mirrors TO authenticated;
GRANT SELECT(clinic_id) ON TABLE public.calendar_mirrors TO vapi_clinic;


--
-- Name: COLUMN calendar_mirrors.last_synced_at; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(last_synced_at) ON TABLE public.calendar_mirrors TO authenticated;
GRANT SELECT(last_synced_at) ON TABLE public.calendar_mirrors TO vapi_clinic;


--
-- Name: COLUMN calendar_mirrors.last_full_sync_at; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(last_full_sync_at) ON TABLE public.calendar_mirrors TO authenticated;


--
-- Name: COLUMN calendar_mirrors.last_error; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(last_error) ON TABLE public.calendar_mirrors TO authenticated;
GRANT SELECT(last_error) ON TABLE public.calendar_mirrors TO vapi_clinic;


--
-- Name: COLUMN calendar_mirrors.calendar_id; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(calendar_id) ON TABLE public.calendar_mirrors TO authenticated;
GRANT SELECT(calendar_id) ON TABLE public.calendar_mirrors TO vapi_clinic;


--
-- Name: TABLE clinic_api_keys; Type: ACL; Schema: public; Owner: -
--

GRANT ALL ON TABLE public.clinic_api_keys TO service_role;


--
-- Name: COLUMN clinic_api_keys.clinic_id; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(clinic_id) ON TABLE public.clinic_api_keys TO clinic_key_resolver;


--
-- Name: COLUMN clinic_api_keys.key_hash; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(key_hash) ON TABLE public.clinic_api_keys TO clinic_key_resolver;


--
-- Name: COLUMN clinic_api_keys.revoked_at; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(revoked_at) ON TABLE public.clinic_api_keys TO clinic_key_resolver;


--
-- Name: COLUMN clinic_api_keys.last_used_at; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT(last_used_at),UPDATE(last_used_at) ON TABLE public.clinic_api_keys TO clinic_key_resolver;


--
-- Name: TABLE clinic_members; Type: ACL; Schema: public; Owner: -
--

GRANT ALL ON TABLE public.clinic_members TO service_role;
GRANT SELECT ON TABLE public.clinic_members TO authenticated;


--
-- Name: TABLE clinic_opening_hours; Type: ACL; Schema: public; Owner: -
--

GRANT ALL ON TABLE public.clinic_opening_hours TO service_role;
GRANT SELECT ON TABLE public.clinic_opening_hours TO authenticated;
GRANT SELECT ON TABLE public.clinic_opening_hours TO vapi_clinic;


--
-- Name: TABLE contacts; Type: ACL; Schema: public; Owner: -
--

GRANT ALL ON TABLE public.contacts TO service_role;
GRANT SELECT ON TABLE public.contacts TO authenticated;


--
-- Name: TABLE practitioner_hours; Type: ACL; Schema: public; Owner: -
--

GRANT ALL ON TABLE public.practitioner_hours TO service_role;
GRANT SELECT ON TABLE public.practitioner_hours TO authenticated;
GRANT SELECT ON TABLE public.practitioner_hours TO vapi_clinic;


--
-- Name: TABLE vapi_tool_calls; Type: ACL; Schema: public; Owner: -
--

GRANT ALL ON TABLE public.vapi_tool_calls TO service_role;
GRANT SELECT,INSERT,UPDATE ON TABLE public.vapi_tool_calls TO vapi_clinic;


--
-- Name: DEFAULT PRIVILEGES FOR SEQUENCES; Type: DEFAULT ACL; Schema: public; Owner: -
--

ALTER DEFAULT PRIVILEGES FOR ROLE migrator IN SCHEMA public GRANT ALL ON SEQUENCES TO anon;
ALTER DEFAULT PRIVILEGES FOR ROLE migrator IN SCHEMA public GRANT ALL ON SEQUENCES TO authenticated;
ALTER DEFAULT PRIVILEGES FOR ROLE migrator IN SCHEMA public GRANT ALL ON SEQUENCES TO service_role;


--
-- Name: DEFAULT PRIVILEGES FOR FUNCTIONS; Type: DEFAULT ACL; Schema: public; Owner: -
--

ALTER DEFAULT PRIVILEGES FOR ROLE migrator IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon;
ALTER DEFAULT PRIVILEGES FOR ROLE migrator IN SCHEMA public GRANT ALL ON FUNCTIONS TO authenticated;
ALTER DEFAULT PRIVILEGES FOR ROLE migrator IN SCHEMA public GRANT ALL ON FUNCTIONS TO service_role;


--
-- Name: DEFAULT PRIVILEGES FOR TABLES; Type: DEFAULT ACL; Schema: public; Owner: -
--

ALTER DEFAULT PRIVILEGES FOR ROLE migrator IN SCHEMA public GRANT ALL ON TABLES TO anon;
ALTER DEFAULT PRIVILEGES FOR ROLE migrator IN SCHEMA public GRANT ALL ON TABLES TO authenticated;
ALTER DEFAULT PRIVILEGES FOR ROLE migrator IN SCHEMA public GRANT ALL ON TABLES TO service_role;
