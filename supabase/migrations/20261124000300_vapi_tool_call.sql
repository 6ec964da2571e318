-- The Vapi assistant's tools: POST /rest/v1/rpc/vapi_tool_call with the whole Vapi message.
--
-- Contract (see DESIGN.md): always a JSON body {"results": [{"toolCallId", "result"|"error"}]}
-- in call order, single-line strings; the clinic comes only from the `x-clinic-key` header.
-- `public.vapi_tool_call` is SECURITY DEFINER owned by `vapi_clinic`, a role without
-- BYPASSRLS that owns no table: every tool body runs under RLS scoped to the key's clinic.
--
-- Tool-level refusals are raised with SQLSTATE VA001 and turned into that call's `error`;
-- the call's savepoint is rolled back, so a refused call changes nothing.

-- Answers given to mutating tool calls, so a Vapi retry (same toolCallId) gets the same
-- answer instead of a second booking.
create table public.vapi_tool_calls (
  clinic_id uuid not null references public.clinics (id) on delete cascade,
  tool_call_id text not null check (length(tool_call_id) between 1 and 200),
  tool_name text not null,
  request_hash bytea not null,
  result text,
  created_at timestamptz not null default now(),
  primary key (clinic_id, tool_call_id)
);
create index vapi_tool_calls_created on public.vapi_tool_calls (created_at);

alter table public.vapi_tool_calls enable row level security;
revoke all on public.vapi_tool_calls from anon, authenticated, public;
grant all on public.vapi_tool_calls to service_role;
grant select, insert, update on public.vapi_tool_calls to vapi_clinic;
create policy own_clinic on public.vapi_tool_calls for all to vapi_clinic
  using (clinic_id = (select private.request_clinic_id()))
  with check (clinic_id = (select private.request_clinic_id()));

------------------------------------------------------------------------------------------
-- Small helpers
------------------------------------------------------------------------------------------

-- Volatile so the planner never evaluates a refusal early (e.g. inside an untaken CASE arm).
create function private.refuse(p_message text) returns void
language plpgsql volatile
set search_path = ''
as $$
begin
  raise exception using errcode = 'VA001', message = p_message;
end
$$;

-- Caller-supplied text made safe to echo in a one-line answer.
create function private.printable(p_text text, p_max integer default 40) returns text
language sql immutable
set search_path = ''
as $$
  select case when length(t) > p_max then left(t, p_max) || '...' else t end
  from (select regexp_replace(p_text, '[\x01-\x1f\x7f-\x9f\u2028\u2029]', '?', 'g') as t) s
$$;

create function private.check_arg_names(p_args jsonb, p_allowed text[]) returns void
language plpgsql stable
set search_path = ''
as $$
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

-- A text argument, trimmed; null when absent, null or blank. Refuses other JSON types,
-- control characters (newlines and tabs only where p_multiline) and overlong values.
create function private.text_arg(
  p_args jsonb, p_key text, p_max_length integer, p_multiline boolean default false
) returns text
language plpgsql stable
set search_path = ''
as $$
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

create function private.required_text_arg(p_args jsonb, p_key text, p_max_length integer)
returns text
language plpgsql stable
set search_path = ''
as $$
declare
  v_text text := private.text_arg(p_args, p_key, p_max_length);
begin
  if v_text is null then
    perform private.refuse(format('%s is required', p_key));
  end if;
  return v_text;
end
$$;

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

------------------------------------------------------------------------------------------
-- Clinic-local time
------------------------------------------------------------------------------------------

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

create function private.local_day(p_instant timestamptz, p_zone text) returns text
language sql stable
set search_path = ''
as $$
  select to_char(p_instant at time zone p_zone, 'FMDay FMDD FMMonth YYYY')
$$;

create function private.local_clock(p_instant timestamptz, p_zone text) returns text
language sql stable
set search_path = ''
as $$
  select to_char(p_instant at time zone p_zone, 'HH24:MI')
$$;

-- 'Europe/London' -> 'London'
create function private.zone_place(p_zone text) returns text
language sql immutable
set search_path = ''
as $$
  select replace(regexp_replace(p_zone, '^.*/', ''), '_', ' ')
$$;

create function private.parse_local_date(p_text text, p_arg text) returns date
language plpgsql stable
set search_path = ''
as $$
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
$$;

-- A clinic-local "YYYY-MM-DDTHH:MM" (seconds ":00" and a space separator are tolerated).
create function private.parse_local_start(
  p_text text, p_zone text, p_arg text, out instant timestamptz, out ambiguous boolean
)
language plpgsql stable
set search_path = ''
as $$
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
$$;

------------------------------------------------------------------------------------------
-- Clinic rules
------------------------------------------------------------------------------------------

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

create function private.refuse_if_closed(p_clinic_id uuid, p_day date) returns void
language plpgsql stable
set search_path = ''
as $$
begin
  if not exists (select from public.clinic_opening_hours
                 where clinic_id = p_clinic_id and weekday = extract(isodow from p_day)) then
    perform private.refuse(format('The clinic is closed on %ss', to_char(p_day, 'FMDay')));
  end if;
end
$$;

-- Refuses an appointment window the clinic cannot take: past or too soon, beyond the booking
-- horizon, on a closed day, or not within one opening period.
create function private.check_bookable(p_clinic public.clinics, p_starts timestamptz, p_ends timestamptz)
returns void
language plpgsql stable
set search_path = ''
as $$
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
  perform private.refuse_if_closed(p_clinic.id, v_start::date);
  if not exists (select from public.clinic_opening_hours
                 where clinic_id = p_clinic.id and weekday = v_weekday
                   and v_start >= v_start::date + opens and v_end <= v_start::date + closes) then
    perform private.refuse(format('That time is outside opening hours (%s: %s)',
                                  to_char(v_start, 'FMDay'), private.opening_hours_text(p_clinic.id, v_weekday)));
  end if;
end
$$;

-- The service asked for (case-insensitive), else the clinic's default, else its only one.
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

-- Free start times on a clinic-local day for an appointment of p_minutes, on the clinic's
-- slot grid from each opening time, excluding past/too-soon/too-far times and overlaps with
-- live appointments (other than p_ignore, the one being moved).
create function private.free_slots(
  p_clinic public.clinics, p_day date, p_minutes integer, p_ignore uuid default null
) returns setof timestamptz
language sql stable
set search_path = ''
as $$
  select slot.instant
  from public.clinic_opening_hours h
  cross join lateral generate_series(
    p_day + h.opens,
    p_day + h.closes - make_interval(mins => p_minutes),
    make_interval(mins => p_clinic.slot_minutes)) as local_start
  cross join lateral private.local_to_instant(local_start, p_clinic.time_zone) as slot
  where h.clinic_id = p_clinic.id
    and h.weekday = extract(isodow from p_day)
    and slot.instant >= now() + make_interval(mins => p_clinic.min_notice_minutes)
    and slot.instant <= now() + make_interval(days => p_clinic.booking_horizon_days)
    and not exists (
      select from public.appointments a
      where a.clinic_id = p_clinic.id
        and a.status = 'booked'
        and a.id is distinct from p_ignore
        and tstzrange(a.starts_at, a.ends_at, '[)')
            && tstzrange(slot.instant, slot.instant + make_interval(mins => p_minutes), '[)'))
  order by slot.instant
$$;

create function private.slot_taken(
  p_clinic public.clinics, p_wanted timestamptz, p_minutes integer, p_ignore uuid default null
) returns void
language plpgsql stable
set search_path = ''
as $$
declare
  v_day date := (p_wanted at time zone p_clinic.time_zone)::date;
  v_nearest text;
begin
  select string_agg(private.local_clock(s, p_clinic.time_zone), ', ' order by s) into v_nearest
  from (select s from private.free_slots(p_clinic, v_day, p_minutes, p_ignore) as s
        order by abs(extract(epoch from s - p_wanted)) limit 6) as nearest;
  perform private.refuse(format('%s on %s is not available. %s',
    private.local_clock(p_wanted, p_clinic.time_zone), private.local_day(p_wanted, p_clinic.time_zone),
    coalesce('Nearest free times that day: ' || v_nearest, 'There are no other free times that day')));
end
$$;

create function private.new_reference(p_clinic_id uuid) returns text
language plpgsql volatile
set search_path = ''
as $$
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

-- The caller's phone number: the `patient_phone` argument, else the number Vapi saw calling.
create function private.patient_phone(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) returns text
language plpgsql stable
set search_path = ''
as $$
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

-- The upcoming live appointment a cancel/reschedule refers to: by reference, else by the
-- caller's phone number (and start time, when given). Locked for the change that follows.
create function private.find_appointment(
  p_clinic public.clinics, p_args jsonb, p_ctx jsonb, p_start_text text
) returns public.appointments
language plpgsql volatile
set search_path = ''
as $$
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

------------------------------------------------------------------------------------------
-- The tools
------------------------------------------------------------------------------------------

create function private.tool_check_availability(p_clinic public.clinics, p_args jsonb) returns text
language plpgsql stable
set search_path = ''
as $$
declare
  v_day date;
  v_service public.clinic_services;
  v_today date := (now() at time zone p_clinic.time_zone)::date;
  v_slots text;
  v_day_name text;
begin
  perform private.check_arg_names(p_args, array['date', 'service']);
  v_day := private.parse_local_date(private.required_text_arg(p_args, 'date', 40), 'date');
  v_service := private.pick_service(p_clinic.id, private.text_arg(p_args, 'service', 80));
  if v_day < v_today then
    perform private.refuse('That date has already passed');
  end if;
  if v_day > (now() at time zone p_clinic.time_zone)::date + p_clinic.booking_horizon_days then
    perform private.refuse(format('Bookings can be made at most %s days ahead', p_clinic.booking_horizon_days));
  end if;
  perform private.refuse_if_closed(p_clinic.id, v_day);
  v_day_name := to_char(v_day, 'FMDay FMDD FMMonth YYYY');
  select string_agg(private.local_clock(s, p_clinic.time_zone), ', ' order by s) into v_slots
  from private.free_slots(p_clinic, v_day, v_service.duration_minutes) as s;
  if v_slots is null then
    return format('No free times on %s for a %s (opening hours that day: %s).',
                  v_day_name, v_service.name, private.opening_hours_text(p_clinic.id, extract(isodow from v_day)::integer));
  end if;
  return format('Free start times on %s for a %s-minute %s (%s time): %s.',
                v_day_name, v_service.duration_minutes, v_service.name,
                private.zone_place(p_clinic.time_zone), v_slots);
end
$$;

create function private.tool_book_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb)
returns text
language plpgsql volatile
set search_path = ''
as $$
declare
  v_start_text text;
  v_name text;
  v_phone text;
  v_notes text;
  v_service public.clinic_services;
  v_start record;
  v_ends timestamptz;
  v_reference text;
begin
  perform private.check_arg_names(p_args, array['start', 'patient_name', 'patient_phone', 'service', 'notes']);
  v_start_text := private.required_text_arg(p_args, 'start', 40);
  v_name := private.required_text_arg(p_args, 'patient_name', 100);
  v_phone := private.patient_phone(p_clinic, p_args, p_ctx);
  if v_phone is null then
    perform private.refuse('patient_phone is required: the caller''s number is not available, so ask for one');
  end if;
  v_notes := private.text_arg(p_args, 'notes', 500, true);
  v_service := private.pick_service(p_clinic.id, private.text_arg(p_args, 'service', 80));
  v_start := private.parse_local_start(v_start_text, p_clinic.time_zone, 'start');
  v_ends := v_start.instant + make_interval(mins => v_service.duration_minutes);
  perform private.check_bookable(p_clinic, v_start.instant, v_ends);
  v_reference := private.new_reference(p_clinic.id);
  begin
    insert into public.appointments (
      clinic_id, reference, patient, service, notes, starts_at, ends_at, source,
      vapi_call_id, vapi_tool_call_id)
    values (
      p_clinic.id, v_reference, jsonb_build_object('name', v_name, 'phone', v_phone),
      v_service.name, v_notes, v_start.instant, v_ends, 'vapi',
      p_ctx ->> 'call_id', p_ctx ->> 'tool_call_id');
  exception
    when exclusion_violation then
      perform private.slot_taken(p_clinic, v_start.instant, v_service.duration_minutes);
  end;
  return format('Booked: %s on %s at %s%s for %s. Reference %s.',
                v_service.name, private.local_day(v_start.instant, p_clinic.time_zone),
                private.local_clock(v_start.instant, p_clinic.time_zone),
                case when v_start.ambiguous
                     then ' (the first of the two times the clock shows that hour, before the clocks go back)'
                     else '' end,
                v_name, v_reference);
end
$$;

create function private.tool_cancel_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb)
returns text
language plpgsql volatile
set search_path = ''
as $$
declare
  v_appointment public.appointments;
begin
  perform private.check_arg_names(p_args, array['reference', 'patient_phone', 'start']);
  v_appointment := private.find_appointment(p_clinic, p_args, p_ctx, private.text_arg(p_args, 'start', 40));
  update public.appointments
     set status = 'cancelled', cancelled_at = now()
   where id = v_appointment.id;
  return format('Cancelled: %s on %s at %s (reference %s).',
                v_appointment.service, private.local_day(v_appointment.starts_at, p_clinic.time_zone),
                private.local_clock(v_appointment.starts_at, p_clinic.time_zone), v_appointment.reference);
end
$$;

create function private.tool_reschedule_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb)
returns text
language plpgsql volatile
set search_path = ''
as $$
declare
  v_new_start_text text;
  v_appointment public.appointments;
  v_new record;
  v_length interval;
begin
  perform private.check_arg_names(p_args, array['reference', 'patient_phone', 'new_start']);
  v_new_start_text := private.required_text_arg(p_args, 'new_start', 40);
  v_appointment := private.find_appointment(p_clinic, p_args, p_ctx, null);
  v_new := private.parse_local_start(v_new_start_text, p_clinic.time_zone, 'new_start');
  if v_new.instant = v_appointment.starts_at then
    perform private.refuse(format('The booking %s is already at that time', v_appointment.reference));
  end if;
  v_length := v_appointment.ends_at - v_appointment.starts_at;
  perform private.check_bookable(p_clinic, v_new.instant, v_new.instant + v_length);
  begin
    update public.appointments
       set starts_at = v_new.instant, ends_at = v_new.instant + v_length
     where id = v_appointment.id;
  exception
    when exclusion_violation then
      perform private.slot_taken(p_clinic, v_new.instant,
                                 (extract(epoch from v_length) / 60)::integer, v_appointment.id);
  end;
  return format('Moved: %s from %s at %s to %s at %s%s (reference %s).',
                v_appointment.service,
                private.local_day(v_appointment.starts_at, p_clinic.time_zone),
                private.local_clock(v_appointment.starts_at, p_clinic.time_zone),
                private.local_day(v_new.instant, p_clinic.time_zone),
                private.local_clock(v_new.instant, p_clinic.time_zone),
                case when v_new.ambiguous
                     then ' (the first of the two times the clock shows that hour, before the clocks go back)'
                     else '' end,
                v_appointment.reference);
end
$$;

------------------------------------------------------------------------------------------
-- The envelope
------------------------------------------------------------------------------------------

-- The tool calls of a Vapi message, in order: `toolCallList` (current and older flat item
-- shapes), else the `toolCall` of each `toolWithToolCallList` entry. Null when neither.
create function private.vapi_calls_of(p_message jsonb) returns jsonb
language sql immutable
set search_path = ''
as $$
  select case
    when jsonb_typeof(p_message -> 'toolCallList') = 'array' then p_message -> 'toolCallList'
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

create function private.vapi_call_name(p_call jsonb) returns text
language plpgsql stable
set search_path = ''
as $$
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

-- Arguments arrive as an object in practice but are typed as a JSON string in Vapi's schema;
-- older payloads call them `parameters`.
create function private.vapi_call_arguments(p_call jsonb) returns jsonb
language plpgsql stable
set search_path = ''
as $$
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

-- One tool call, in its own savepoint: a refusal or a fault rolls back only this call.
create function private.run_tool_call(p_clinic public.clinics, p_call jsonb, p_ctx jsonb) returns jsonb
language plpgsql volatile
set search_path = ''
as $$
declare
  v_id jsonb := p_call -> 'id';
  v_tool_call_id text := v_id #>> '{}';
  v_name text;
  v_args jsonb;
  v_hash bytea;
  v_prior public.vapi_tool_calls;
  v_result text;
begin
  if jsonb_typeof(v_id) is distinct from 'string' or length(v_tool_call_id) not between 1 and 200 then
    return jsonb_build_object('toolCallId', v_id, 'error', 'This tool call has no usable id');
  end if;
  begin
    v_name := private.vapi_call_name(p_call);
    v_args := private.vapi_call_arguments(p_call);
    if v_name <> 'check_availability' then
      -- The first attempt claims the id; a concurrent retry waits here for it to commit,
      -- then answers with what the first attempt answered.
      v_hash := sha256(convert_to(v_name || ' ' || v_args::text, 'UTF8'));
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
    when others then
      -- Only the tool name and SQLSTATE: arguments may carry patient details.
      raise warning 'vapi_tool_call: % failed with SQLSTATE %', coalesce(v_name, 'unnamed tool'), sqlstate;
      return jsonb_build_object('toolCallId', v_id, 'error',
        'Something went wrong on our side. Please take a message and the clinic will call back');
  end;
end
$$;

create function private.vapi_refuse_all(p_calls jsonb, p_message text) returns jsonb
language sql immutable
set search_path = ''
as $$
  select jsonb_build_object('results', coalesce(jsonb_agg(
           jsonb_build_object('toolCallId', call -> 'id', 'error', p_message) order by position), '[]'::jsonb))
  from jsonb_array_elements(p_calls) with ordinality as c(call, position)
$$;

create function public.vapi_tool_call(jsonb) returns jsonb
language plpgsql volatile security definer
set search_path = ''
as $$
declare
  v_message jsonb := $1 -> 'message';
  v_calls jsonb;
  v_clinic public.clinics;
  v_clinic_id uuid;
  v_org_id jsonb;
  v_ctx jsonb;
  v_results jsonb := '[]'::jsonb;
  v_call jsonb;
begin
  if jsonb_typeof(v_message) is distinct from 'object' then
    return jsonb_build_object('results', '[]'::jsonb,
      'error', 'The body must be a Vapi server message: {"message": {"type": "tool-calls", ...}}');
  end if;
  v_calls := private.vapi_calls_of(v_message);
  if v_calls is null then
    return jsonb_build_object('results', '[]'::jsonb, 'error', 'The message has no toolCallList');
  end if;
  if jsonb_array_length(v_calls) > 20 then
    return jsonb_build_object('results', '[]'::jsonb, 'error', 'Too many tool calls in one message (at most 20)');
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

  v_ctx := jsonb_build_object(
    'caller_number', coalesce(v_message #>> '{call,customer,number}', v_message #>> '{customer,number}'),
    'call_id', case when length(v_message #>> '{call,id}') <= 200 then v_message #>> '{call,id}' end);
  for v_call in select value from jsonb_array_elements(v_calls) loop
    v_results := v_results || jsonb_build_array(private.run_tool_call(v_clinic, v_call, v_ctx));
  end loop;
  return jsonb_build_object('results', v_results);
end
$$;

revoke execute on all functions in schema private from public;
grant execute on all functions in schema private to vapi_clinic;

-- The entry point runs as vapi_clinic; handing it over needs CREATE on public for a moment.
grant create on schema public to vapi_clinic;
alter function public.vapi_tool_call(jsonb) owner to vapi_clinic;
revoke create on schema public from vapi_clinic;

revoke execute on function public.vapi_tool_call(jsonb) from public;
grant execute on function public.vapi_tool_call(jsonb) to anon, authenticated, service_role;
