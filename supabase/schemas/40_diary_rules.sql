-- Diary rules: when a time can be booked, which times are free, and who a booking goes to.
--
-- - A diary is a practitioner, or the clinic as a whole (null). A clinic without active practitioners
--   has the one diary it always had, and answers exactly as it did before practitioners. A
--   practitioner's diary has their own hours (the clinic's opening hours when they have none of their
--   own); it is taken by their bookings and by bookings without a practitioner (a booking without one
--   blocks everyone), and busy in the clinic's calendar (which blocks everyone) and in their own
--   calendar (which blocks only them).
-- - A time is bookable in a diary when it has not passed, gives min_notice_minutes' notice, is within
--   booking_horizon_days, lies within one of the diary's opening periods, starts on the diary's slot
--   grid (every slot_minutes from each opening time, exactly as check_availability offers them), and
--   clashes with no booking and no busy time. Each refusal says why in a single line, and a clash or a
--   start off the grid is answered with the nearest free times that day.
-- - Google Calendar is the truth for what the clinic's staff put in their diary: busy time counts like
--   booked time. A mirror of a calendar that has fallen behind (the daemon is down, Google is
--   unreachable, or the grant died) makes availability and booking refuse rather than guess, and the
--   assistant takes a message instead. Before its first listing a calendar's mirror holds nothing and
--   only the database's bookings count; but a practitioner's calendar that could never be listed is
--   not trusted.
-- - One clinic's bookings, moves and cancellations take turns: each takes the clinic's diary lock
--   (lock_diary) before it checks anything, then looks for a clash itself. Two callers racing for one
--   slot no longer meet inside the appointments_no_overlap exclusion constraint (where two inserts
--   could deadlock, 40P01, and the loser heard "Something went wrong"): the second waits its turn, no
--   longer than the call's budget allows (private.wait_left), and hears the nearest free times at once.
-- - Anyone, fairly: among the practitioners offering the service who are free at that time (on their
--   own grid), the one with the fewest bookings that day; then the one booked least recently (never
--   first); then by name. Deterministic, and under the clinic's diary lock race-free.
-- - Speed: the tools run as vapi_clinic under row-level security, where only leakproof conditions may
--   use an index: the range overlap operator (&&) is not, plain timestamptz comparisons are. So
--   bookings and busy time are found with plain comparisons on the GiST indexes appointments_booked_span
--   and calendar_busy_span, and availability reads the day's bookings and busy time once
--   (bench/practitioners.py: an availability check for 10 practitioners went from 250-400 ms at p99,
--   2.2 s with a year of history, to 12-15 ms).
--
-- Entry points: diary_for_booking (book_appointment and reschedule_appointment, under lock_diary),
-- diary_free_slots (check_availability), choose_practitioner (also deactivate_practitioner, which
-- moves bookings to colleagues by the same fair rule), and lock_diary. The functions below go from the
-- building blocks up to diary_for_booking. Refusals are raised by private.refuse (00_foundations):
-- the tool call's error, with its savepoint rolled back.
--
-- Twice-stated rules, to be changed together: diary_free_slots restates diary_taken (the booking
-- clash) and diary_busy (busy time in the way) so as to read a day once; refuse_if_closed and
-- refuse_if_mirror_stale are the clinic-only rules check_availability still uses for a clinic without
-- practitioners, restated per diary in check_bookable and refuse_if_diary_stale.

-- The lock -------------------------------------------------------------------------------------------

-- One clinic's diary, for the rest of the transaction: bookings, moves and cancellations take
-- turns (two-key advisory lock: 1147 is this lock's class, the second key the clinic). The wait is
-- bounded by what is left of the Vapi call's budget (lock_timeout from private.wait_left, which
-- refuses with "The diary is busy" when nothing is left); outside a Vapi call, by lock_timeout.
create function private.lock_diary(p_clinic_id uuid) returns void
language plpgsql volatile
set search_path = ''
as $$
begin
  perform set_config('lock_timeout', private.wait_left(), true);
  perform pg_catalog.pg_advisory_xact_lock(1147, pg_catalog.hashtext(p_clinic_id::text));
end
$$;
revoke all on function private.lock_diary(p_clinic_id uuid) from public;
grant execute on function private.lock_diary(p_clinic_id uuid) to vapi_clinic;
grant execute on function private.lock_diary(p_clinic_id uuid) to service_role;

-- Hours ----------------------------------------------------------------------------------------------

-- A diary's opening periods on an ISO weekday (1 = Monday): a practitioner's own hours; the clinic's
-- opening hours for the clinic (null) and for a practitioner with no hours of their own on any day (one
-- with hours on other days only is off that day). Every check, free slot and answer about hours reads
-- them from here.
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
revoke all on function private.diary_hours(p_clinic_id uuid, p_practitioner uuid, p_weekday integer) from public;
grant execute on function private.diary_hours(p_clinic_id uuid, p_practitioner uuid, p_weekday integer) to vapi_clinic;
grant execute on function private.diary_hours(p_clinic_id uuid, p_practitioner uuid, p_weekday integer) to service_role;

-- A diary's hours that day as the answers say them, e.g. "09:00-12:30, 14:00-24:00" (to_char would
-- print a closing time of 24:00 as 00:00); null when the diary is closed that day.
create function private.diary_hours_text(p_clinic_id uuid, p_practitioner uuid, p_weekday integer) returns text
language sql stable set search_path = '' as $$
  select string_agg(to_char(opens, 'HH24:MI') || '-' ||
                    case when closes = time '24:00' then '24:00' else to_char(closes, 'HH24:MI') end,
                    ', ' order by opens)
  from private.diary_hours(p_clinic_id, p_practitioner, p_weekday)
$$;
revoke all on function private.diary_hours_text(p_clinic_id uuid, p_practitioner uuid, p_weekday integer) from public;
grant execute on function private.diary_hours_text(p_clinic_id uuid, p_practitioner uuid, p_weekday integer) to vapi_clinic;
grant execute on function private.diary_hours_text(p_clinic_id uuid, p_practitioner uuid, p_weekday integer) to service_role;

-- What is in a diary's way -----------------------------------------------------------------------------

-- Bookings in the way: the practitioner's own and those without a practitioner (every booking, for
-- a booking without one). p_ignore is the booking being moved. Restated in diary_free_slots.
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
revoke all on function private.diary_taken(p_clinic_id uuid, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid) from public;
grant execute on function private.diary_taken(p_clinic_id uuid, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid) to vapi_clinic;
grant execute on function private.diary_taken(p_clinic_id uuid, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid) to service_role;

-- Busy time in the way: the clinic's calendar's, and the practitioner's own calendar's (every
-- calendar's, for a booking without a practitioner). Restated in diary_free_slots.
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
revoke all on function private.diary_busy(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone) from public;
grant execute on function private.diary_busy(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone) to vapi_clinic;
grant execute on function private.diary_busy(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone) to service_role;

-- Whether a diary's busy time cannot be trusted now: a mirror of one of its calendars (the same
-- calendars as diary_busy's) last listed longer than mirror_max_age_minutes ago, or, for a
-- practitioner's own calendar, never listed and failing. The clinic's calendar before its first
-- listing is not stale: the mirror holds nothing yet and only the database's bookings count.
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
revoke all on function private.diary_mirror_stale(p_clinic public.clinics, p_practitioner uuid) from public;
grant execute on function private.diary_mirror_stale(p_clinic public.clinics, p_practitioner uuid) to vapi_clinic;
grant execute on function private.diary_mirror_stale(p_clinic public.clinics, p_practitioner uuid) to service_role;

-- Refuses (the assistant takes a message) when the diary's calendar cannot be trusted now
-- (diary_mirror_stale). For the clinic's diary (null) it asks what refuse_if_mirror_stale asks, and
-- more.
create function private.refuse_if_diary_stale(p_clinic public.clinics, p_practitioner uuid) returns void
language plpgsql stable set search_path = '' as $$
begin
  if private.diary_mirror_stale(p_clinic, p_practitioner) then
    perform private.refuse('The clinic''s calendar cannot be checked right now, so no time can be confirmed. '
                           'Please take the caller''s name and number and the clinic will call back');
  end if;
end
$$;
revoke all on function private.refuse_if_diary_stale(p_clinic public.clinics, p_practitioner uuid) from public;
grant execute on function private.refuse_if_diary_stale(p_clinic public.clinics, p_practitioner uuid) to vapi_clinic;
grant execute on function private.refuse_if_diary_stale(p_clinic public.clinics, p_practitioner uuid) to service_role;

-- Free times -------------------------------------------------------------------------------------------

-- The free start times of one day in each of the diaries (null: the clinic's), on each diary's grid.
-- The day's bookings and busy time are read once, then each slot is matched against them (the same
-- rules as diary_taken and diary_busy). The planner cannot know how many slots a day has and guesses
-- millions: with JIT on (PostgreSQL's default, Debian's 15) it spent 250 ms compiling a 1 ms query.
-- It does not ask whether a diary's calendar is stale: its callers do.
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
revoke all on function private.diary_free_slots(p_clinic public.clinics, p_day date, p_minutes integer, p_diaries uuid[], p_ignore uuid) from public;
grant execute on function private.diary_free_slots(p_clinic public.clinics, p_day date, p_minutes integer, p_diaries uuid[], p_ignore uuid) to vapi_clinic;
grant execute on function private.diary_free_slots(p_clinic public.clinics, p_day date, p_minutes integer, p_diaries uuid[], p_ignore uuid) to service_role;

-- The tail of a "not available" or "not a start time" answer: up to six free start times that day in
-- any of the diaries, the closest to the wanted time, in clock order.
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
revoke all on function private.nearest_free_times(p_clinic public.clinics, p_wanted timestamp with time zone, p_minutes integer, p_ignore uuid, p_diaries uuid[]) from public;
grant execute on function private.nearest_free_times(p_clinic public.clinics, p_wanted timestamp with time zone, p_minutes integer, p_ignore uuid, p_diaries uuid[]) to vapi_clinic;
grant execute on function private.nearest_free_times(p_clinic public.clinics, p_wanted timestamp with time zone, p_minutes integer, p_ignore uuid, p_diaries uuid[]) to service_role;

-- Refusals, one diary at a time ------------------------------------------------------------------------

-- Refuses p_wanted as "<time> on <day> is not available[ with <practitioner>| with anyone]" and the
-- nearest free times in p_diaries. Not a test, despite the name: it always refuses. Used for a clash
-- with a booking (refuse_if_taken, and the tools' exclusion_violation handlers) or with busy time
-- (check_bookable), and when no one is free (diary_for_booking).
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
revoke all on function private.slot_taken(p_clinic public.clinics, p_wanted timestamp with time zone, p_minutes integer, p_ignore uuid, p_diaries uuid[]) from public;
grant execute on function private.slot_taken(p_clinic public.clinics, p_wanted timestamp with time zone, p_minutes integer, p_ignore uuid, p_diaries uuid[]) to vapi_clinic;
grant execute on function private.slot_taken(p_clinic public.clinics, p_wanted timestamp with time zone, p_minutes integer, p_ignore uuid, p_diaries uuid[]) to service_role;

-- Notice, horizon, the diary's hours, the calendar's freshness and busy time (bookings: refuse_if_taken).
-- Refuses a window the diary cannot take: past or too soon, beyond the booking horizon, on a day the
-- diary is closed, not within one of its opening periods, from a stale calendar, or overlapping busy
-- time (answered with the nearest free times, as a clash with another booking is).
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
revoke all on function private.check_bookable(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid) from public;
grant execute on function private.check_bookable(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid) to vapi_clinic;
grant execute on function private.check_bookable(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid) to service_role;

-- Start times are the diary's slot grid: every slot_minutes from each of its opening times, as
-- check_availability offers them. Anything else (14:05 on a 15-minute grid) is refused with the nearest
-- free times.
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
revoke all on function private.refuse_off_grid(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) from public;
grant execute on function private.refuse_off_grid(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) to vapi_clinic;
grant execute on function private.refuse_off_grid(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) to service_role;

-- Refuses a window that overlaps another booking in the diary's way (diary_taken; p_ignore is the one
-- being moved) with the nearest free times. Holding the diary, this sees every booking that can clash.
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
revoke all on function private.refuse_if_taken(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid) from public;
grant execute on function private.refuse_if_taken(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid) to vapi_clinic;
grant execute on function private.refuse_if_taken(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_ends timestamp with time zone, p_ignore uuid) to service_role;

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
revoke all on function private.check_diary(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) from public;
grant execute on function private.check_diary(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) to vapi_clinic;
grant execute on function private.check_diary(p_clinic public.clinics, p_practitioner uuid, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) to service_role;

-- Refuses a practitioner who does not offer the service, saying what they do offer (services null:
-- they offer every service).
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
revoke all on function private.refuse_unless_offered(p_practitioner uuid, p_service text) from public;
grant execute on function private.refuse_unless_offered(p_practitioner uuid, p_service text) to vapi_clinic;
grant execute on function private.refuse_unless_offered(p_practitioner uuid, p_service text) to service_role;

-- Who a booking goes to --------------------------------------------------------------------------------

-- Anyone, fairly (see the header): of the practitioners offering the service who are free at p_starts
-- and whose calendars can be trusted, the one with the fewest bookings that day, then the one booked
-- least recently (never first), then by name. Null when no one is free.
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
revoke all on function private.choose_practitioner(p_clinic public.clinics, p_service text, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) from public;
grant execute on function private.choose_practitioner(p_clinic public.clinics, p_service text, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) to vapi_clinic;
grant execute on function private.choose_practitioner(p_clinic public.clinics, p_service text, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) to service_role;

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
revoke all on function private.diary_for_booking(p_clinic public.clinics, p_named uuid, p_anyone boolean, p_service text, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) from public;
grant execute on function private.diary_for_booking(p_clinic public.clinics, p_named uuid, p_anyone boolean, p_service text, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) to vapi_clinic;
grant execute on function private.diary_for_booking(p_clinic public.clinics, p_named uuid, p_anyone boolean, p_service text, p_starts timestamp with time zone, p_minutes integer, p_ignore uuid) to service_role;

-- The clinic's diary alone, for check_availability in a clinic without practitioners ------------------

-- The clinic is closed that day: no opening hours on its weekday. The same rule and words as
-- check_bookable's first hours check for the clinic's diary (null).
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
revoke all on function private.refuse_if_closed(p_clinic_id uuid, p_day date) from public;
grant execute on function private.refuse_if_closed(p_clinic_id uuid, p_day date) to vapi_clinic;

-- Stale: the mirror has run for this clinic but not within mirror_max_age_minutes (the
-- daemon is down, Google is unreachable, or the grant died). Before its first run the
-- mirror holds nothing and only the database's bookings count. refuse_if_diary_stale(p_clinic, null)
-- asks the same of every calendar of the clinic and also refuses one never listed and failing.
create function private.refuse_if_mirror_stale(p_clinic public.clinics) returns void
language plpgsql stable
set search_path = ''
as $$
begin
  if exists (select from public.calendar_mirrors m
             where m.clinic_id = p_clinic.id
               and m.last_synced_at < now() - make_interval(mins => p_clinic.mirror_max_age_minutes)) then
    perform private.refuse('The clinic''s calendar cannot be checked right now, so no time can be confirmed. '
                           'Please take the caller''s name and number and the clinic will call back');
  end if;
end
$$;
revoke all on function private.refuse_if_mirror_stale(p_clinic public.clinics) from public;
grant execute on function private.refuse_if_mirror_stale(p_clinic public.clinics) to vapi_clinic;
