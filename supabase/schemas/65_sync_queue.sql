-- The calendar sync queue: how an appointment's changes reach Google Calendar. The queue is the
-- appointments table itself (its sync columns and their indexes are in 30_appointments.sql). This
-- file has the doorbells that wake the daemon and the functions it calls (over Supabase REST as
-- service_role, or directly over SQL) to move a row between states.
--
--   pending --claim--> in_flight --complete--> synced
--                          |  \--end attempt--> pending (later) | failed (operator re-queues)
--                          |                     | parked (clinic must reconnect Google; resumes by itself)
--                          \--lease expires (crashed replica)--> claimable again
--
-- - The row is the truth about what must happen. `revision` counts the changes the calendar must
--   hear about, and the daemon records which revision it pushed, so a change made during a push is
--   not lost: the completion sends the row back to pending.
-- - Every transition out of in_flight names the lease owner, so a replica whose lease ran out
--   cannot overwrite the work of the one that took over ("lease_lost").
-- - No clinic's backlog delays another's. A claim takes the heads of every clinic's queue, ranked
--   within their clinic, by rank then due time. It spends the shared Google budget
--   (80_google_budget.sql): a clinic whose account, or the project, has no budget left is not
--   claimed at all, so no worker waits on one clinic's quota while another clinic has work.
-- - A row whose clinic has no active Google connection is parked rather than claimed, because it
--   needs no Google request until the clinic reconnects (60_calendar_connections.sql unparks it).
-- - The doorbells are not a queue: neither Supabase Realtime nor LISTEN/NOTIFY delivers to a
--   listener that is not connected at the time. The daemon also sweeps for due rows at start,
--   after every (re)subscription and on a timer.

------------------------------------------------------------------------------------------
-- Doorbells: a row is waiting for the calendar now
------------------------------------------------------------------------------------------

-- The direct-PostgreSQL path: NOTIFY on a channel the daemon LISTENs to. No payload: patient
-- details stay in the table, and identical notifications of one transaction collapse into one.
create function private.notify_calendar_sync() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  perform pg_notify('calendar_sync', '');
  return null;
end
$$;
revoke all on function private.notify_calendar_sync() from public;

create trigger appointments_notify_calendar_sync
  after insert or update on public.appointments
  for each row
  when (new.sync_state = 'pending' and new.next_attempt_at <= now())
  execute function private.notify_calendar_sync();

-- The Supabase path: Broadcast from Database, ids only. Postgres Changes sent the daemon each whole
-- appointment row (patient name, phone, notes); this sends the appointment's and the clinic's ids,
-- nothing of the patient, into the private topic `calendar-sync`, which the daemon joins as the
-- service role; the policies below keep API users out of that topic.
-- It rings for the same rows as the direct path's doorbell: a retry scheduled for later rings
-- nothing (the sweep finds it when it is due). SECURITY DEFINER as in Supabase's documented
-- Broadcast-from-Database pattern: the message is stored as the function's owner (`postgres`),
-- whoever made the change (vapi_clinic, the service role, staff). `realtime.send` never raises: a
-- failed send is a WARNING and the booking commits regardless.
create function private.broadcast_calendar_sync() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform realtime.send(
    pg_catalog.jsonb_build_object('appointment_id', new.id, 'clinic_id', new.clinic_id),
    'pending',
    'calendar-sync',
    true);
  return null;
end
$$;
revoke all on function private.broadcast_calendar_sync() from public;

create trigger appointments_broadcast_calendar_sync
  after insert or update on public.appointments
  for each row
  when (new.sync_state = 'pending' and new.next_attempt_at <= now())
  execute function private.broadcast_calendar_sync();

-- Who may use the topic, on Supabase's own realtime.messages (private channels are authorised by its
-- RLS policies): the daemon, with a role of its own. The restrictive one keeps the roles API clients
-- become (anon with the publishable key, authenticated staff) out of the topic, reading or sending,
-- whatever broader policies a project adds to realtime.messages for its own channels.
create policy calendar_sync_doorbell_service_role on realtime.messages
  for select to service_role
  using ((select realtime.topic()) = 'calendar-sync' and extension = 'broadcast');

create policy calendar_sync_doorbell_not_api_users on realtime.messages
  as restrictive
  for all to anon, authenticated
  using ((select realtime.topic()) is distinct from 'calendar-sync' and topic <> 'calendar-sync')
  with check ((select realtime.topic()) is distinct from 'calendar-sync' and topic <> 'calendar-sync');

------------------------------------------------------------------------------------------
-- Claiming: pending (or an expired lease) -> in_flight
------------------------------------------------------------------------------------------

-- Lease up to p_limit due appointments to p_owner for p_lease_seconds, at most p_per_clinic of one
-- clinic, fairly across clinics. Due means pending with next_attempt_at reached, or in flight under
-- an expired lease. The claim walks only the clinics that have due work, with a skip scan over
-- appointments_due_by_clinic (one index probe per clinic), and reads at most p_per_clinic rows from
-- the head of each. So a backlog of 10,000 costs no sort of 10,000 rows per claim.
-- With limits (p_account_limit per Google account, p_project_limit for the project), it claims only
-- as many as the clinics' accounts and the project have budget for. Each claimed row reserves one
-- Google request under its clinic's budget key for p_hold_seconds; budget_entry is the reservation,
-- so what was not sent can be given back. p_returns gives back unsent requests of earlier
-- reservations. Rows of a clinic without an active connection are parked instead of claimed.
-- Each row says where its event goes: calendar_id, the practitioner's calendar or else the clinic's.
-- event_calendar_id is the calendar that holds the event now, when there is one. When the two
-- differ, the daemon inserts into the new calendar, deletes from the old one, then completes.
-- Every step repeats harmlessly. changed_at is when the claimed revision was made, for
-- booking-to-calendar latency.
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
revoke all on function public.claim_appointments(p_owner text, p_limit integer, p_lease_seconds integer, p_per_clinic integer, p_account_limit integer, p_project_limit integer, p_hold_seconds double precision, p_returns jsonb) from public, anon, authenticated, service_role;
grant execute on function public.claim_appointments(p_owner text, p_limit integer, p_lease_seconds integer, p_per_clinic integer, p_account_limit integer, p_project_limit integer, p_hold_seconds double precision, p_returns jsonb) to service_role;

------------------------------------------------------------------------------------------
-- Leaving in_flight: only the lease owner may
------------------------------------------------------------------------------------------

-- The one completion rule. Google confirmed each of p_completions, a JSON array of
-- {"appointment_id", "owner", "revision", "event_id", "event_link"?, "calendar_id"?}, recorded in
-- one statement. A row still at the pushed revision is synced. One that changed meanwhile goes back
-- to pending, keeping the event id so the next push updates the event. "calendar_id" is the calendar
-- the event was written to (absent: the one that held it). One row per item, in order: its
-- appointment id and the outcome (synced, pending, or lease_lost). The rows are locked in id
-- order first. It can still deadlock with a writer of several rows that locks them in another
-- order (apply_calendar_changes locks in listing order); the daemon tries a failed batch again.
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
revoke all on function public.complete_appointment_syncs(p_completions jsonb) from public, anon, authenticated, service_role;
grant execute on function public.complete_appointment_syncs(p_completions jsonb) to service_role;

-- Google confirmed revision p_revision of one appointment: complete_appointment_syncs with a
-- one-item array, so the rule lives in one place. Same answer: 'synced', 'pending' or 'lease_lost'.
create or replace function public.complete_appointment_sync(
  p_appointment_id uuid, p_owner text, p_revision integer, p_event_id text, p_event_link text default null
)
returns text
language sql volatile
set search_path = ''
as $$
  select c.state
  from public.complete_appointment_syncs(jsonb_build_array(jsonb_build_object(
    'appointment_id', p_appointment_id, 'owner', p_owner, 'revision', p_revision,
    'event_id', p_event_id, 'event_link', p_event_link))) c
$$;
revoke all on function public.complete_appointment_sync(p_appointment_id uuid, p_owner text, p_revision integer, p_event_id text, p_event_link text) from public, anon, authenticated, service_role;
grant execute on function public.complete_appointment_sync(p_appointment_id uuid, p_owner text, p_revision integer, p_event_id text, p_event_link text) to service_role;

-- The attempt did not sync. The row goes back to `pending` after p_delay_seconds (a transient
-- failure), to `failed` (permanent, for an operator), or to `parked` (the clinic must reconnect
-- Google). Reconnecting unparks the clinic's parked rows, but a reconnect that lands while the push
-- is failing finds the row still in flight. The row would then be parked afterwards, with nothing
-- left to unpark it. So parking checks the connection under a share lock: a reconnect waits for
-- it, and its unparking then sees the parked row. With an active connection the row goes back to
-- pending at once instead.
create or replace function public.end_appointment_attempt(
  p_appointment_id uuid, p_owner text, p_state text, p_error text, p_delay_seconds double precision default 0
)
returns text
language plpgsql volatile
set search_path = ''
as $$
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
revoke all on function public.end_appointment_attempt(p_appointment_id uuid, p_owner text, p_state text, p_error text, p_delay_seconds double precision) from public, anon, authenticated, service_role;
grant execute on function public.end_appointment_attempt(p_appointment_id uuid, p_owner text, p_state text, p_error text, p_delay_seconds double precision) to service_role;

-- Google refused to restore the appointment's deleted event (403 forbidden, or 409): only a new
-- event id brings it back to the calendar, so its next event id is current from now on. Only the
-- lease holder may do this, before inserting the event under the new id, so a crash or another
-- replica repeats the same insert, never a second event. The answer is the new generation, or null
-- when the lease was lost.
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
revoke all on function public.next_event_generation(p_appointment_id uuid, p_owner text) from public, anon, authenticated, service_role;
grant execute on function public.next_event_generation(p_appointment_id uuid, p_owner text) to service_role;

-- Graceful shutdown: hand back everything p_owner still holds, without counting an attempt.
create function public.release_appointment_leases(p_owner text)
returns integer
language plpgsql volatile
set search_path = ''
as $$
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
revoke all on function public.release_appointment_leases(p_owner text) from public, anon, authenticated, service_role;
grant execute on function public.release_appointment_leases(p_owner text) to service_role;

------------------------------------------------------------------------------------------
-- Back into the queue from outside a lease
------------------------------------------------------------------------------------------

-- A replica that lost its lease but did write to Google: make sure the row is pushed once
-- more, so the calendar ends up matching the row whatever order the two pushes landed in.
-- Raising the revision makes a current holder's completion re-queue it as well.
create function public.resync_appointment(p_appointment_id uuid)
returns text
language plpgsql volatile
set search_path = ''
as $$
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
revoke all on function public.resync_appointment(p_appointment_id uuid) from public, anon, authenticated, service_role;
grant execute on function public.resync_appointment(p_appointment_id uuid) to service_role;

-- Operator: put failed appointments back in the queue (one, one clinic's, or all).
create function public.retry_failed_appointments(
  p_clinic_id uuid default null, p_appointment_id uuid default null
)
returns integer
language plpgsql volatile
set search_path = ''
as $$
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
revoke all on function public.retry_failed_appointments(p_clinic_id uuid, p_appointment_id uuid) from public, anon, authenticated, service_role;
grant execute on function public.retry_failed_appointments(p_clinic_id uuid, p_appointment_id uuid) to service_role;

------------------------------------------------------------------------------------------
-- The queue seen from outside: metrics, the operator command, the round-trip check
------------------------------------------------------------------------------------------

-- How much is waiting: rows per sync state, how long the oldest unsynced change has waited
-- (pending or in flight, in backoff or not), and how many clinics must reconnect Google.
create function public.sync_backlog()
returns jsonb
language sql stable
set search_path = ''
as $$
  select jsonb_build_object(
    'by_state', coalesce((select jsonb_object_agg(sync_state, n)
                          from (select sync_state, count(*) as n from public.appointments group by sync_state) s),
                         '{}'::jsonb),
    'oldest_pending_age_seconds', coalesce((
       select extract(epoch from now() - min(updated_at))
       from public.appointments where sync_state in ('pending', 'in_flight')), 0),
    'clinics_needing_reauth', (select count(*) from public.calendar_connections where status = 'needs_reauth'))
$$;
revoke all on function public.sync_backlog() from public, anon, authenticated, service_role;
grant execute on function public.sync_backlog() to service_role;

-- Where one appointment stands, found by the reference the caller heard.
create function public.appointment_sync_status(p_clinic_id uuid, p_reference text)
returns jsonb
language sql stable
set search_path = ''
as $$
  select jsonb_build_object('appointment_id', id, 'status', status, 'sync_state', sync_state,
                            'calendar_event_id', calendar_event_id, 'last_sync_error', last_sync_error,
                            'revision', revision, 'synced_revision', synced_revision)
  from public.appointments
  where clinic_id = p_clinic_id and reference = upper(btrim(p_reference))
$$;
revoke all on function public.appointment_sync_status(p_clinic_id uuid, p_reference text) from public, anon, authenticated, service_role;
grant execute on function public.appointment_sync_status(p_clinic_id uuid, p_reference text) to service_role;

-- Removes a cancelled appointment whose cancellation reached the calendar (the round-trip
-- check's synthetic booking). Anything else is refused: a live or unsynced row must stay.
create function public.delete_cancelled_appointment(p_appointment_id uuid)
returns void
language plpgsql volatile
set search_path = ''
as $$
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
revoke all on function public.delete_cancelled_appointment(p_appointment_id uuid) from public, anon, authenticated, service_role;
grant execute on function public.delete_cancelled_appointment(p_appointment_id uuid) to service_role;
