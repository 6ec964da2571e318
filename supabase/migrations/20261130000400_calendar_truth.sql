-- The calendar as the truth, at scale: events recognised by id, refused restores, one replica
-- mirroring a calendar at a time, and Google's push notifications.
--
-- - Every event id that was ever ours is recognisable without a lookup: the id of an appointment's
--   event is base32hex of its uuid (26 characters), followed for generation g > 0 by the number g.
--   Google may list a deleted event with only its id and status; the daemon decodes the id, and a
--   deleted event that is the appointment's current one (calendar_event_id), with nothing of the
--   database's own waiting, cancels the appointment as a deletion made in Google does. Deletions
--   of an earlier generation's event change nothing.
-- - When Google refuses to bring a deleted event back (403 forbidden, or 409), only a new id brings
--   the appointment back to the calendar: next_event_generation() raises the row's event_generation,
--   under the claim's lease, before the daemon inserts the event under the new id, so a crash or
--   another replica repeats the same insert (409 duplicate: confirmed with a get), never a second event.
-- - The mirror is leased, as the sync queue is: claim_mirror_targets() hands each calendar that is due
--   (never listed, listed longer ago than the interval, or notified of a change since its last listing
--   began) to one replica at a time; apply_calendar_changes() and record_mirror_failure() end the lease,
--   and say when a notification arrived meanwhile, so the holder lists again (one coalesced listing).
--   Replicas add capacity, not Google requests.
--
-- - Push notifications: one events.watch channel per connected calendar (calendar_channels; its secret
--   token stored only as a SHA-256 hash). record_calendar_notification() accepts a notification only
--   with a live channel's id, its resource id, its token and a message number it has not seen, and
--   marks the calendar notified (due for a listing). calendar_channel_work() says which calendars
--   need a channel (none, near its expiration, never confirmed by Google's "sync" message, or lost:
--   a listing found changes Google never announced) and which replaced channels to stop; a
--   connection that changes (reconnected, needs re-authorisation, removed) retires its channels.
--
-- Functions replaced whole, grants beside them: claim_appointments (returns event_generation),
-- apply_appointment_event, apply_calendar_changes and record_mirror_failure (new p_owner argument),
-- calendar_mirror_targets (replaced by claim_mirror_targets).

alter table public.appointments
  add column event_generation integer not null default 0 check (event_generation between 0 and 1000);
comment on column public.appointments.event_generation is
  'Which of the appointment''s event ids is current: 0 is base32hex of its id, g > 0 the same followed by g '
  '(a new id, after Google refused to restore a deleted event).';

alter table public.calendar_mirrors
  add column lease_owner text check (length(lease_owner) <= 200),
  add column lease_expires_at timestamptz,
  add column listing_started_at timestamptz,
  add column notified_at timestamptz;
comment on column public.calendar_mirrors.notified_at is
  'When Google last notified a change of this calendar (push); a listing that began before it is listed again.';

drop function public.claim_appointments(text, integer, integer, integer, integer, integer, double precision, jsonb);

create function public.claim_appointments(
  p_owner text, p_limit integer default 50, p_lease_seconds integer default 120, p_per_clinic integer default 10,
  p_account_limit integer default null, p_project_limit integer default null,
  p_hold_seconds double precision default 2, p_returns jsonb default null
)
returns table (
  appointment_id uuid, clinic_id uuid, revision integer, status text, reference text, patient jsonb,
  service text, notes text, starts_at timestamptz, ends_at timestamptz, calendar_event_id text,
  sync_attempts integer, created_at timestamptz, time_zone text, calendar_id text, changed_at timestamptz,
  budget_key text, budget_entry bigint, event_generation integer
)
language plpgsql volatile
set search_path = ''
as $$
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
         k.time_zone, k.calendar_id, c.updated_at, r.budget_key, v.id, c.event_generation
  from claimed c
  join public.clinics k on k.id = c.clinic_id
  join ranked r on r.id = c.id
  left join reserved v on v.budget_key = r.budget_key
  order by c.starts_at;
end
$$;


revoke execute on function public.claim_appointments(text, integer, integer, integer, integer, integer,
                                                     double precision, jsonb)
  from public, anon, authenticated;
grant execute on function public.claim_appointments(text, integer, integer, integer, integer, integer,
                                                    double precision, jsonb)
  to service_role;

-- Google refused to restore the appointment's deleted event: its next event id is current from now on.
-- Only the lease holder may; the new generation, or null when the lease was lost.
create function public.next_event_generation(p_appointment_id uuid, p_owner text)
returns integer
language plpgsql volatile
set search_path = ''
as $$
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

revoke execute on function public.next_event_generation(uuid, text) from public, anon, authenticated;
grant execute on function public.next_event_generation(uuid, text) to service_role;

-- As in the busy_mirror migration, and: a deletion Google lists minimally (no `updated`) counts when it
-- is the appointment's current event and nothing of the database's own is waiting (it happened after
-- our last push, which made the event confirmed); events of earlier generations change nothing.
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

revoke execute on function private.apply_appointment_event(uuid, jsonb, text) from public;
grant execute on function private.apply_appointment_event(uuid, jsonb, text) to service_role;

drop function public.calendar_mirror_targets(uuid);

-- A calendar_mirrors row for every active connection (or p_clinic_id's) that has none yet: where the
-- mirror's and the channels' leases live. Only the missing rows are inserted, not every one tried again.
create function private.ensure_mirror_rows(p_clinic_id uuid) returns void
language sql volatile
set search_path = ''
as $$
  insert into public.calendar_mirrors (clinic_id)
  select k.clinic_id from public.calendar_connections k
  where k.status = 'active' and (p_clinic_id is null or k.clinic_id = p_clinic_id)
    and not exists (select from public.calendar_mirrors m where m.clinic_id = k.clinic_id)
  on conflict (clinic_id) do nothing
$$;

revoke execute on function private.ensure_mirror_rows(uuid) from public;
grant execute on function private.ensure_mirror_rows(uuid) to service_role;

-- Lease the calendars that are due for a listing to p_owner (at most p_limit): never listed, listed
-- longer than p_interval_seconds ago, or notified of a change since their last listing began; and
-- not leased by another replica. p_clinic_id: only that clinic's, and due regardless of the interval
-- (after a push of ours, when no notifications come).
create function public.claim_mirror_targets(
  p_owner text, p_lease_seconds integer, p_interval_seconds double precision, p_limit integer default 100,
  p_clinic_id uuid default null
)
returns table (clinic_id uuid, calendar_id text, time_zone text, sync_token text, last_synced_at timestamptz)
language plpgsql volatile
set search_path = ''
as $$
begin
  perform private.require_owner(p_owner);
  perform private.require(p_lease_seconds between 5 and 3600, 'lease must be 5 to 3600 seconds');
  perform private.require(p_interval_seconds between 0.1 and 86400, 'interval must be 0.1 to 86400 seconds');
  perform private.require(p_limit between 1 and 10000, 'limit must be 1 to 10000');
  perform private.ensure_mirror_rows(p_clinic_id);
  return query
  with due as (
    select m.clinic_id
    from public.calendar_mirrors m
    join public.calendar_connections k on k.clinic_id = m.clinic_id and k.status = 'active'
    where (p_clinic_id is null or m.clinic_id = p_clinic_id)
      and (m.lease_expires_at is null or m.lease_expires_at < now() or m.lease_owner = p_owner)
      and (p_clinic_id is not null
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
     where m.clinic_id = due.clinic_id
    returning m.clinic_id, m.sync_token, m.last_synced_at
  )
  select c.id, c.calendar_id, c.time_zone, l.sync_token, l.last_synced_at
  from leased l
  join public.clinics c on c.id = l.clinic_id
  order by l.last_synced_at nulls first;
end
$$;

revoke execute on function public.claim_mirror_targets(text, integer, double precision, integer, uuid)
  from public, anon, authenticated;
grant execute on function public.claim_mirror_targets(text, integer, double precision, integer, uuid) to service_role;


-- Whether Google notified a change of the calendar after its last listing began (list it again).
create function private.mirror_notified_since_listing(p_clinic_id uuid) returns boolean
language sql stable
set search_path = ''
as $$
  select coalesce((select m.notified_at > coalesce(m.listing_started_at, '-infinity')
                   from public.calendar_mirrors m where m.clinic_id = p_clinic_id), false)
$$;

revoke execute on function private.mirror_notified_since_listing(uuid) from public;
grant execute on function private.mirror_notified_since_listing(uuid) to service_role;

drop function public.apply_calendar_changes(uuid, jsonb, text, boolean);

-- As in the busy_mirror migration, and: ends p_owner's lease on the calendar's mirror; the result also
-- says whether a notification arrived while it was listed ("again": list it once more).
-- Applies one listing of the clinic's calendar. p_events: [{"id", "status", "start"?, "end"?,
-- "transparency"?, "updated"?, "appointment_id"? (decoded from our event ids), "revision"?}];
-- p_full: the listing is complete (not incremental), so busy time missing from it is gone.
-- Returns what changed: {"busy", "freed", "cancelled", "moved", "restored", "again"}.
create function public.apply_calendar_changes(
  p_clinic_id uuid, p_events jsonb, p_sync_token text, p_full boolean default false, p_owner text default null
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
  if not p_full and jsonb_array_length(p_events) > 0 then
    perform private.retire_channel_that_missed_changes(p_clinic_id, p_events);
  end if;

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
        last_error = null, updated_at = now(),
        lease_owner = case when public.calendar_mirrors.lease_owner = p_owner then null
                           else public.calendar_mirrors.lease_owner end,
        lease_expires_at = case when public.calendar_mirrors.lease_owner = p_owner then null
                                else public.calendar_mirrors.lease_expires_at end;
  return jsonb_build_object('busy', v_busy, 'freed', v_freed, 'cancelled', v_cancelled, 'moved', v_moved,
                            'restored', v_restored, 'again', private.mirror_notified_since_listing(p_clinic_id));
end
$$;

revoke execute on function public.apply_calendar_changes(uuid, jsonb, text, boolean, text)
  from public, anon, authenticated;
grant execute on function public.apply_calendar_changes(uuid, jsonb, text, boolean, text) to service_role;

drop function public.record_mirror_failure(uuid, text);

-- The listing failed: recorded (verify and the metrics show it), and p_owner's lease ends.
create function public.record_mirror_failure(p_clinic_id uuid, p_error text, p_owner text default null)
returns void
language sql volatile
set search_path = ''
as $$
  insert into public.calendar_mirrors (clinic_id, last_error, updated_at)
  values (p_clinic_id, left(p_error, 500), now())
  on conflict (clinic_id) do update
    set last_error = excluded.last_error, updated_at = now(),
        lease_owner = case when public.calendar_mirrors.lease_owner = p_owner then null
                           else public.calendar_mirrors.lease_owner end,
        lease_expires_at = case when public.calendar_mirrors.lease_owner = p_owner then null
                                else public.calendar_mirrors.lease_expires_at end
$$;

revoke execute on function public.record_mirror_failure(uuid, text, text) from public, anon, authenticated;
grant execute on function public.record_mirror_failure(uuid, text, text) to service_role;

------------------------------------------------------------------------------------------
-- Push notifications: a watch channel per connected calendar
------------------------------------------------------------------------------------------

create table public.calendar_channels (
  id text primary key check (id ~ '^[A-Za-z0-9/_+=-]{1,64}$'),
  clinic_id uuid not null references public.clinics (id) on delete cascade,
  calendar_id text not null check (length(calendar_id) between 1 and 1024),
  resource_id text check (length(resource_id) between 1 and 1024),
  token_hash text not null check (token_hash ~ '^[0-9a-f]{64}$'),
  expires_at timestamptz not null,
  created_at timestamptz not null default now(),
  confirmed_at timestamptz,
  last_message_number bigint,
  retired_at timestamptz,
  retired_because text check (length(retired_because) <= 200),
  stopped_at timestamptz
);
create index calendar_channels_live on public.calendar_channels (clinic_id) where retired_at is null;
comment on table public.calendar_channels is
  'Google push-notification channels (events.watch) of the connected calendars; only a hash of each secret token. '
  'A channel is recorded before Google is asked for it (Google''s first message may arrive before its answer).';
alter table public.calendar_channels enable row level security;
revoke all on public.calendar_channels from anon, authenticated, public;
grant all on public.calendar_channels to service_role;

alter table public.calendar_mirrors
  add column channel_lease_owner text check (length(channel_lease_owner) <= 200),
  add column channel_lease_expires_at timestamptz;

create function private.retire_channels(p_clinic_id uuid, p_because text) returns void
language sql volatile
set search_path = ''
as $$
  update public.calendar_channels
     set retired_at = now(), retired_because = left(p_because, 200)
   where clinic_id = p_clinic_id and retired_at is null
$$;

-- An incremental listing found changes made after the channel was confirmed while no notification had
-- come since the listing before: the calendar's channel no longer delivers (Google drops channels
-- without telling anyone). A new one is made. (A listing a notification started is not judged: the
-- changes it finds may be announced by notifications still on their way.)
create function private.retire_channel_that_missed_changes(p_clinic_id uuid, p_events jsonb) returns void
language sql volatile
set search_path = ''
as $$
  update public.calendar_channels c
     set retired_at = now(), retired_because = 'lost: the calendar changed without a notification'
    from public.calendar_mirrors m
   where c.clinic_id = p_clinic_id and c.retired_at is null and c.confirmed_at is not null
     and m.clinic_id = p_clinic_id
     and coalesce(m.notified_at, '-infinity') < coalesce(m.last_synced_at, '-infinity')
     and exists (select from jsonb_array_elements(p_events) e
                 where e ->> 'updated' is not null and (e ->> 'updated')::timestamptz > c.confirmed_at)
$$;

-- A connection that is replaced (reconnected), needs re-authorisation or goes away retires its channels.
create function private.calendar_connection_changed() returns trigger
language plpgsql
set search_path = ''
as $$
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

create trigger calendar_connection_changed
  after update of status, refresh_token_encrypted, google_account or delete on public.calendar_connections
  for each row execute function private.calendar_connection_changed();

-- The daemon's channel work, leased per calendar to p_owner: calendars that need a new channel (an
-- active connection without a live one, or whose channel expires within p_renew_within_seconds; a
-- channel never confirmed by Google's "sync" message within p_confirm_within_seconds is lost) and
-- retired channels not yet stopped at Google. action: 'create' or 'stop' (the channel to stop).
create function public.calendar_channel_work(
  p_owner text, p_renew_within_seconds integer, p_confirm_within_seconds integer, p_lease_seconds integer,
  p_limit integer default 50
)
returns table (action text, clinic_id uuid, calendar_id text, channel_id text, resource_id text)
language plpgsql volatile
set search_path = ''
as $$
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
    select m.clinic_id
    from public.calendar_mirrors m
    join public.calendar_connections k on k.clinic_id = m.clinic_id and k.status = 'active'
    -- No channel that will do: a live one that is not close to expiring, or one waiting for Google's answer.
    -- A renewed calendar keeps its old channel until the new one is recorded (no notification falls between).
    where not exists (select from public.calendar_channels c
                      where c.clinic_id = m.clinic_id and c.retired_at is null
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
     where m.clinic_id = n.clinic_id
    returning m.clinic_id
  )
  select 'create', l.clinic_id, k.calendar_id, null::text, null::text
  from leased l join public.clinics k on k.id = l.clinic_id
  union all
  select 'stop', c.clinic_id, c.calendar_id, c.id, c.resource_id
  from public.calendar_channels c
  where c.retired_at is not null and c.stopped_at is null and c.resource_id is not null
  limit p_limit;
end
$$;

-- The daemon is about to ask Google for a channel (events.watch): recorded first, because Google's "sync"
-- message may arrive before Google's answer. p_token_hash: SHA-256 (hex) of the channel's secret token.
create function public.begin_calendar_channel(
  p_clinic_id uuid, p_channel_id text, p_token_hash text, p_calendar_id text
)
returns void
language sql volatile
set search_path = ''
as $$
  insert into public.calendar_channels (id, clinic_id, calendar_id, token_hash, expires_at)
  values (p_channel_id, p_clinic_id, p_calendar_id, p_token_hash, now() + interval '10 minutes')
$$;

-- Google made the channel: it is the clinic's from now on (the ones before it are retired, to be
-- stopped) and the lease on the clinic's channel work ends. A resource id other than the one Google's
-- first message named retires it instead.
create function public.record_calendar_channel(
  p_channel_id text, p_resource_id text, p_expires_at timestamptz, p_owner text
)
returns void
language plpgsql volatile
set search_path = ''
as $$
declare
  v_clinic uuid;
begin
  perform private.require(p_expires_at > now(), 'the channel has already expired');
  update public.calendar_channels
     set resource_id = coalesce(resource_id, p_resource_id), expires_at = p_expires_at
   where id = p_channel_id and retired_at is null
  returning clinic_id into v_clinic;
  perform private.require(v_clinic is not null, format('No channel %s waits for Google''s answer', p_channel_id));
  update public.calendar_channels
     set retired_at = now(),
         retired_because = case when id = p_channel_id then 'Google named another resource' else 'replaced' end
   where clinic_id = v_clinic and retired_at is null
     and (id <> p_channel_id or resource_id <> p_resource_id);
  update public.calendar_mirrors
     set channel_lease_owner = null, channel_lease_expires_at = null
   where clinic_id = v_clinic and channel_lease_owner = p_owner;
end
$$;

-- Google would not make the channel: it was never anyone's.
create function public.abandon_calendar_channel(p_channel_id text)
returns void
language sql volatile
set search_path = ''
as $$
  update public.calendar_channels
     set retired_at = now(), retired_because = 'Google did not make it', stopped_at = now()
   where id = p_channel_id and resource_id is null and retired_at is null
$$;

-- A retired channel was stopped at Google (or cannot be: it is gone, or the connection is); done.
create function public.calendar_channel_stopped(p_channel_id text)
returns void
language sql volatile
set search_path = ''
as $$
  update public.calendar_channels set stopped_at = now() where id = p_channel_id and stopped_at is null
$$;

-- A push notification as it arrived (X-Goog-Channel-ID, -Resource-ID, -Channel-Token, -Resource-State,
-- -Message-Number). Accepted only for a live channel, with its resource id and token, and a message
-- number above every one seen; then the calendar is due for a listing (unless it is the "sync" message
-- that only confirms the channel). The clinic whose calendar it was, or null (refused: nothing changed).
create function public.record_calendar_notification(
  p_channel_id text, p_resource_id text, p_token text, p_state text, p_message_number bigint
)
returns uuid
language plpgsql volatile
set search_path = ''
as $$
declare
  v_clinic uuid;
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
  returning c.clinic_id into v_clinic;
  if v_clinic is not null and p_state <> 'sync' then
    update public.calendar_mirrors set notified_at = now() where clinic_id = v_clinic;
  end if;
  return v_clinic;
end
$$;

revoke execute on function
  private.retire_channels(uuid, text),
  private.retire_channel_that_missed_changes(uuid, jsonb),
  private.calendar_connection_changed()
  from public;
grant execute on function
  private.retire_channels(uuid, text),
  private.retire_channel_that_missed_changes(uuid, jsonb)
  to service_role;
revoke execute on function
  public.calendar_channel_work(text, integer, integer, integer, integer),
  public.begin_calendar_channel(uuid, text, text, text),
  public.record_calendar_channel(text, text, timestamptz, text),
  public.abandon_calendar_channel(text),
  public.calendar_channel_stopped(text),
  public.record_calendar_notification(text, text, text, text, bigint)
  from public, anon, authenticated;
grant execute on function
  public.calendar_channel_work(text, integer, integer, integer, integer),
  public.begin_calendar_channel(uuid, text, text, text),
  public.record_calendar_channel(text, text, timestamptz, text),
  public.abandon_calendar_channel(text),
  public.calendar_channel_stopped(text),
  public.record_calendar_notification(text, text, text, text, bigint)
  to service_role;
