-- The calendar mirror: the clinic's Google Calendars read back, as a source of truth.
--
-- The daemon lists each calendar incrementally (events.list with a sync token; a full listing when there
-- is none or Google expired it) and hands the changes to apply_calendar_changes(), which keeps:
-- - calendar_busy: when the clinic's other events (a doctor's lunch, a blocked afternoon) make a calendar
--   busy: start and end only, nothing of what the event says. Availability and booking treat busy time
--   like booked time (40_diary_rules.sql); a mirror that has fallen behind makes them refuse rather than
--   guess, and the assistant takes a message instead.
-- - appointments: an appointment's event deleted in Google cancels it; moved in Google moves it (the
--   reason goes in change_reason). Only a change made in Google after the daemon's last push counts;
--   while the database has a change of its own waiting to be pushed, the database wins and the push puts
--   Google right.
--
-- Our events are recognised by id, without a lookup: the id of an appointment's event is base32hex of its
-- uuid, followed for generation g > 0 by the number g (65_sync_queue.sql, next_event_generation). Google
-- may list a deleted event with only its id and status; the daemon decodes the id, and a deletion of the
-- appointment's current event, with nothing of the database's own waiting, cancels the appointment.
-- Deletions of an earlier generation's event change nothing.
--
-- The calendars read (clinic_calendars): the clinic's, and the own calendar of each active practitioner
-- (and of a deactivated one while they still have bookings ahead). Mirror rows and busy time are kept
-- per calendar: busy time in the clinic's calendar blocks everyone, busy time in a practitioner's own
-- calendar only that practitioner. Our events count only in the calendar that holds them: the copy a
-- move between calendars leaves behind for a moment is neither a change nor busy time. A calendar no
-- longer used loses its mirror row, its busy time and its push channels.
--
-- The mirror is leased, as the sync queue is: claim_mirror_targets() hands each calendar that is due
-- (never listed, listed longer ago than the interval, or notified of a change since its last listing
-- began: 75_push_channels.sql) to one replica at a time; apply_calendar_changes() and
-- record_mirror_failure() end the lease, and say when a notification arrived meanwhile, so the holder
-- lists again (one coalesced listing). Replicas add capacity, not Google requests.
--
-- Everything here is the daemon's (service_role); staff (authenticated) and the assistant (vapi_clinic)
-- read their own clinic's busy time and mirror freshness under row-level security.

create table public.calendar_mirrors (
  clinic_id uuid not null references public.clinics (id) on delete cascade,
  sync_token text check (length(sync_token) <= 4096),
  last_synced_at timestamptz,
  last_full_sync_at timestamptz,
  last_error text,
  updated_at timestamptz not null default now(),
  -- the listing's lease (claim_mirror_targets), and when the listing that holds it began
  lease_owner text check (length(lease_owner) <= 200),
  lease_expires_at timestamptz,
  listing_started_at timestamptz,
  notified_at timestamptz,
  -- the lease on the calendar's channel work (75_push_channels.sql, calendar_channel_work)
  channel_lease_owner text check (length(channel_lease_owner) <= 200),
  channel_lease_expires_at timestamptz,
  calendar_id text not null,
  primary key (clinic_id, calendar_id)
);
comment on column public.calendar_mirrors.notified_at is
  'When Google last notified a change of this calendar (push); a listing that began before it is listed again.';

alter table public.calendar_mirrors enable row level security;
create policy members_read on public.calendar_mirrors for select to authenticated
  using (clinic_id in (select clinic_id from public.clinic_members));
create policy own_clinic on public.calendar_mirrors for select to vapi_clinic
  using (clinic_id = (select private.request_clinic_id()));

-- Supabase's default privileges give new tables to every API role: take them back, then grant each
-- what it reads.
revoke all on table public.calendar_mirrors from anon, authenticated, service_role;
grant all on table public.calendar_mirrors to service_role;
grant select (clinic_id, calendar_id, last_synced_at, last_full_sync_at, last_error)
  on table public.calendar_mirrors to authenticated;
grant select (clinic_id, calendar_id, last_synced_at) on table public.calendar_mirrors to vapi_clinic;
-- A practitioner's calendar that could never be listed is not trusted (private.diary_mirror_stale).
grant select (last_error) on table public.calendar_mirrors to vapi_clinic;

create table public.calendar_busy (
  clinic_id uuid not null references public.clinics (id) on delete cascade,
  event_id text not null check (length(event_id) between 1 and 1024),
  starts_at timestamptz not null,
  ends_at timestamptz not null,
  calendar_id text not null,
  check (ends_at > starts_at),
  primary key (clinic_id, calendar_id, event_id)
);
comment on table public.calendar_busy is
  'Busy intervals from events in the clinic''s Google Calendar that are not our appointments.';

-- A calendar's busy time by overlap (&&).
create index calendar_busy_during on public.calendar_busy
  using gist (clinic_id, calendar_id, tstzrange(starts_at, ends_at, '[)'));
-- The tools run as vapi_clinic under row-level security, where only leakproof conditions may use an
-- index: the range overlap operator (&&) is not, plain timestamptz comparisons are. Without this index
-- (and appointments_booked_span, 30_appointments.sql) every check read the clinic's whole history
-- (bench/practitioners.py: p99 of an availability check for 10 practitioners 250-400 ms, 2.2 s with a
-- year of history; with them and the day read once, 12-15 ms).
create index calendar_busy_span on public.calendar_busy using gist (clinic_id, starts_at, ends_at);

alter table public.calendar_busy enable row level security;
create policy members_read on public.calendar_busy for select to authenticated
  using (clinic_id in (select clinic_id from public.clinic_members));
create policy own_clinic on public.calendar_busy for select to vapi_clinic
  using (clinic_id = (select private.request_clinic_id()));

revoke all on table public.calendar_busy from anon, authenticated, service_role;
grant all on table public.calendar_busy to service_role;
grant select on table public.calendar_busy to authenticated;
grant select (clinic_id, calendar_id, starts_at, ends_at) on table public.calendar_busy to vapi_clinic;

------------------------------------------------------------------------------------------------------------
-- Which calendars are listed, and by whom
------------------------------------------------------------------------------------------------------------

-- Lease the calendars that are due for a listing to p_owner (at most p_limit, those notified of a change
-- first, then the least fresh): never listed, listed longer than p_interval_seconds ago, or notified of a
-- change since their last listing began; and not leased by another replica. p_clinic_id alone: every
-- calendar of that clinic, due or not (after a push of ours, when no notifications come); with
-- p_calendar_id: that one; with p_only_due: only that clinic's calendars that are due (a notification
-- names a clinic). The mirror rows are first brought in line with the calendars in use.
create function public.claim_mirror_targets(
  p_owner text, p_lease_seconds integer, p_interval_seconds double precision, p_limit integer default 100,
  p_clinic_id uuid default null, p_calendar_id text default null, p_only_due boolean default false
) returns table (clinic_id uuid, calendar_id text, time_zone text, sync_token text, last_synced_at timestamptz)
language plpgsql set search_path = '' as $$
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
revoke all on function public.claim_mirror_targets(p_owner text, p_lease_seconds integer, p_interval_seconds double precision, p_limit integer, p_clinic_id uuid, p_calendar_id text, p_only_due boolean) from public, anon, authenticated, service_role;
grant execute on function public.claim_mirror_targets(p_owner text, p_lease_seconds integer, p_interval_seconds double precision, p_limit integer, p_clinic_id uuid, p_calendar_id text, p_only_due boolean) to service_role;

-- A calendar_mirrors row for every calendar in use of every active connection (or of p_clinic_id's)
-- that has none yet: where the mirror's and the channels' leases live. Only the missing rows are
-- inserted, not every one tried again. A calendar no longer used (a practitioner moved to another, or
-- left with nothing booked ahead) loses its row, its busy time and its live channels.
create or replace function private.ensure_mirror_rows(p_clinic_id uuid) returns void
language plpgsql set search_path = '' as $$
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
revoke all on function private.ensure_mirror_rows(p_clinic_id uuid) from public;
grant execute on function private.ensure_mirror_rows(p_clinic_id uuid) to service_role;

-- The calendars the mirror reads for a clinic: the clinic's own, and the own calendar of each active
-- practitioner, and of a deactivated one while they still have bookings ahead (those are still synced).
create function private.clinic_calendars(p_clinic_id uuid) returns setof text
language sql stable set search_path = '' as $$
  select c.calendar_id from public.clinics c where c.id = p_clinic_id
  union
  select p.calendar_id from public.practitioners p
  where p.clinic_id = p_clinic_id and p.calendar_id is not null
    and (p.active or exists (select from public.appointments a
                             where a.practitioner_id = p.id and a.status = 'booked' and a.ends_at > now()))
$$;
revoke all on function private.clinic_calendars(p_clinic_id uuid) from public;
grant execute on function private.clinic_calendars(p_clinic_id uuid) to service_role;

------------------------------------------------------------------------------------------------------------
-- A listing, applied
------------------------------------------------------------------------------------------------------------

-- Applies one listing of one of the clinic's calendars (p_calendar_id; null: the clinic's) and ends
-- p_owner's lease on its mirror. p_events: [{"id", "status", "start"?, "end"?, "transparency"?,
-- "updated"?, "appointment_id"? (decoded from our event ids), "revision"?}]; p_full: the listing is
-- complete (not incremental), so busy time missing from it is gone. Our events speak for their
-- appointments (apply_appointment_event) and are never busy time; any other event is busy time unless
-- it is cancelled, transparent (shown as free) or ends no later than it starts. Busy time long past is
-- dropped. An incremental listing with changes no notification announced retires the calendar's
-- channel (private.retire_channel_that_missed_changes, 75_push_channels.sql).
-- Returns what changed: {"busy", "freed", "cancelled", "moved", "restored", "again"}; "again": a
-- notification arrived while it was listed, so list it once more.
create function public.apply_calendar_changes(
  p_clinic_id uuid, p_events jsonb, p_sync_token text, p_full boolean default false, p_owner text default null,
  p_calendar_id text default null
) returns jsonb
language plpgsql set search_path = '' as $$
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
revoke all on function public.apply_calendar_changes(p_clinic_id uuid, p_events jsonb, p_sync_token text, p_full boolean, p_owner text, p_calendar_id text) from public, anon, authenticated, service_role;
grant execute on function public.apply_calendar_changes(p_clinic_id uuid, p_events jsonb, p_sync_token text, p_full boolean, p_owner text, p_calendar_id text) to service_role;

-- One of our appointments' events as Google has it now, from the calendar that holds it. A change counts
-- only if the event is the appointment's current one (calendar_event_id: events of earlier generations
-- change nothing), the database has no change of its own waiting (synced at its current revision), the
-- change was made in Google after the daemon's last push (event updated > synced_at; a deletion Google
-- lists minimally, without `updated`, counts too: our last push made the event confirmed, so it happened
-- after), and the event is not a late write of ours for an older revision (its private "revision"
-- property). Then deleted -> cancelled, moved -> moved, both marked synced, as the calendar already shows
-- them. A move onto another booking cannot be stored; the database keeps its time and the event is put
-- back. Returns 'unchanged', 'cancelled', 'moved' or 'restored' (the database's version is pushed again).
create or replace function private.apply_appointment_event(p_clinic_id uuid, p_event jsonb, p_zone text) returns text
language plpgsql volatile
set search_path = ''
as $$
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
$$;
revoke all on function private.apply_appointment_event(p_clinic_id uuid, p_event jsonb, p_zone text) from public;
grant execute on function private.apply_appointment_event(p_clinic_id uuid, p_event jsonb, p_zone text) to service_role;

-- The change came from the calendar, so the calendar already has this revision: synced, with the
-- attempts, lease and error of the sync queue cleared.
create function private.mark_synced_from_calendar(p_appointment_id uuid) returns void
language sql volatile
set search_path = ''
as $$
  update public.appointments
     set sync_state = 'synced', synced_revision = revision, synced_at = now(), sync_attempts = 0,
         next_attempt_at = null, lease_owner = null, lease_expires_at = null, last_sync_error = null
   where id = p_appointment_id
$$;
revoke all on function private.mark_synced_from_calendar(p_appointment_id uuid) from public;
grant execute on function private.mark_synced_from_calendar(p_appointment_id uuid) to service_role;

-- An event's start or end: a dateTime, or an all-day date (midnight in the clinic's zone).
create function private.event_instant(p_when jsonb, p_zone text) returns timestamptz
language sql stable
set search_path = ''
as $$
  select coalesce((p_when ->> 'dateTime')::timestamptz, ((p_when ->> 'date')::date)::timestamp at time zone p_zone)
$$;
revoke all on function private.event_instant(p_when jsonb, p_zone text) from public;
grant execute on function private.event_instant(p_when jsonb, p_zone text) to service_role;

-- Whether Google notified a change of the calendar after its last listing began (list it again): the
-- "again" of apply_calendar_changes.
create function private.mirror_notified_since_listing(p_clinic_id uuid, p_calendar_id text) returns boolean
language sql stable set search_path = '' as $$
  select coalesce((select m.notified_at > coalesce(m.listing_started_at, '-infinity')
                   from public.calendar_mirrors m
                   where m.clinic_id = p_clinic_id and m.calendar_id = p_calendar_id), false)
$$;
revoke all on function private.mirror_notified_since_listing(p_clinic_id uuid, p_calendar_id text) from public;
grant execute on function private.mirror_notified_since_listing(p_clinic_id uuid, p_calendar_id text) to service_role;

-- The listing failed: recorded on the calendar's mirror (verify and the metrics show it), and p_owner's
-- lease ends. p_calendar_id: the calendar listed (null: the clinic's).
create function public.record_mirror_failure(
  p_clinic_id uuid, p_error text, p_owner text default null, p_calendar_id text default null
) returns void
language sql set search_path = '' as $$
  insert into public.calendar_mirrors as m (clinic_id, calendar_id, last_error, updated_at)
  select c.id, coalesce(p_calendar_id, c.calendar_id), left(p_error, 500), now()
  from public.clinics c where c.id = p_clinic_id
  on conflict (clinic_id, calendar_id) do update
    set last_error = excluded.last_error, updated_at = now(),
        lease_owner = case when m.lease_owner = p_owner then null else m.lease_owner end,
        lease_expires_at = case when m.lease_owner = p_owner then null else m.lease_expires_at end
$$;
revoke all on function public.record_mirror_failure(p_clinic_id uuid, p_error text, p_owner text, p_calendar_id text) from public, anon, authenticated, service_role;
grant execute on function public.record_mirror_failure(p_clinic_id uuid, p_error text, p_owner text, p_calendar_id text) to service_role;

------------------------------------------------------------------------------------------------------------
-- Seen from outside
------------------------------------------------------------------------------------------------------------

-- How fresh each connected clinic's mirror is (for metrics and verify). Per clinic: its least fresh
-- calendar speaks for it, and its calendars' errors are joined.
create or replace function public.calendar_mirror_freshness()
returns table (clinic_id uuid, clinic_name text, last_synced_at timestamptz, age_seconds double precision,
               stale boolean, last_error text)
language sql stable set search_path = '' as $$
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
revoke all on function public.calendar_mirror_freshness() from public, anon, authenticated, service_role;
grant execute on function public.calendar_mirror_freshness() to service_role;
