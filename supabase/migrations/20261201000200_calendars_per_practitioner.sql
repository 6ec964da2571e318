-- Every practitioner's calendar is written and read back.
--
-- - A booking's event goes to its practitioner's calendar (the clinic's when the practitioner has none,
--   or the booking has no practitioner). appointments.event_calendar_id says which calendar holds the
--   event now (null: the clinic's, as for every event made before practitioners). claim_appointments
--   hands the daemon both: the calendar the event belongs in (calendar_id) and the one that holds it
--   (event_calendar_id). When they differ the daemon puts the event into the new calendar first, then
--   deletes it from the old one, then completes: every step repeats harmlessly (the same event id:
--   409 duplicate on insert, 404/410 on delete), so a crash or another replica in the middle leaves
--   the event in exactly one calendar once the lease comes back. complete_appointment_syncs records
--   the calendar it was written to.
-- - The busy mirror reads each calendar of a clinic: the clinic's, and the own calendar of each active
--   practitioner (and of a deactivated one while they still have bookings ahead). calendar_mirrors and
--   calendar_busy are kept per calendar; push channels too. Busy time in the clinic's calendar blocks
--   everyone; busy time in a practitioner's own calendar blocks only that practitioner. Our events are
--   recognised only in the calendar that holds them: the copy a move leaves behind for a moment is
--   neither a change nor busy time. A calendar no longer used loses its mirror, busy time and channels.
--
-- Functions replaced whole, grants beside them: appointments_start_pending, ensure_mirror_rows,
-- claim_appointments (returns event_calendar_id; calendar_id is the practitioner's), complete_appointment_syncs,
-- claim_mirror_targets, apply_calendar_changes and record_mirror_failure (a calendar each),
-- mirror_notified_since_listing, retire_channel_that_missed_changes, calendar_channel_work,
-- record_calendar_channel, record_calendar_notification, calendar_mirror_freshness.

alter table public.appointments add column event_calendar_id text check (length(event_calendar_id) between 1 and 1024);
comment on column public.appointments.event_calendar_id is
  'The calendar that holds calendar_event_id (null: the clinic''s calendar).';

alter table public.calendar_busy add column calendar_id text;
update public.calendar_busy b set calendar_id = c.calendar_id from public.clinics c where c.id = b.clinic_id;
alter table public.calendar_busy alter column calendar_id set not null;
alter table public.calendar_busy drop constraint calendar_busy_pkey;
alter table public.calendar_busy add primary key (clinic_id, calendar_id, event_id);
drop index public.calendar_busy_during;
create index calendar_busy_during on public.calendar_busy using gist (clinic_id, calendar_id, tstzrange(starts_at, ends_at, '[)'));
grant select (calendar_id) on public.calendar_busy to vapi_clinic;

alter table public.calendar_mirrors add column calendar_id text;
update public.calendar_mirrors m set calendar_id = c.calendar_id from public.clinics c where c.id = m.clinic_id;
alter table public.calendar_mirrors alter column calendar_id set not null;
alter table public.calendar_mirrors drop constraint calendar_mirrors_pkey;
alter table public.calendar_mirrors add primary key (clinic_id, calendar_id);
grant select (calendar_id) on public.calendar_mirrors to authenticated, vapi_clinic;
-- A practitioner's calendar that could never be listed is not trusted (private.diary_mirror_stale).
grant select (last_error) on public.calendar_mirrors to vapi_clinic;

create index calendar_channels_live_calendar on public.calendar_channels (clinic_id, calendar_id) where retired_at is null;
drop index public.calendar_channels_live;

create or replace function private.appointments_start_pending() returns trigger
language plpgsql set search_path = '' as $$
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

-- The calendars the mirror reads for a clinic.
create function private.clinic_calendars(p_clinic_id uuid) returns setof text
language sql stable set search_path = '' as $$
  select c.calendar_id from public.clinics c where c.id = p_clinic_id
  union
  select p.calendar_id from public.practitioners p
  where p.clinic_id = p_clinic_id and p.calendar_id is not null
    and (p.active or exists (select from public.appointments a
                             where a.practitioner_id = p.id and a.status = 'booked' and a.ends_at > now()))
$$;
revoke execute on function private.clinic_calendars(uuid) from public;
grant execute on function private.clinic_calendars(uuid) to service_role;

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

drop function public.claim_appointments(text, integer, integer, integer, integer, integer, double precision, jsonb);
create function public.claim_appointments(
  p_owner text, p_limit integer default 50, p_lease_seconds integer default 120, p_per_clinic integer default 10,
  p_account_limit integer default null, p_project_limit integer default null, p_hold_seconds double precision default 2,
  p_returns jsonb default null
) returns table (
  appointment_id uuid, clinic_id uuid, revision integer, status text, reference text, patient jsonb, service text,
  notes text, starts_at timestamptz, ends_at timestamptz, calendar_event_id text, sync_attempts integer,
  created_at timestamptz, time_zone text, calendar_id text, changed_at timestamptz, budget_key text,
  budget_entry bigint, event_generation integer, event_calendar_id text, practitioner_name text
)
language plpgsql set search_path = '' as $$
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
revoke execute on function public.claim_appointments(text, integer, integer, integer, integer, integer,
  double precision, jsonb) from public, anon, authenticated;
grant execute on function public.claim_appointments(text, integer, integer, integer, integer, integer,
  double precision, jsonb) to service_role;

-- Each completion may name the calendar the event was written to ("calendar_id").
create or replace function public.complete_appointment_syncs(p_completions jsonb)
returns table (appointment_id uuid, state text)
language plpgsql set search_path = '' as $$
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

drop function public.claim_mirror_targets(text, integer, double precision, integer, uuid);
-- p_clinic_id alone: every calendar of that clinic now; with p_calendar_id: that one; with p_only_due:
-- only that clinic's calendars that are due (a notification names a clinic).
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
revoke execute on function public.claim_mirror_targets(text, integer, double precision, integer, uuid, text, boolean)
  from public, anon, authenticated;
grant execute on function public.claim_mirror_targets(text, integer, double precision, integer, uuid, text, boolean)
  to service_role;

drop function private.mirror_notified_since_listing(uuid);
create function private.mirror_notified_since_listing(p_clinic_id uuid, p_calendar_id text) returns boolean
language sql stable set search_path = '' as $$
  select coalesce((select m.notified_at > coalesce(m.listing_started_at, '-infinity')
                   from public.calendar_mirrors m
                   where m.clinic_id = p_clinic_id and m.calendar_id = p_calendar_id), false)
$$;
revoke execute on function private.mirror_notified_since_listing(uuid, text) from public;
grant execute on function private.mirror_notified_since_listing(uuid, text) to service_role;

drop function private.retire_channel_that_missed_changes(uuid, jsonb);
create function private.retire_channel_that_missed_changes(p_clinic_id uuid, p_calendar_id text, p_events jsonb)
returns void
language sql set search_path = '' as $$
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
revoke execute on function private.retire_channel_that_missed_changes(uuid, text, jsonb) from public;
grant execute on function private.retire_channel_that_missed_changes(uuid, text, jsonb) to service_role;

drop function public.apply_calendar_changes(uuid, jsonb, text, boolean, text);
-- p_calendar_id: the calendar listed (null: the clinic's).
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
revoke execute on function public.apply_calendar_changes(uuid, jsonb, text, boolean, text, text)
  from public, anon, authenticated;
grant execute on function public.apply_calendar_changes(uuid, jsonb, text, boolean, text, text) to service_role;

drop function public.record_mirror_failure(uuid, text, text);
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
revoke execute on function public.record_mirror_failure(uuid, text, text, text) from public, anon, authenticated;
grant execute on function public.record_mirror_failure(uuid, text, text, text) to service_role;

-- One channel per calendar that is read.
create or replace function public.calendar_channel_work(
  p_owner text, p_renew_within_seconds integer, p_confirm_within_seconds integer, p_lease_seconds integer,
  p_limit integer default 50
) returns table (action text, clinic_id uuid, calendar_id text, channel_id text, resource_id text)
language plpgsql set search_path = '' as $$
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

create or replace function public.record_calendar_channel(
  p_channel_id text, p_resource_id text, p_expires_at timestamptz, p_owner text
) returns void
language plpgsql set search_path = '' as $$
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

create or replace function public.record_calendar_notification(
  p_channel_id text, p_resource_id text, p_token text, p_state text, p_message_number bigint
) returns uuid
language plpgsql set search_path = '' as $$
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

-- Per clinic, as before: its least fresh calendar speaks for it.
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
