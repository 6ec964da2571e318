-- A cheaper claim, and write-backs in batches (bench/throughput.py measures both).
--
-- claim_appointments ranked every due row of every clinic with a window function on each
-- call: with a backlog of 10,000 that is a sort of 10,000 rows per claim of a dozen. Now it
-- walks the clinics that have due work (a skip scan over an index on (clinic_id,
-- next_attempt_at) of pending rows: one probe per such clinic) and reads at most
-- p_per_clinic rows from the head of each. Same arguments, same rows, same rules as in the
-- operations migration: at most p_per_clinic of a clinic per claim, the earliest due first,
-- expired leases claimed again, rows of a clinic without an active connection parked.
--
-- complete_appointment_syncs records many confirmed pushes in one call (one round trip, one
-- transaction) with exactly the rules of complete_appointment_sync for each. Holding several row
-- locks, it can deadlock with another writer of several rows that locks them in another order
-- (apply_calendar_changes locks in listing order); the daemon tries a failed batch again.

create index appointments_due_by_clinic on public.appointments (clinic_id, next_attempt_at, id)
  where sync_state = 'pending';

create or replace function public.claim_appointments(
  p_owner text, p_limit integer default 50, p_lease_seconds integer default 120, p_per_clinic integer default 10
)
returns table (
  appointment_id uuid, clinic_id uuid, revision integer, status text, reference text, patient jsonb,
  service text, notes text, starts_at timestamptz, ends_at timestamptz, calendar_event_id text,
  sync_attempts integer, created_at timestamptz, time_zone text, calendar_id text, changed_at timestamptz
)
language plpgsql volatile
set search_path = ''
as $$
begin
  perform private.require_owner(p_owner);
  perform private.require(p_limit between 1 and 1000, 'limit must be 1 to 1000');
  perform private.require(p_lease_seconds between 5 and 3600, 'lease must be 5 to 3600 seconds');
  perform private.require(p_per_clinic between 1 and 1000, 'per-clinic limit must be 1 to 1000');

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
  due as (
    select c.id, c.due_at, row_number() over (partition by c.clinic_id order by c.due_at, c.id) as nth
    from candidates c
  ),
  locked as (
    select a.id, a.clinic_id
    from public.appointments a
    where a.id in (select due.id from due where due.nth <= p_per_clinic order by due.due_at, due.id limit p_limit)
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
  )
  select c.id, c.clinic_id, c.revision, c.status, c.reference, c.patient, c.service, c.notes,
         c.starts_at, c.ends_at, c.calendar_event_id, c.sync_attempts, c.created_at,
         k.time_zone, k.calendar_id, c.updated_at
  from claimed c
  join public.clinics k on k.id = c.clinic_id
  order by c.starts_at;
end
$$;

-- Google confirmed each of p_completions, a JSON array of {"appointment_id", "owner", "revision",
-- "event_id", "event_link"?}: complete_appointment_sync for every item, in one statement.
-- One row per item: its appointment id and the outcome (synced, pending, or lease_lost).
create function public.complete_appointment_syncs(p_completions jsonb)
returns table (appointment_id uuid, state text)
language plpgsql volatile
set search_path = ''
as $$
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
           e ->> 'event_id' as event_id, e ->> 'event_link' as event_link, n
    from jsonb_array_elements(p_completions) with ordinality as i(e, n)
  ),
  done as (
    update public.appointments a
       set sync_state = case when a.revision = i.revision then 'synced' else 'pending' end,
           next_attempt_at = case when a.revision = i.revision then null else now() end,
           sync_attempts = case when a.revision = i.revision then a.sync_attempts else 0 end,
           synced_revision = i.revision, synced_at = now(),
           calendar_event_id = i.event_id, calendar_event_link = coalesce(i.event_link, a.calendar_event_link),
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

revoke execute on function public.complete_appointment_syncs(jsonb) from public, anon, authenticated;
grant execute on function public.complete_appointment_syncs(jsonb) to service_role;
