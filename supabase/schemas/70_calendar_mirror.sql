-- FUNCTION private.apply_appointment_event(uuid, jsonb, text)
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

-- FUNCTION private.calendar_connection_changed()
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

-- FUNCTION private.clinic_calendars(uuid)
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

-- FUNCTION private.ensure_mirror_rows(uuid)
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

-- FUNCTION private.event_instant(jsonb, text)
-- An event's start or end: a dateTime, or an all-day date (midnight in the clinic's zone).
create function private.event_instant(p_when jsonb, p_zone text) returns timestamptz
language sql stable
set search_path = ''
as $$
  select coalesce((p_when ->> 'dateTime')::timestamptz, ((p_when ->> 'date')::date)::timestamp at time zone p_zone)
$$;

-- FUNCTION private.mark_synced_from_calendar(uuid)
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

-- FUNCTION private.mirror_notified_since_listing(uuid, text)
create function private.mirror_notified_since_listing(p_clinic_id uuid, p_calendar_id text) returns boolean
language sql stable set search_path = '' as $$
  select coalesce((select m.notified_at > coalesce(m.listing_started_at, '-infinity')
                   from public.calendar_mirrors m
                   where m.clinic_id = p_clinic_id and m.calendar_id = p_calendar_id), false)
$$;

-- FUNCTION public.apply_calendar_changes(uuid, jsonb, text, boolean, text, text)
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

-- FUNCTION public.calendar_mirror_freshness()
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

-- FUNCTION public.claim_mirror_targets(text, integer, double precision, integer, uuid, text, boolean)
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

-- FUNCTION public.record_mirror_failure(uuid, text, text, text)
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

-- TABLE public.calendar_busy
CREATE TABLE public.calendar_busy (
    clinic_id uuid NOT NULL,
    event_id text NOT NULL,
    starts_at timestamp with time zone NOT NULL,
    ends_at timestamp with time zone NOT NULL,
    calendar_id text NOT NULL,
    CONSTRAINT calendar_busy_check CHECK ((ends_at > starts_at)),
    CONSTRAINT calendar_busy_event_id_check CHECK (((length(event_id) >= 1) AND (length(event_id) <= 1024)))
);

-- COMMENT public.TABLE calendar_busy
COMMENT ON TABLE public.calendar_busy IS 'Busy intervals from events in the clinic''s Google Calendar that are not our appointments.';

-- TABLE public.calendar_mirrors
CREATE TABLE public.calendar_mirrors (
    clinic_id uuid NOT NULL,
    sync_token text,
    last_synced_at timestamp with time zone,
    last_full_sync_at timestamp with time zone,
    last_error text,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    lease_owner text,
    lease_expires_at timestamp with time zone,
    listing_started_at timestamp with time zone,
    notified_at timestamp with time zone,
    channel_lease_owner text,
    channel_lease_expires_at timestamp with time zone,
    calendar_id text NOT NULL,
    CONSTRAINT calendar_mirrors_channel_lease_owner_check CHECK ((length(channel_lease_owner) <= 200)),
    CONSTRAINT calendar_mirrors_lease_owner_check CHECK ((length(lease_owner) <= 200)),
    CONSTRAINT calendar_mirrors_sync_token_check CHECK ((length(sync_token) <= 4096))
);

-- COMMENT public.COLUMN calendar_mirrors.notified_at
COMMENT ON COLUMN public.calendar_mirrors.notified_at IS 'When Google last notified a change of this calendar (push); a listing that began before it is listed again.';

-- CONSTRAINT public.calendar_busy calendar_busy_pkey
ALTER TABLE ONLY public.calendar_busy
    ADD CONSTRAINT calendar_busy_pkey PRIMARY KEY (clinic_id, calendar_id, event_id);

-- CONSTRAINT public.calendar_mirrors calendar_mirrors_pkey
ALTER TABLE ONLY public.calendar_mirrors
    ADD CONSTRAINT calendar_mirrors_pkey PRIMARY KEY (clinic_id, calendar_id);

-- INDEX public.calendar_busy_during
CREATE INDEX calendar_busy_during ON public.calendar_busy USING gist (clinic_id, calendar_id, tstzrange(starts_at, ends_at, '[)'::text));

-- INDEX public.calendar_busy_span
CREATE INDEX calendar_busy_span ON public.calendar_busy USING gist (clinic_id, starts_at, ends_at);

-- TRIGGER public.calendar_connections calendar_connection_changed
CREATE TRIGGER calendar_connection_changed AFTER DELETE OR UPDATE OF status, refresh_token_encrypted, google_account ON public.calendar_connections FOR EACH ROW EXECUTE FUNCTION private.calendar_connection_changed();

-- FK CONSTRAINT public.calendar_busy calendar_busy_clinic_id_fkey
ALTER TABLE ONLY public.calendar_busy
    ADD CONSTRAINT calendar_busy_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;

-- FK CONSTRAINT public.calendar_mirrors calendar_mirrors_clinic_id_fkey
ALTER TABLE ONLY public.calendar_mirrors
    ADD CONSTRAINT calendar_mirrors_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;

-- ROW SECURITY public.calendar_busy
ALTER TABLE public.calendar_busy ENABLE ROW LEVEL SECURITY;

-- ROW SECURITY public.calendar_mirrors
ALTER TABLE public.calendar_mirrors ENABLE ROW LEVEL SECURITY;

-- POLICY public.calendar_busy members_read
CREATE POLICY members_read ON public.calendar_busy FOR SELECT TO authenticated USING ((clinic_id IN ( SELECT clinic_members.clinic_id
   FROM public.clinic_members)));

-- POLICY public.calendar_mirrors members_read
CREATE POLICY members_read ON public.calendar_mirrors FOR SELECT TO authenticated USING ((clinic_id IN ( SELECT clinic_members.clinic_id
   FROM public.clinic_members)));

-- POLICY public.calendar_busy own_clinic
CREATE POLICY own_clinic ON public.calendar_busy FOR SELECT TO vapi_clinic USING ((clinic_id = ( SELECT private.request_clinic_id() AS request_clinic_id)));

-- POLICY public.calendar_mirrors own_clinic
CREATE POLICY own_clinic ON public.calendar_mirrors FOR SELECT TO vapi_clinic USING ((clinic_id = ( SELECT private.request_clinic_id() AS request_clinic_id)));

revoke all on function private.apply_appointment_event(p_clinic_id uuid, p_event jsonb, p_zone text) from public;
grant execute on function private.apply_appointment_event(p_clinic_id uuid, p_event jsonb, p_zone text) to service_role;

revoke all on function private.calendar_connection_changed() from public;

revoke all on function private.clinic_calendars(p_clinic_id uuid) from public;
grant execute on function private.clinic_calendars(p_clinic_id uuid) to service_role;

revoke all on function private.ensure_mirror_rows(p_clinic_id uuid) from public;
grant execute on function private.ensure_mirror_rows(p_clinic_id uuid) to service_role;

revoke all on function private.event_instant(p_when jsonb, p_zone text) from public;
grant execute on function private.event_instant(p_when jsonb, p_zone text) to service_role;

revoke all on function private.mark_synced_from_calendar(p_appointment_id uuid) from public;
grant execute on function private.mark_synced_from_calendar(p_appointment_id uuid) to service_role;

revoke all on function private.mirror_notified_since_listing(p_clinic_id uuid, p_calendar_id text) from public;
grant execute on function private.mirror_notified_since_listing(p_clinic_id uuid, p_calendar_id text) to service_role;

revoke all on function public.apply_calendar_changes(p_clinic_id uuid, p_events jsonb, p_sync_token text, p_full boolean, p_owner text, p_calendar_id text) from public, anon, authenticated, service_role;
grant execute on function public.apply_calendar_changes(p_clinic_id uuid, p_events jsonb, p_sync_token text, p_full boolean, p_owner text, p_calendar_id text) to service_role;

revoke all on function public.calendar_mirror_freshness() from public, anon, authenticated, service_role;
grant execute on function public.calendar_mirror_freshness() to service_role;

revoke all on function public.claim_mirror_targets(p_owner text, p_lease_seconds integer, p_interval_seconds double precision, p_limit integer, p_clinic_id uuid, p_calendar_id text, p_only_due boolean) from public, anon, authenticated, service_role;
grant execute on function public.claim_mirror_targets(p_owner text, p_lease_seconds integer, p_interval_seconds double precision, p_limit integer, p_clinic_id uuid, p_calendar_id text, p_only_due boolean) to service_role;

revoke all on function public.record_mirror_failure(p_clinic_id uuid, p_error text, p_owner text, p_calendar_id text) from public, anon, authenticated, service_role;
grant execute on function public.record_mirror_failure(p_clinic_id uuid, p_error text, p_owner text, p_calendar_id text) to service_role;

revoke all on table public.calendar_busy from anon, authenticated, service_role;
grant all on table public.calendar_busy to service_role;
grant select on table public.calendar_busy to authenticated;

grant select (clinic_id) on table public.calendar_busy TO vapi_clinic;

grant select (starts_at) on table public.calendar_busy TO vapi_clinic;

grant select (ends_at) on table public.calendar_busy TO vapi_clinic;

grant select (calendar_id) on table public.calendar_busy TO vapi_clinic;

revoke all on table public.calendar_mirrors from anon, authenticated, service_role;
grant all on table public.calendar_mirrors to service_role;

grant select (clinic_id) on table public.calendar_mirrors TO authenticated;
grant select (clinic_id) on table public.calendar_mirrors TO vapi_clinic;

grant select (last_synced_at) on table public.calendar_mirrors TO authenticated;
grant select (last_synced_at) on table public.calendar_mirrors TO vapi_clinic;

grant select (last_full_sync_at) on table public.calendar_mirrors TO authenticated;

grant select (last_error) on table public.calendar_mirrors TO authenticated;
grant select (last_error) on table public.calendar_mirrors TO vapi_clinic;

grant select (calendar_id) on table public.calendar_mirrors TO authenticated;
grant select (calendar_id) on table public.calendar_mirrors TO vapi_clinic;

