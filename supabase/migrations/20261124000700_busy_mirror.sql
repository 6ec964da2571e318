-- The clinic's Google Calendar as a source of truth: a mirror of its busy time, and changes
-- made in Google flowing back onto appointments.
--
-- The daemon reads each connected calendar incrementally (events.list with a sync token; a
-- full listing when there is none or Google expired it) and hands the changes to
-- apply_calendar_changes(), which keeps:
-- - calendar_busy: when the clinic's other events (a doctor's lunch, a blocked afternoon) make
--   it busy: start and end only, nothing of what the event says;
-- - appointments: an appointment's event deleted in Google cancels it; moved in Google moves it
--   (the reason is recorded in change_reason). Only a change made in Google after the
--   daemon's last push counts; while the database has a change of its own waiting to be
--   pushed, the database wins and the push puts Google right.
-- Availability and booking treat busy time like booked time. A mirror that has fallen behind
-- makes them refuse rather than guess: the assistant takes a message instead.

alter table public.clinics
  add column mirror_max_age_minutes integer not null default 10
    check (mirror_max_age_minutes between 1 and 1440);
comment on column public.clinics.mirror_max_age_minutes is
  'How old the mirror of the clinic''s Google Calendar may be before the assistant stops offering times.';

alter table public.appointments
  add column change_reason text check (length(change_reason) <= 200);
comment on column public.appointments.change_reason is
  'Why the appointment last changed when the change came from outside the assistant, e.g. "deleted in Google Calendar".';

create table public.calendar_busy (
  clinic_id uuid not null references public.clinics (id) on delete cascade,
  event_id text not null check (length(event_id) between 1 and 1024),
  starts_at timestamptz not null,
  ends_at timestamptz not null,
  check (ends_at > starts_at),
  primary key (clinic_id, event_id)
);
create index calendar_busy_during on public.calendar_busy
  using gist (clinic_id, tstzrange(starts_at, ends_at, '[)'));
comment on table public.calendar_busy is
  'Busy intervals from events in the clinic''s Google Calendar that are not our appointments.';

create table public.calendar_mirrors (
  clinic_id uuid primary key references public.clinics (id) on delete cascade,
  sync_token text check (length(sync_token) <= 4096),
  last_synced_at timestamptz,
  last_full_sync_at timestamptz,
  last_error text,
  updated_at timestamptz not null default now()
);

alter table public.calendar_busy enable row level security;
alter table public.calendar_mirrors enable row level security;
revoke all on public.calendar_busy, public.calendar_mirrors from anon, authenticated, public;
grant all on public.calendar_busy, public.calendar_mirrors to service_role;

grant select on public.calendar_busy to authenticated;
grant select (clinic_id, last_synced_at, last_full_sync_at, last_error) on public.calendar_mirrors to authenticated;
create policy members_read on public.calendar_busy for select to authenticated
  using (clinic_id in (select clinic_id from public.clinic_members));
create policy members_read on public.calendar_mirrors for select to authenticated
  using (clinic_id in (select clinic_id from public.clinic_members));

grant select (clinic_id, starts_at, ends_at) on public.calendar_busy to vapi_clinic;
grant select (clinic_id, last_synced_at) on public.calendar_mirrors to vapi_clinic;
create policy own_clinic on public.calendar_busy for select to vapi_clinic
  using (clinic_id = (select private.request_clinic_id()));
create policy own_clinic on public.calendar_mirrors for select to vapi_clinic
  using (clinic_id = (select private.request_clinic_id()));

------------------------------------------------------------------------------------------
-- Availability and booking, with the mirror
------------------------------------------------------------------------------------------

-- Stale: the mirror has run for this clinic but not within mirror_max_age_minutes (the
-- daemon is down, Google is unreachable, or the grant died). Before its first run the
-- mirror holds nothing and only the database's bookings count.
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

-- As in the vapi_tool_call migration, and: busy time from the clinic's calendar is taken,
-- and nothing is offered from a stale mirror.
create or replace function private.free_slots(
  p_clinic public.clinics, p_day date, p_minutes integer, p_ignore uuid default null
) returns setof timestamptz
language plpgsql stable
set search_path = ''
as $$
begin
  perform private.refuse_if_mirror_stale(p_clinic);
  return query
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
    and not exists (
      select from public.calendar_busy b
      where b.clinic_id = p_clinic.id
        and tstzrange(b.starts_at, b.ends_at, '[)')
            && tstzrange(slot.instant, slot.instant + make_interval(mins => p_minutes), '[)'))
  order by slot.instant;
end
$$;

-- As in the vapi_tool_call migration, and: refused from a stale mirror, and when the window
-- overlaps busy time in the clinic's calendar (answered with the nearest free times, as a
-- clash with another booking is).
create or replace function private.check_bookable(p_clinic public.clinics, p_starts timestamptz, p_ends timestamptz)
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
  perform private.refuse_if_mirror_stale(p_clinic);
  if exists (select from public.calendar_busy b
             where b.clinic_id = p_clinic.id
               and tstzrange(b.starts_at, b.ends_at, '[)') && tstzrange(p_starts, p_ends, '[)')) then
    perform private.slot_taken(p_clinic, p_starts, (extract(epoch from p_ends - p_starts) / 60)::integer);
  end if;
end
$$;

------------------------------------------------------------------------------------------
-- The mirror, for the daemon (service_role)
------------------------------------------------------------------------------------------

-- The calendars to mirror: every active connection, with where its last listing ended.
create function public.calendar_mirror_targets()
returns table (clinic_id uuid, calendar_id text, time_zone text, sync_token text, last_synced_at timestamptz)
language sql stable
set search_path = ''
as $$
  select c.id, c.calendar_id, c.time_zone, m.sync_token, m.last_synced_at
  from public.calendar_connections k
  join public.clinics c on c.id = k.clinic_id
  left join public.calendar_mirrors m on m.clinic_id = c.id
  where k.status = 'active'
  order by m.last_synced_at nulls first
$$;

-- An event's start or end: a dateTime, or an all-day date (midnight in the clinic's zone).
create function private.event_instant(p_when jsonb, p_zone text) returns timestamptz
language sql stable
set search_path = ''
as $$
  select coalesce((p_when ->> 'dateTime')::timestamptz, ((p_when ->> 'date')::date)::timestamp at time zone p_zone)
$$;

-- Applies one listing of the clinic's calendar. p_events: [{"id", "status", "start", "end",
-- "transparency"?, "updated", "appointment_id"? (from our events' private extended property)}];
-- p_full: the listing is complete (not incremental), so busy time missing from it is gone.
-- Returns what changed: {"busy", "freed", "cancelled", "moved", "restored"}.
create function public.apply_calendar_changes(
  p_clinic_id uuid, p_events jsonb, p_sync_token text, p_full boolean default false
)
returns jsonb
language plpgsql volatile
set search_path = ''
as $$
declare
  v_zone text;
  v_event jsonb;
  v_busy integer := 0;
  v_freed integer := 0;
  v_cancelled integer := 0;
  v_moved integer := 0;
  v_restored integer := 0;
  v_outcome text;
  v_gone integer;
begin
  select time_zone into v_zone from public.clinics where id = p_clinic_id;
  perform private.require(v_zone is not null, format('No clinic with id %s', p_clinic_id));
  perform private.require(jsonb_typeof(p_events) = 'array', 'p_events must be a JSON array');

  for v_event in select value from jsonb_array_elements(p_events) loop
    if v_event ->> 'appointment_id' is not null
       and exists (select from public.appointments
                   where id = (v_event ->> 'appointment_id')::uuid and clinic_id = p_clinic_id) then
      v_outcome := private.apply_appointment_event(p_clinic_id, v_event, v_zone);
      v_cancelled := v_cancelled + (v_outcome = 'cancelled')::integer;
      v_moved := v_moved + (v_outcome = 'moved')::integer;
      v_restored := v_restored + (v_outcome = 'restored')::integer;
      delete from public.calendar_busy where clinic_id = p_clinic_id and event_id = v_event ->> 'id';
    elsif v_event ->> 'status' = 'cancelled' or v_event ->> 'transparency' = 'transparent'
          or private.event_instant(v_event -> 'end', v_zone) <= private.event_instant(v_event -> 'start', v_zone) then
      delete from public.calendar_busy where clinic_id = p_clinic_id and event_id = v_event ->> 'id';
      v_freed := v_freed + (case when found then 1 else 0 end);
    else
      insert into public.calendar_busy (clinic_id, event_id, starts_at, ends_at)
      values (p_clinic_id, v_event ->> 'id', private.event_instant(v_event -> 'start', v_zone),
              private.event_instant(v_event -> 'end', v_zone))
      on conflict (clinic_id, event_id) do update
        set starts_at = excluded.starts_at, ends_at = excluded.ends_at;
      v_busy := v_busy + 1;
    end if;
  end loop;

  if p_full then
    delete from public.calendar_busy b
     where b.clinic_id = p_clinic_id
       and not exists (select from jsonb_array_elements(p_events) e
                       where e ->> 'id' = b.event_id and e ->> 'status' <> 'cancelled');
    get diagnostics v_gone = row_count;
    v_freed := v_freed + v_gone;
  end if;

  -- Busy time long past is of no use to availability (incremental listings report old events too).
  delete from public.calendar_busy where clinic_id = p_clinic_id and ends_at < now() - interval '1 day';

  insert into public.calendar_mirrors (clinic_id, sync_token, last_synced_at, last_full_sync_at, last_error, updated_at)
  values (p_clinic_id, p_sync_token, now(), case when p_full then now() end, null, now())
  on conflict (clinic_id) do update
    set sync_token = excluded.sync_token, last_synced_at = now(),
        last_full_sync_at = coalesce(excluded.last_full_sync_at, public.calendar_mirrors.last_full_sync_at),
        last_error = null, updated_at = now();
  return jsonb_build_object('busy', v_busy, 'freed', v_freed, 'cancelled', v_cancelled, 'moved', v_moved,
                            'restored', v_restored);
end
$$;

-- One of our appointments' events as Google has it now. A change counts only if it was made
-- in Google after the daemon's last push (event updated > synced_at), the database has no
-- change of its own waiting (synced at its current revision), and the event is not a late
-- write of ours for an older revision (its private "revision" property): then deleted -> cancelled,
-- moved -> moved, both marked synced, as the calendar already shows them. A move onto another
-- booking cannot be stored; the database keeps its time and the event is put back.
create function private.apply_appointment_event(p_clinic_id uuid, p_event jsonb, p_zone text) returns text
language plpgsql volatile
set search_path = ''
as $$
declare
  v_appointment public.appointments;
  v_starts timestamptz;
  v_ends timestamptz;
begin
  select * into v_appointment from public.appointments
  where id = (p_event ->> 'appointment_id')::uuid and clinic_id = p_clinic_id
  for update;
  if v_appointment.sync_state <> 'synced' or v_appointment.synced_revision is distinct from v_appointment.revision
     or coalesce((p_event ->> 'updated')::timestamptz, '-infinity') <= v_appointment.synced_at then
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
$$;

-- The change came from the calendar, so the calendar already has this revision.
create function private.mark_synced_from_calendar(p_appointment_id uuid) returns void
language sql volatile
set search_path = ''
as $$
  update public.appointments
     set sync_state = 'synced', synced_revision = revision, synced_at = now(), sync_attempts = 0,
         next_attempt_at = null, lease_owner = null, lease_expires_at = null, last_sync_error = null
   where id = p_appointment_id
$$;

create function public.record_mirror_failure(p_clinic_id uuid, p_error text)
returns void
language sql volatile
set search_path = ''
as $$
  insert into public.calendar_mirrors (clinic_id, last_error, updated_at)
  values (p_clinic_id, left(p_error, 500), now())
  on conflict (clinic_id) do update set last_error = excluded.last_error, updated_at = now()
$$;

-- How fresh each connected clinic's mirror is (for metrics and verify).
create function public.calendar_mirror_freshness()
returns table (clinic_id uuid, clinic_name text, last_synced_at timestamptz, age_seconds double precision,
               stale boolean, last_error text)
language sql stable
set search_path = ''
as $$
  select c.id, c.name, m.last_synced_at, extract(epoch from now() - m.last_synced_at)::double precision,
         coalesce(m.last_synced_at < now() - make_interval(mins => c.mirror_max_age_minutes), false),
         m.last_error
  from public.calendar_connections k
  join public.clinics c on c.id = k.clinic_id
  left join public.calendar_mirrors m on m.clinic_id = c.id
  order by c.name, c.id
$$;

revoke execute on all functions in schema private from public;
grant execute on function private.refuse_if_mirror_stale(public.clinics) to vapi_clinic;
grant execute on function private.event_instant(jsonb, text) to service_role;
grant execute on function private.apply_appointment_event(uuid, jsonb, text) to service_role;
grant execute on function private.mark_synced_from_calendar(uuid) to service_role;

revoke execute on function
  public.calendar_mirror_targets(),
  public.apply_calendar_changes(uuid, jsonb, text, boolean),
  public.record_mirror_failure(uuid, text),
  public.calendar_mirror_freshness()
  from public, anon, authenticated;
grant execute on function
  public.calendar_mirror_targets(),
  public.apply_calendar_changes(uuid, jsonb, text, boolean),
  public.record_mirror_failure(uuid, text),
  public.calendar_mirror_freshness()
  to service_role;
