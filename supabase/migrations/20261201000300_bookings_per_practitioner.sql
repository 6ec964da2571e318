-- The assistant books with practitioners.
--
-- - A diary is a practitioner, or the clinic as a whole (null): a clinic without active practitioners
--   has the one diary it always had, and answers exactly as before. A practitioner's diary has their
--   hours (the clinic's when they have none of their own); it is taken by their bookings and by
--   bookings without a practitioner, and busy in the clinic's calendar and in their own.
-- - Tools (arguments only added): check_availability {date, service?, practitioner?} lists free times
--   for the named practitioner, or for each practitioner offering the service; book_appointment
--   {..., practitioner?} books the named one or, for anyone, the one chosen fairly;
--   reschedule_appointment {reference?, patient_phone?, new_start?, practitioner?} keeps the
--   practitioner unless asked (new_start may then be left out: the same time with someone else).
--   Answers name the practitioner.
-- - Names are matched forgivingly: case, punctuation and titles (Dr, Doctor, Mr, Mrs, Ms, Miss, Mx,
--   Prof) do not count, and a first or last name on its own will do; "anyone", "whoever is free",
--   "no preference" and the like mean anyone. An unknown, inactive or ambiguous name gets an
--   answer that lists the practitioners (and their services).
-- - Anyone, fairly: among the practitioners offering the service who are free at that time (on
--   their own grid), the one with the fewest bookings that day; then the one booked least recently
--   (never first); then by name. Deterministic, and under the clinic's diary lock race-free.
-- - deactivate_practitioner stops a practitioner taking bookings at once. Their bookings ahead stay
--   booked with them (the patients were told so; the assistant can still cancel and move them, a
--   move going to anyone free unless a practitioner is named), and their calendar is still synced and
--   read while they have any; with p_reassign each is moved to a colleague free at that time, by
--   the same fair rule, and those no one can take stay. It returns every booking ahead and its fate.
--
-- - Speed: the tools run under row-level security, where only leakproof conditions may use an index;
--   bookings and busy time are now found with plain timestamptz comparisons on new GiST indexes, and
--   availability reads the day's bookings and busy time once (see the indexes below).
--
-- Replaced, grants beside them: check_bookable, free_slots, nearest_free_times, refuse_if_taken,
-- refuse_off_grid and slot_taken (a diary each: their old signatures are dropped), and the four tools.

-- Diaries -------------------------------------------------------------------------------------------

create function private.clinic_has_practitioners(p_clinic_id uuid) returns boolean
language sql stable set search_path = '' as $$
  select exists (select from public.practitioners where clinic_id = p_clinic_id and active)
$$;

create function private.diary_hours(p_clinic_id uuid, p_practitioner uuid, p_weekday integer)
returns table (opens time, closes time)
language sql stable rows 2 set search_path = '' as $$
  select h.opens, h.closes from public.practitioner_hours h
  where p_practitioner is not null and h.practitioner_id = p_practitioner and h.weekday = p_weekday
  union all
  select h.opens, h.closes from public.clinic_opening_hours h
  where h.clinic_id = p_clinic_id and h.weekday = p_weekday
    and (p_practitioner is null
         or not exists (select from public.practitioner_hours x where x.practitioner_id = p_practitioner))
$$;

create function private.diary_hours_text(p_clinic_id uuid, p_practitioner uuid, p_weekday integer) returns text
language sql stable set search_path = '' as $$
  select string_agg(to_char(opens, 'HH24:MI') || '-' ||
                    case when closes = time '24:00' then '24:00' else to_char(closes, 'HH24:MI') end,
                    ', ' order by opens)
  from private.diary_hours(p_clinic_id, p_practitioner, p_weekday)
$$;

create function private.practitioner_name(p_practitioner uuid) returns text
language sql stable set search_path = '' as $$
  select name from public.practitioners where id = p_practitioner
$$;

-- The tools run as vapi_clinic under row-level security, where only leakproof conditions may use an
-- index: the range overlap operator (&&) is not, plain timestamptz comparisons are. Without these
-- indexes every check read the clinic's whole history (bench/practitioners.py: p99 of an availability
-- check for 10 practitioners 250-400 ms, 2.2 s with a year of history; with them and the day read
-- once, 12-15 ms).
create index appointments_booked_span on public.appointments using gist (clinic_id, starts_at, ends_at)
  where status = 'booked';
create index calendar_busy_span on public.calendar_busy using gist (clinic_id, starts_at, ends_at);

-- Bookings in the way: the practitioner's own and those without a practitioner (every booking, for
-- a booking without one).
create function private.diary_taken(
  p_clinic_id uuid, p_practitioner uuid, p_starts timestamptz, p_ends timestamptz, p_ignore uuid
) returns boolean
language sql stable set search_path = '' as $$
  select exists (
    select from public.appointments a
    where a.clinic_id = p_clinic_id and a.status = 'booked' and a.id is distinct from p_ignore
      and (p_practitioner is null or a.practitioner_id is null or a.practitioner_id = p_practitioner)
      and a.starts_at < p_ends and a.ends_at > p_starts)
$$;

-- Busy time in the way: the clinic's calendar's, and the practitioner's own calendar's (every
-- calendar's, for a booking without a practitioner).
create function private.diary_busy(
  p_clinic public.clinics, p_practitioner uuid, p_starts timestamptz, p_ends timestamptz
) returns boolean
language sql stable set search_path = '' as $$
  select exists (
    select from public.calendar_busy b
    where b.clinic_id = p_clinic.id
      and (p_practitioner is null or b.calendar_id = p_clinic.calendar_id
           or b.calendar_id = (select p.calendar_id from public.practitioners p where p.id = p_practitioner))
      and b.starts_at < p_ends and b.ends_at > p_starts)
$$;

create function private.diary_mirror_stale(p_clinic public.clinics, p_practitioner uuid) returns boolean
language sql stable set search_path = '' as $$
  select exists (
    select from public.calendar_mirrors m
    where m.clinic_id = p_clinic.id
      and (p_practitioner is null or m.calendar_id = p_clinic.calendar_id
           or m.calendar_id = (select p.calendar_id from public.practitioners p where p.id = p_practitioner))
      and (m.last_synced_at < now() - make_interval(mins => p_clinic.mirror_max_age_minutes)
           or (m.last_synced_at is null and m.last_error is not null and m.calendar_id <> p_clinic.calendar_id)))
$$;

create function private.refuse_if_diary_stale(p_clinic public.clinics, p_practitioner uuid) returns void
language plpgsql stable set search_path = '' as $$
begin
  if private.diary_mirror_stale(p_clinic, p_practitioner) then
    perform private.refuse('The clinic''s calendar cannot be checked right now, so no time can be confirmed. '
                           'Please take the caller''s name and number and the clinic will call back');
  end if;
end
$$;

-- The free start times of one day in each of the diaries (null: the clinic's), on each diary's grid.
-- The day's bookings and busy time are read once, then each slot is matched against them (the same
-- rules as diary_taken and diary_busy). The planner cannot know how many slots a day has and guesses
-- millions: with JIT on (PostgreSQL's default, Debian's 15) it spent 250 ms compiling a 1 ms query.
create function private.diary_free_slots(
  p_clinic public.clinics, p_day date, p_minutes integer, p_diaries uuid[], p_ignore uuid default null
) returns table (practitioner_id uuid, instant timestamptz)
language sql stable rows 100 set search_path = '' set jit = off as $$
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

-- The active practitioners offering a service whose calendars can be trusted now.
create function private.offering_practitioners(p_clinic public.clinics, p_service text) returns uuid[]
language sql stable set search_path = '' as $$
  select coalesce(array_agg(p.id order by lower(p.name), p.id), '{}')
  from public.practitioners p
  where p.clinic_id = p_clinic.id and p.active
    and (p.services is null or p_service = any (p.services))
$$;

-- Anyone, fairly: see the header.
create function private.choose_practitioner(
  p_clinic public.clinics, p_service text, p_starts timestamptz, p_minutes integer, p_ignore uuid
) returns uuid
language sql stable set search_path = '' as $$
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

-- Names ---------------------------------------------------------------------------------------------

create function private.name_words(p_name text) returns text
language sql immutable set search_path = '' as $$
  select btrim(regexp_replace(
    regexp_replace(regexp_replace(lower(coalesce(p_name, '')), '[^[:alnum:]]+', ' ', 'g'),
                   '\m(dr|doctor|mr|mrs|ms|miss|mx|prof|professor)\M', ' ', 'g'),
    ' +', ' ', 'g'))
$$;

create function private.means_anyone(p_name text) returns boolean
language sql immutable set search_path = '' as $$
  select p_name is null
      or private.name_words(p_name) ~ '^(any|anyone|anybody|either|whoever|whichever|no preference|first available|no one in particular|nobody in particular|not fussy|don t mind|doesn t matter|does not matter)( |$)'
$$;

create function private.practitioner_roster(p_clinic_id uuid) returns text
language sql stable set search_path = '' as $$
  select string_agg(p.name || coalesce(' (' || array_to_string(p.services, ', ') || ')', ''), '; '
                    order by lower(p.name), p.id)
  from public.practitioners p where p.clinic_id = p_clinic_id and p.active
$$;

-- The practitioner a caller named: null for anyone; refuses unknown, inactive and ambiguous names.
create function private.pick_practitioner(p_clinic public.clinics, p_name text) returns uuid
language plpgsql stable set search_path = '' as $$
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

create function private.refuse_unless_offered(p_practitioner uuid, p_service text) returns void
language plpgsql stable set search_path = '' as $$
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

-- Checks, per diary --------------------------------------------------------------------------------

create function private.with_whom(p_practitioner uuid) returns text
language sql stable set search_path = '' as $$
  select coalesce(' with ' || private.practitioner_name(p_practitioner), '')
$$;

drop function private.nearest_free_times(public.clinics, timestamptz, integer, uuid);
create function private.nearest_free_times(
  p_clinic public.clinics, p_wanted timestamptz, p_minutes integer, p_ignore uuid, p_diaries uuid[]
) returns text
language sql stable set search_path = '' as $$
  select coalesce('Nearest free times that day: ' || string_agg(private.local_clock(s, p_clinic.time_zone), ', ' order by s),
                  'There are no other free times that day')
  from (select f.instant as s
        from private.diary_free_slots(p_clinic, (p_wanted at time zone p_clinic.time_zone)::date, p_minutes,
                                      p_diaries, p_ignore) as f
        group by f.instant
        order by abs(extract(epoch from f.instant - p_wanted)) limit 6) as nearest
$$;

drop function private.slot_taken(public.clinics, timestamptz, integer, uuid);
create function private.slot_taken(
  p_clinic public.clinics, p_wanted timestamptz, p_minutes integer, p_ignore uuid, p_diaries uuid[]
) returns void
language plpgsql stable set search_path = '' as $$
begin
  perform private.refuse(format('%s on %s is not available%s. %s',
    private.local_clock(p_wanted, p_clinic.time_zone), private.local_day(p_wanted, p_clinic.time_zone),
    case when cardinality(p_diaries) = 1 then private.with_whom(p_diaries[1])
         else ' with anyone' end,
    private.nearest_free_times(p_clinic, p_wanted, p_minutes, p_ignore, p_diaries)));
end
$$;

drop function private.check_bookable(public.clinics, timestamptz, timestamptz);
-- Notice, horizon, the diary's hours, the calendar's freshness and busy time (bookings: refuse_if_taken).
create function private.check_bookable(
  p_clinic public.clinics, p_practitioner uuid, p_starts timestamptz, p_ends timestamptz, p_ignore uuid
) returns void
language plpgsql stable set search_path = '' as $$
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

drop function private.refuse_off_grid(public.clinics, timestamptz, integer, uuid);
create function private.refuse_off_grid(
  p_clinic public.clinics, p_practitioner uuid, p_starts timestamptz, p_minutes integer, p_ignore uuid
) returns void
language plpgsql stable set search_path = '' as $$
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

drop function private.refuse_if_taken(public.clinics, timestamptz, timestamptz, uuid);
create function private.refuse_if_taken(
  p_clinic public.clinics, p_practitioner uuid, p_starts timestamptz, p_ends timestamptz, p_ignore uuid
) returns void
language plpgsql stable set search_path = '' as $$
begin
  if private.diary_taken(p_clinic.id, p_practitioner, p_starts, p_ends, p_ignore) then
    perform private.slot_taken(p_clinic, p_starts, (extract(epoch from p_ends - p_starts) / 60)::integer, p_ignore,
                               array[p_practitioner]);
  end if;
end
$$;

-- Every check for one diary, in the order the answers have always come in.
create function private.check_diary(
  p_clinic public.clinics, p_practitioner uuid, p_starts timestamptz, p_minutes integer, p_ignore uuid
) returns void
language plpgsql stable set search_path = '' as $$
declare
  v_ends timestamptz := p_starts + make_interval(mins => p_minutes);
begin
  perform private.check_bookable(p_clinic, p_practitioner, p_starts, v_ends, p_ignore);
  perform private.refuse_off_grid(p_clinic, p_practitioner, p_starts, p_minutes, p_ignore);
  perform private.refuse_if_taken(p_clinic, p_practitioner, p_starts, v_ends, p_ignore);
end
$$;

-- Who a booking at p_starts goes to, under the clinic's diary lock: the named practitioner, the fair
-- choice for anyone, or the clinic (null) when it has no practitioners. Refuses when no one can.
create function private.diary_for_booking(
  p_clinic public.clinics, p_named uuid, p_anyone boolean, p_service text, p_starts timestamptz,
  p_minutes integer, p_ignore uuid
) returns uuid
language plpgsql stable set search_path = '' as $$
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

-- Tools ---------------------------------------------------------------------------------------------

create or replace function private.tool_check_availability(p_clinic public.clinics, p_args jsonb) returns text
language plpgsql stable set search_path = '' as $$
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

create or replace function private.tool_book_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) returns text
language plpgsql set search_path = '' as $$
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

create or replace function private.tool_cancel_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) returns text
language plpgsql set search_path = '' as $$
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

create or replace function private.tool_reschedule_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) returns text
language plpgsql set search_path = '' as $$
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

-- Operators -----------------------------------------------------------------------------------------

create function public.deactivate_practitioner(p_practitioner_id uuid, p_reassign boolean default false)
returns table (appointment_id uuid, reference text, starts_at timestamptz, service text, practitioner_name text,
               outcome text)
language plpgsql set search_path = '' as $$
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
revoke execute on function public.deactivate_practitioner(uuid, boolean) from public, anon, authenticated;
grant execute on function public.deactivate_practitioner(uuid, boolean) to service_role;

revoke execute on function
  private.clinic_has_practitioners(uuid),
  private.diary_hours(uuid, uuid, integer),
  private.diary_hours_text(uuid, uuid, integer),
  private.practitioner_name(uuid),
  private.diary_taken(uuid, uuid, timestamptz, timestamptz, uuid),
  private.diary_busy(public.clinics, uuid, timestamptz, timestamptz),
  private.diary_mirror_stale(public.clinics, uuid),
  private.refuse_if_diary_stale(public.clinics, uuid),
  private.diary_free_slots(public.clinics, date, integer, uuid[], uuid),
  private.offering_practitioners(public.clinics, text),
  private.choose_practitioner(public.clinics, text, timestamptz, integer, uuid),
  private.name_words(text),
  private.means_anyone(text),
  private.practitioner_roster(uuid),
  private.pick_practitioner(public.clinics, text),
  private.refuse_unless_offered(uuid, text),
  private.with_whom(uuid),
  private.nearest_free_times(public.clinics, timestamptz, integer, uuid, uuid[]),
  private.slot_taken(public.clinics, timestamptz, integer, uuid, uuid[]),
  private.check_bookable(public.clinics, uuid, timestamptz, timestamptz, uuid),
  private.refuse_off_grid(public.clinics, uuid, timestamptz, integer, uuid),
  private.refuse_if_taken(public.clinics, uuid, timestamptz, timestamptz, uuid),
  private.check_diary(public.clinics, uuid, timestamptz, integer, uuid),
  private.diary_for_booking(public.clinics, uuid, boolean, text, timestamptz, integer, uuid)
  from public;
grant execute on function
  private.clinic_has_practitioners(uuid),
  private.diary_hours(uuid, uuid, integer),
  private.diary_hours_text(uuid, uuid, integer),
  private.practitioner_name(uuid),
  private.diary_taken(uuid, uuid, timestamptz, timestamptz, uuid),
  private.diary_busy(public.clinics, uuid, timestamptz, timestamptz),
  private.diary_mirror_stale(public.clinics, uuid),
  private.refuse_if_diary_stale(public.clinics, uuid),
  private.diary_free_slots(public.clinics, date, integer, uuid[], uuid),
  private.offering_practitioners(public.clinics, text),
  private.choose_practitioner(public.clinics, text, timestamptz, integer, uuid),
  private.name_words(text),
  private.means_anyone(text),
  private.practitioner_roster(uuid),
  private.pick_practitioner(public.clinics, text),
  private.refuse_unless_offered(uuid, text),
  private.with_whom(uuid),
  private.nearest_free_times(public.clinics, timestamptz, integer, uuid, uuid[]),
  private.slot_taken(public.clinics, timestamptz, integer, uuid, uuid[]),
  private.check_bookable(public.clinics, uuid, timestamptz, timestamptz, uuid),
  private.refuse_off_grid(public.clinics, uuid, timestamptz, integer, uuid),
  private.refuse_if_taken(public.clinics, uuid, timestamptz, timestamptz, uuid),
  private.check_diary(public.clinics, uuid, timestamptz, integer, uuid),
  private.diary_for_booking(public.clinics, uuid, boolean, text, timestamptz, integer, uuid)
  to vapi_clinic, service_role;

-- deactivate_practitioner (service role) finds free colleagues as the tools do.
grant execute on function private.local_to_instant(timestamp, text), private.local_clock(timestamptz, text),
  private.local_day(timestamptz, text), private.lock_diary(uuid), private.wait_left() to service_role;

-- free_slots(p_clinic, ...) is replaced by diary_free_slots.
drop function private.free_slots(public.clinics, date, integer, uuid);
