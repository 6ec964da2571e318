-- Appointments and what the daemon needs to push them to Google Calendar, contacts, and each
-- clinic's Google connection.
--
-- An appointment never depends on another table being there: contact_id is optional
-- (`on delete set null`) and the patient's details live on the appointment itself.

create table public.contacts (
  id uuid primary key default gen_random_uuid(),
  clinic_id uuid not null references public.clinics (id) on delete cascade,
  full_name text not null check (length(full_name) between 1 and 200),
  phone text check (phone ~ '^\+[1-9][0-9]{6,14}$'),
  email text check (length(email) <= 320),
  created_at timestamptz not null default now()
);
create index contacts_clinic on public.contacts (clinic_id);

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

  unique (clinic_id, reference),
  check (ends_at > starts_at),
  check ((status = 'cancelled') = (cancelled_at is not null)),
  check ((sync_state = 'in_flight') = (lease_owner is not null and lease_expires_at is not null)),
  check (sync_state <> 'synced' or synced_revision is not null),
  -- No two live appointments of one clinic overlap, whoever writes them and however
  -- concurrently: the database refuses the second.
  constraint appointments_no_overlap exclude using gist (
    clinic_id with =, tstzrange(starts_at, ends_at, '[)') with &&
  ) where (status = 'booked')
);

create index appointments_sync_queue on public.appointments (next_attempt_at)
  where sync_state = 'pending';
create index appointments_lease_expiry on public.appointments (lease_expires_at)
  where sync_state = 'in_flight';
create index appointments_clinic_start on public.appointments (clinic_id, starts_at);
create index appointments_clinic_phone on public.appointments (clinic_id, (patient ->> 'phone'))
  where status = 'booked';

comment on column public.appointments.sync_state is
  'pending: waiting to be pushed; in_flight: leased by a daemon; synced: Google confirmed '
  'synced_revision; failed: permanent error (last_sync_error), re-queued by an operator; '
  'parked: the clinic''s Google connection needs re-authorisation.';

-- Any change the calendar must reflect puts the row back in the sync queue. A row that is
-- in flight keeps its lease: the daemon sees revision > the one it pushed and re-queues it.
-- A parked row stays parked until its clinic reconnects.
create function private.appointments_track_changes() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if (new.starts_at, new.ends_at, new.status, new.patient, new.service, new.notes)
     is distinct from
     (old.starts_at, old.ends_at, old.status, old.patient, old.service, old.notes)
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

create trigger appointments_track_changes
  before update on public.appointments
  for each row execute function private.appointments_track_changes();

-- A new row always starts its life waiting for the calendar, whatever the writer sent.
create function private.appointments_start_pending() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.revision := 1;
  new.sync_state := 'pending';
  new.sync_attempts := 0;
  new.next_attempt_at := now();
  new.lease_owner := null;
  new.lease_expires_at := null;
  new.calendar_event_id := null;
  new.calendar_event_link := null;
  new.last_sync_error := null;
  new.synced_at := null;
  new.synced_revision := null;
  return new;
end
$$;

create trigger appointments_start_pending
  before insert on public.appointments
  for each row execute function private.appointments_start_pending();

-- One Google connection per clinic. Token material is encrypted by the daemon (Fernet,
-- key only the daemon holds); the checks refuse anything that is not a Fernet token, so a
-- plain refresh token ("1//...") can never be stored by mistake.
create table public.calendar_connections (
  clinic_id uuid primary key references public.clinics (id) on delete cascade,
  google_account text check (length(google_account) <= 320),
  refresh_token_encrypted text not null check (refresh_token_encrypted ~ '^gAAAAA[A-Za-z0-9_-]+=*$'),
  access_token_encrypted text check (access_token_encrypted ~ '^gAAAAA[A-Za-z0-9_-]+=*$'),
  access_token_expires_at timestamptz,
  scopes text[] not null default '{}',
  status text not null default 'active' check (status in ('active', 'needs_reauth', 'revoked')),
  last_refreshed_at timestamptz,
  last_error text,
  connected_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

revoke execute on all functions in schema private from public;

alter table public.contacts enable row level security;
alter table public.appointments enable row level security;
alter table public.calendar_connections enable row level security;

revoke all on public.contacts, public.appointments, public.calendar_connections
  from anon, authenticated, public;
grant all on public.contacts, public.appointments, public.calendar_connections to service_role;

grant select on public.contacts, public.appointments to authenticated;
create policy members_read on public.contacts for select to authenticated
  using (clinic_id in (select clinic_id from public.clinic_members));
create policy members_read on public.appointments for select to authenticated
  using (clinic_id in (select clinic_id from public.clinic_members));
-- Staff may see whether their clinic's Google connection is healthy, never its tokens.
grant select (clinic_id, google_account, scopes, status, last_refreshed_at, last_error,
              connected_at, updated_at)
  on public.calendar_connections to authenticated;
create policy members_read on public.calendar_connections for select to authenticated
  using (clinic_id in (select clinic_id from public.clinic_members));

grant select, insert, update on public.appointments to vapi_clinic;
create policy own_clinic on public.appointments for all to vapi_clinic
  using (clinic_id = (select private.request_clinic_id()))
  with check (clinic_id = (select private.request_clinic_id()));
