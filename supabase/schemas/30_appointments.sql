-- Appointments, and what the daemon needs on each to push it to Google Calendar; contacts.
--
-- - An appointment never depends on another table being there: contact_id is optional
--   (`on delete set null`) and the patient's details live on the appointment itself.
-- - No two live bookings of one diary overlap, whoever writes them and however concurrently: the
--   database refuses the second. A booking with a practitioner blocks that practitioner only; a
--   booking without one (every booking of a clinic without practitioners, and those made before a
--   clinic added them) blocks the whole clinic. The exclusion constraint holds per practitioner (and
--   per clinic for bookings without one); the tools, which hold the clinic's diary lock, also keep
--   bookings with and without a practitioner apart (40_diary_rules).
-- - Every appointment is pushed to Google Calendar by the sync daemon. The columns after updated_at
--   are its queue state; the triggers here put a new or changed row in the queue, and the queue's
--   transitions (claim, complete, end attempt) and its doorbells are in 65_sync_queue.
-- - Google Calendar is a source of truth too: an appointment's event deleted or moved in Google
--   cancels or moves it (70_calendar_mirror, which records why in change_reason).
-- - A booking's event goes to its practitioner's calendar (the clinic's when the practitioner has
--   none, or the booking has no practitioner); event_calendar_id says which calendar holds it now.


-- Contacts ----------------------------------------------------------------------------------------

create table public.contacts (
  id uuid primary key default gen_random_uuid(),
  clinic_id uuid not null references public.clinics (id) on delete cascade,
  full_name text not null check (length(full_name) between 1 and 200),
  phone text check (phone ~ '^\+[1-9][0-9]{6,14}$'),
  email text check (length(email) <= 320),
  created_at timestamptz not null default now()
);
create index contacts_clinic on public.contacts (clinic_id);

alter table public.contacts enable row level security;
revoke all on table public.contacts from anon, authenticated, service_role;
grant all on table public.contacts to service_role;
grant select on table public.contacts to authenticated;
create policy members_read on public.contacts for select to authenticated
  using (clinic_id in (select clinic_id from public.clinic_members));


-- Appointments ------------------------------------------------------------------------------------

create table public.appointments (
  id uuid primary key default gen_random_uuid(),
  clinic_id uuid not null references public.clinics (id) on delete cascade,
  contact_id uuid references public.contacts (id) on delete set null,
  -- Short code a caller can read back over the phone; unique within the clinic.
  reference text not null check (reference ~ '^[A-Z0-9]{4,12}$'),
  -- {"name": text, "phone": E.164 text or absent}
  patient jsonb not null check (
    jsonb_typeof(patient) = 'object'
    and jsonb_typeof(patient -> 'name') is not distinct from 'string'
    and length(patient ->> 'name') between 1 and 200
  ),
  service text not null check (length(service) between 1 and 80),
  notes text check (length(notes) <= 1000),
  starts_at timestamptz not null,
  ends_at timestamptz not null,
  status text not null default 'booked' check (status in ('booked', 'cancelled')),
  cancelled_at timestamptz,
  source text not null default 'vapi' check (source in ('vapi', 'staff', 'api')),
  vapi_call_id text check (length(vapi_call_id) <= 200),
  vapi_tool_call_id text check (length(vapi_tool_call_id) <= 200),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),

  -- Calendar sync. `revision` counts changes the calendar must hear about; the daemon
  -- records which revision it pushed, so a change made while a push is in flight is not lost.
  revision integer not null default 1,
  sync_state text not null default 'pending'
    check (sync_state in ('pending', 'in_flight', 'synced', 'failed', 'parked')),
  sync_attempts integer not null default 0 check (sync_attempts >= 0),
  next_attempt_at timestamptz default now(),
  lease_owner text,
  lease_expires_at timestamptz,
  calendar_event_id text check (calendar_event_id ~ '^[a-v0-9]{5,}$' and length(calendar_event_id) <= 1024),
  calendar_event_link text,
  last_sync_error text,
  synced_at timestamptz,
  synced_revision integer,
  change_reason text check (length(change_reason) <= 200),
  -- Every event id that was ever ours is recognisable without a lookup: base32hex of the
  -- appointment's id, followed for generation g > 0 by the number g.
  event_generation integer not null default 0 check (event_generation between 0 and 1000),
  -- Same clinic as the appointment, by the composite key below.
  practitioner_id uuid,
  event_calendar_id text check (length(event_calendar_id) between 1 and 1024),

  unique (clinic_id, reference),
  constraint appointments_check check (ends_at > starts_at),
  constraint appointments_check1 check ((status = 'cancelled') = (cancelled_at is not null)),
  constraint appointments_check2
    check ((sync_state = 'in_flight') = (lease_owner is not null and lease_expires_at is not null)),
  constraint appointments_check3 check (sync_state <> 'synced' or synced_revision is not null),
  constraint appointments_practitioner_fkey foreign key (clinic_id, practitioner_id)
    references public.practitioners (clinic_id, id),
  -- No two live appointments of one diary overlap, whoever writes them and however
  -- concurrently: the database refuses the second. A null practitioner is the clinic's diary.
  constraint appointments_no_overlap exclude using gist (
    clinic_id with =,
    (coalesce(practitioner_id, '00000000-0000-0000-0000-000000000000'::uuid)) with =,
    tstzrange(starts_at, ends_at, '[)') with &&) where (status = 'booked')
);

comment on column public.appointments.sync_state is
  'pending: waiting to be pushed; in_flight: leased by a daemon; synced: Google confirmed '
  'synced_revision; failed: permanent error (last_sync_error), re-queued by an operator; '
  'parked: the clinic''s Google connection needs re-authorisation.';
comment on column public.appointments.change_reason is
  'Why the appointment last changed when the change came from outside the assistant, e.g. "deleted in Google Calendar".';
comment on column public.appointments.event_generation is
  'Which of the appointment''s event ids is current: 0 is base32hex of its id, g > 0 the same followed by g '
  '(a new id, after Google refused to restore a deleted event).';
comment on column public.appointments.practitioner_id is
  'Who the patient sees; null: the clinic as a whole (a booking without a practitioner blocks every practitioner).';
comment on column public.appointments.event_calendar_id is
  'The calendar that holds calendar_event_id (null: the clinic''s calendar).';

-- The sync queue: due rows, and leases that may have expired.
create index appointments_sync_queue on public.appointments (next_attempt_at)
  where sync_state = 'pending';
create index appointments_lease_expiry on public.appointments (lease_expires_at)
  where sync_state = 'in_flight';
-- claim_appointments walks the clinics that have due work (a skip scan over this index: one probe
-- per such clinic) and reads at most p_per_clinic rows from the head of each, instead of ranking
-- every due row of every clinic on each call.
create index appointments_due_by_clinic on public.appointments (clinic_id, next_attempt_at, id)
  where sync_state = 'pending';
-- A clinic's diary, and a caller's bookings found by phone number.
create index appointments_clinic_start on public.appointments (clinic_id, starts_at);
create index appointments_clinic_phone on public.appointments (clinic_id, (patient ->> 'phone'))
  where status = 'booked';
create index appointments_practitioner_start on public.appointments (practitioner_id, starts_at)
  where practitioner_id is not null and status = 'booked';
-- The foreign keys' own indexes (Supabase's advisor: unindexed_foreign_keys): deleting a contact, or a
-- practitioner (with their clinic), finds the appointments naming them by these, instead of reading
-- the whole table. Only rows that name one are indexed: a foreign key with a null column references
-- nothing (MATCH SIMPLE), so those rows are never looked for (and no booking the assistant makes
-- names a contact).
create index appointments_contact on public.appointments (contact_id)
  where contact_id is not null;
create index appointments_clinic_practitioner on public.appointments (clinic_id, practitioner_id)
  where practitioner_id is not null;
-- The tools run as vapi_clinic under row-level security, where only leakproof conditions may use an
-- index: the range overlap operator (&&) is not, plain timestamptz comparisons are. Without this
-- index every check read the clinic's whole history (bench/practitioners.py: p99 of an availability
-- check for 10 practitioners 250-400 ms, 2.2 s with a year of history; with it, calendar_busy_span
-- and the day read once, 12-15 ms).
create index appointments_booked_span on public.appointments using gist (clinic_id, starts_at, ends_at)
  where status = 'booked';

alter table public.appointments enable row level security;
revoke all on table public.appointments from anon, authenticated, service_role;
grant all on table public.appointments to service_role;
grant select on table public.appointments to authenticated;
grant select, insert, update on table public.appointments to vapi_clinic;
create policy members_read on public.appointments for select to authenticated
  using (clinic_id in (select clinic_id from public.clinic_members));
create policy own_clinic on public.appointments for all to vapi_clinic
  using (clinic_id = (select private.request_clinic_id()))
  with check (clinic_id = (select private.request_clinic_id()));


-- Keeping the sync queue honest -------------------------------------------------------------------

-- A new row always starts its life waiting for the calendar, whatever the writer sent: no event,
-- in no calendar yet.
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
revoke all on function private.appointments_start_pending() from public;
grant execute on function private.appointments_start_pending() to vapi_clinic;

create trigger appointments_start_pending
  before insert on public.appointments
  for each row execute function private.appointments_start_pending();

-- Any change the calendar must reflect puts the row back in the sync queue. A row that is
-- in flight keeps its lease: the daemon sees revision > the one it pushed and re-queues it.
-- A parked row stays parked until its clinic reconnects. A change of practitioner is a change
-- the calendar must follow (the event may move to another calendar).
create or replace function private.appointments_track_changes() returns trigger
language plpgsql set search_path = '' as $$
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
revoke all on function private.appointments_track_changes() from public;
grant execute on function private.appointments_track_changes() to vapi_clinic;

create trigger appointments_track_changes
  before update on public.appointments
  for each row execute function private.appointments_track_changes();


-- References --------------------------------------------------------------------------------------

-- A new booking's reference: six characters a caller can read back, drawn until none of the
-- clinic's appointments has it (unique (clinic_id, reference) has the last word).
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
revoke all on function private.new_reference(p_clinic_id uuid) from public;
grant execute on function private.new_reference(p_clinic_id uuid) to vapi_clinic;
