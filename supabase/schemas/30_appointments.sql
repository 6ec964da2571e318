-- FUNCTION private.appointments_start_pending()
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

-- FUNCTION private.appointments_track_changes()
-- A change of practitioner is a change the calendar must follow.
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

-- TABLE public.appointments
CREATE TABLE public.appointments (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    clinic_id uuid NOT NULL,
    contact_id uuid,
    reference text NOT NULL,
    patient jsonb NOT NULL,
    service text NOT NULL,
    notes text,
    starts_at timestamp with time zone NOT NULL,
    ends_at timestamp with time zone NOT NULL,
    status text DEFAULT 'booked'::text NOT NULL,
    cancelled_at timestamp with time zone,
    source text DEFAULT 'vapi'::text NOT NULL,
    vapi_call_id text,
    vapi_tool_call_id text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    revision integer DEFAULT 1 NOT NULL,
    sync_state text DEFAULT 'pending'::text NOT NULL,
    sync_attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at timestamp with time zone DEFAULT now(),
    lease_owner text,
    lease_expires_at timestamp with time zone,
    calendar_event_id text,
    calendar_event_link text,
    last_sync_error text,
    synced_at timestamp with time zone,
    synced_revision integer,
    change_reason text,
    event_generation integer DEFAULT 0 NOT NULL,
    practitioner_id uuid,
    event_calendar_id text,
    CONSTRAINT appointments_calendar_event_id_check CHECK (((calendar_event_id ~ '^[a-v0-9]{5,}$'::text) AND (length(calendar_event_id) <= 1024))),
    CONSTRAINT appointments_change_reason_check CHECK ((length(change_reason) <= 200)),
    CONSTRAINT appointments_check CHECK ((ends_at > starts_at)),
    CONSTRAINT appointments_check1 CHECK (((status = 'cancelled'::text) = (cancelled_at IS NOT NULL))),
    CONSTRAINT appointments_check2 CHECK (((sync_state = 'in_flight'::text) = ((lease_owner IS NOT NULL) AND (lease_expires_at IS NOT NULL)))),
    CONSTRAINT appointments_check3 CHECK (((sync_state <> 'synced'::text) OR (synced_revision IS NOT NULL))),
    CONSTRAINT appointments_event_calendar_id_check CHECK (((length(event_calendar_id) >= 1) AND (length(event_calendar_id) <= 1024))),
    CONSTRAINT appointments_event_generation_check CHECK (((event_generation >= 0) AND (event_generation <= 1000))),
    CONSTRAINT appointments_notes_check CHECK ((length(notes) <= 1000)),
    CONSTRAINT appointments_patient_check CHECK (((jsonb_typeof(patient) = 'object'::text) AND (NOT (jsonb_typeof((patient -> 'name'::text)) IS DISTINCT FROM 'string'::text)) AND ((length((patient ->> 'name'::text)) >= 1) AND (length((patient ->> 'name'::text)) <= 200)))),
    CONSTRAINT appointments_reference_check CHECK ((reference ~ '^[A-Z0-9]{4,12}$'::text)),
    CONSTRAINT appointments_service_check CHECK (((length(service) >= 1) AND (length(service) <= 80))),
    CONSTRAINT appointments_source_check CHECK ((source = ANY (ARRAY['vapi'::text, 'staff'::text, 'api'::text]))),
    CONSTRAINT appointments_status_check CHECK ((status = ANY (ARRAY['booked'::text, 'cancelled'::text]))),
    CONSTRAINT appointments_sync_attempts_check CHECK ((sync_attempts >= 0)),
    CONSTRAINT appointments_sync_state_check CHECK ((sync_state = ANY (ARRAY['pending'::text, 'in_flight'::text, 'synced'::text, 'failed'::text, 'parked'::text]))),
    CONSTRAINT appointments_vapi_call_id_check CHECK ((length(vapi_call_id) <= 200)),
    CONSTRAINT appointments_vapi_tool_call_id_check CHECK ((length(vapi_tool_call_id) <= 200))
);

-- COMMENT public.COLUMN appointments.sync_state
COMMENT ON COLUMN public.appointments.sync_state IS 'pending: waiting to be pushed; in_flight: leased by a daemon; synced: Google confirmed synced_revision; failed: permanent error (last_sync_error), re-queued by an operator; parked: the clinic''s Google connection needs re-authorisation.';

-- COMMENT public.COLUMN appointments.change_reason
COMMENT ON COLUMN public.appointments.change_reason IS 'Why the appointment last changed when the change came from outside the assistant, e.g. "deleted in Google Calendar".';

-- COMMENT public.COLUMN appointments.event_generation
COMMENT ON COLUMN public.appointments.event_generation IS 'Which of the appointment''s event ids is current: 0 is base32hex of its id, g > 0 the same followed by g (a new id, after Google refused to restore a deleted event).';

-- COMMENT public.COLUMN appointments.practitioner_id
COMMENT ON COLUMN public.appointments.practitioner_id IS 'Who the patient sees; null: the clinic as a whole (a booking without a practitioner blocks every practitioner).';

-- COMMENT public.COLUMN appointments.event_calendar_id
COMMENT ON COLUMN public.appointments.event_calendar_id IS 'The calendar that holds calendar_event_id (null: the clinic''s calendar).';

-- FUNCTION private.new_reference(uuid)
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

-- TABLE public.contacts
CREATE TABLE public.contacts (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    clinic_id uuid NOT NULL,
    full_name text NOT NULL,
    phone text,
    email text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT contacts_email_check CHECK ((length(email) <= 320)),
    CONSTRAINT contacts_full_name_check CHECK (((length(full_name) >= 1) AND (length(full_name) <= 200))),
    CONSTRAINT contacts_phone_check CHECK ((phone ~ '^\+[1-9][0-9]{6,14}$'::text))
);

-- CONSTRAINT public.appointments appointments_clinic_id_reference_key
ALTER TABLE ONLY public.appointments
    ADD CONSTRAINT appointments_clinic_id_reference_key UNIQUE (clinic_id, reference);

-- CONSTRAINT public.appointments appointments_no_overlap
ALTER TABLE ONLY public.appointments
    ADD CONSTRAINT appointments_no_overlap EXCLUDE USING gist (clinic_id WITH =, COALESCE(practitioner_id, '00000000-0000-0000-0000-000000000000'::uuid) WITH =, tstzrange(starts_at, ends_at, '[)'::text) WITH &&) WHERE ((status = 'booked'::text));

-- CONSTRAINT public.appointments appointments_pkey
ALTER TABLE ONLY public.appointments
    ADD CONSTRAINT appointments_pkey PRIMARY KEY (id);

-- CONSTRAINT public.contacts contacts_pkey
ALTER TABLE ONLY public.contacts
    ADD CONSTRAINT contacts_pkey PRIMARY KEY (id);

-- INDEX public.appointments_booked_span
CREATE INDEX appointments_booked_span ON public.appointments USING gist (clinic_id, starts_at, ends_at) WHERE (status = 'booked'::text);

-- INDEX public.appointments_clinic_phone
CREATE INDEX appointments_clinic_phone ON public.appointments USING btree (clinic_id, ((patient ->> 'phone'::text))) WHERE (status = 'booked'::text);

-- INDEX public.appointments_clinic_start
CREATE INDEX appointments_clinic_start ON public.appointments USING btree (clinic_id, starts_at);

-- INDEX public.appointments_due_by_clinic
CREATE INDEX appointments_due_by_clinic ON public.appointments USING btree (clinic_id, next_attempt_at, id) WHERE (sync_state = 'pending'::text);

-- INDEX public.appointments_lease_expiry
CREATE INDEX appointments_lease_expiry ON public.appointments USING btree (lease_expires_at) WHERE (sync_state = 'in_flight'::text);

-- INDEX public.appointments_practitioner_start
CREATE INDEX appointments_practitioner_start ON public.appointments USING btree (practitioner_id, starts_at) WHERE ((practitioner_id IS NOT NULL) AND (status = 'booked'::text));

-- INDEX public.appointments_sync_queue
CREATE INDEX appointments_sync_queue ON public.appointments USING btree (next_attempt_at) WHERE (sync_state = 'pending'::text);

-- INDEX public.contacts_clinic
CREATE INDEX contacts_clinic ON public.contacts USING btree (clinic_id);

-- TRIGGER public.appointments appointments_start_pending
CREATE TRIGGER appointments_start_pending BEFORE INSERT ON public.appointments FOR EACH ROW EXECUTE FUNCTION private.appointments_start_pending();

-- TRIGGER public.appointments appointments_track_changes
CREATE TRIGGER appointments_track_changes BEFORE UPDATE ON public.appointments FOR EACH ROW EXECUTE FUNCTION private.appointments_track_changes();

-- FK CONSTRAINT public.appointments appointments_clinic_id_fkey
ALTER TABLE ONLY public.appointments
    ADD CONSTRAINT appointments_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;

-- FK CONSTRAINT public.appointments appointments_contact_id_fkey
ALTER TABLE ONLY public.appointments
    ADD CONSTRAINT appointments_contact_id_fkey FOREIGN KEY (contact_id) REFERENCES public.contacts(id) ON DELETE SET NULL;

-- FK CONSTRAINT public.appointments appointments_practitioner_fkey
ALTER TABLE ONLY public.appointments
    ADD CONSTRAINT appointments_practitioner_fkey FOREIGN KEY (clinic_id, practitioner_id) REFERENCES public.practitioners(clinic_id, id);

-- FK CONSTRAINT public.contacts contacts_clinic_id_fkey
ALTER TABLE ONLY public.contacts
    ADD CONSTRAINT contacts_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;

-- ROW SECURITY public.appointments
ALTER TABLE public.appointments ENABLE ROW LEVEL SECURITY;

-- ROW SECURITY public.contacts
ALTER TABLE public.contacts ENABLE ROW LEVEL SECURITY;

-- POLICY public.appointments members_read
CREATE POLICY members_read ON public.appointments FOR SELECT TO authenticated USING ((clinic_id IN ( SELECT clinic_members.clinic_id
   FROM public.clinic_members)));

-- POLICY public.contacts members_read
CREATE POLICY members_read ON public.contacts FOR SELECT TO authenticated USING ((clinic_id IN ( SELECT clinic_members.clinic_id
   FROM public.clinic_members)));

-- POLICY public.appointments own_clinic
CREATE POLICY own_clinic ON public.appointments TO vapi_clinic USING ((clinic_id = ( SELECT private.request_clinic_id() AS request_clinic_id))) WITH CHECK ((clinic_id = ( SELECT private.request_clinic_id() AS request_clinic_id)));

revoke all on function private.appointments_start_pending() from public;
grant execute on function private.appointments_start_pending() to vapi_clinic;

revoke all on function private.appointments_track_changes() from public;
grant execute on function private.appointments_track_changes() to vapi_clinic;

revoke all on table public.appointments from anon, authenticated, service_role;
grant all on table public.appointments to service_role;
grant select on table public.appointments to authenticated;
grant select, insert, update on table public.appointments to vapi_clinic;

revoke all on function private.new_reference(p_clinic_id uuid) from public;
grant execute on function private.new_reference(p_clinic_id uuid) to vapi_clinic;

revoke all on table public.contacts from anon, authenticated, service_role;
grant all on table public.contacts to service_role;
grant select on table public.contacts to authenticated;

