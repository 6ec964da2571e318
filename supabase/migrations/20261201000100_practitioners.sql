-- Practitioners: several diaries in one clinic.
--
-- - A practitioner belongs to one clinic: a display name (unique in the clinic, ignoring case), the
--   services they offer (null: every service of the clinic), their own opening hours
--   (practitioner_hours; none: the clinic's), their own Google calendar (a calendar the clinic's
--   connected account can write to, e.g. one shared with it; null: the clinic's calendar), and
--   whether they take bookings. Practitioners are deactivated, never deleted: bookings name them.
-- - An appointment may name its practitioner (appointments.practitioner_id, same clinic by a
--   composite key). A booking with a practitioner blocks that practitioner only; a booking without
--   one (every booking of a clinic without practitioners, and those made before a clinic added
--   them) blocks the whole clinic. The exclusion constraint holds per practitioner (and per
--   clinic for bookings without one); the tools, which hold the clinic's diary lock, also keep
--   bookings with and without a practitioner apart.
-- - A clinic without practitioners behaves exactly as before: nothing of its rows changes.
-- - Operators add, change, deactivate and list practitioners with add_practitioner,
--   change_practitioner, deactivate_practitioner and clinic_practitioners (service role only).

create table public.practitioners (
  id uuid primary key default gen_random_uuid(),
  clinic_id uuid not null references public.clinics (id) on delete cascade,
  name text not null check (length(btrim(name)) between 1 and 100 and name !~ '[[:cntrl:]]'),
  services text[] check (cardinality(services) between 1 and 100),
  calendar_id text check (length(calendar_id) between 1 and 1024),
  active boolean not null default true,
  created_at timestamptz not null default now(),
  deactivated_at timestamptz,
  check (active = (deactivated_at is null)),
  unique (clinic_id, id)
);
comment on table public.practitioners is
  'The people a clinic books patients with. services null: every service of the clinic; calendar_id null: the clinic''s calendar; no practitioner_hours: the clinic''s opening hours.';
create unique index practitioners_name_ci on public.practitioners (clinic_id, lower(btrim(name)));

create table public.practitioner_hours (
  clinic_id uuid not null,
  practitioner_id uuid not null,
  weekday smallint not null check (weekday between 1 and 7),
  opens time not null,
  closes time not null,
  check (closes > opens),
  foreign key (clinic_id, practitioner_id) references public.practitioners (clinic_id, id) on delete cascade,
  exclude using gist (practitioner_id with =, weekday with =,
                      tsrange(date '2000-01-01' + opens, date '2000-01-01' + closes) with &&)
);
comment on table public.practitioner_hours is
  'A practitioner''s own hours, in the clinic''s time zone; a practitioner without any works the clinic''s opening hours.';

alter table public.appointments add column practitioner_id uuid;
alter table public.appointments
  add constraint appointments_practitioner_fkey foreign key (clinic_id, practitioner_id)
  references public.practitioners (clinic_id, id);
comment on column public.appointments.practitioner_id is
  'Who the patient sees; null: the clinic as a whole (a booking without a practitioner blocks every practitioner).';
alter table public.appointments drop constraint appointments_no_overlap;
alter table public.appointments add constraint appointments_no_overlap exclude using gist (
  clinic_id with =,
  (coalesce(practitioner_id, '00000000-0000-0000-0000-000000000000'::uuid)) with =,
  tstzrange(starts_at, ends_at, '[)') with &&) where (status = 'booked');
create index appointments_practitioner_start on public.appointments (practitioner_id, starts_at)
  where practitioner_id is not null and status = 'booked';

alter table public.practitioners enable row level security;
alter table public.practitioner_hours enable row level security;
revoke all on public.practitioners, public.practitioner_hours from anon, authenticated, public;
grant all on public.practitioners, public.practitioner_hours to service_role;
grant select on public.practitioners, public.practitioner_hours to authenticated;
create policy members_read on public.practitioners for select to authenticated
  using (clinic_id in (select clinic_id from public.clinic_members));
create policy members_read on public.practitioner_hours for select to authenticated
  using (clinic_id in (select clinic_id from public.clinic_members));
grant select on public.practitioners, public.practitioner_hours to vapi_clinic;
create policy own_clinic on public.practitioners for select to vapi_clinic
  using (clinic_id = (select private.request_clinic_id()));
create policy own_clinic on public.practitioner_hours for select to vapi_clinic
  using (clinic_id = (select private.request_clinic_id()));

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

-- Opening hours as operators give them ([{weekday, opens, closes}, ...]), checked one by one.
create function private.parse_opening_hours(p_hours jsonb)
returns table (weekday smallint, opens time, closes time)
language plpgsql immutable set search_path = '' as $$
declare
  v_entry jsonb;
begin
  perform private.require(jsonb_typeof(p_hours) = 'array' and jsonb_array_length(p_hours) > 0,
                          'Give at least one period of opening hours');
  for v_entry in select value from jsonb_array_elements(p_hours) loop
    perform private.require(jsonb_typeof(v_entry) = 'object', 'Each period of opening hours is an object');
    perform private.require(
      jsonb_typeof(v_entry -> 'weekday') = 'number' and (v_entry ->> 'weekday') ~ '^[1-7]$',
      format('Opening hours: weekday must be 1 (Monday) to 7 (Sunday), not %s', coalesce(v_entry ->> 'weekday', 'missing')));
    perform private.require(
      coalesce(v_entry ->> 'opens', '') ~ '^([01][0-9]|2[0-3]):[0-5][0-9]$'
        and coalesce(v_entry ->> 'closes', '') ~ '^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$',
      'Opening hours: times are HH:MM, 24-hour clock');
    perform private.require((v_entry ->> 'closes') > (v_entry ->> 'opens'),
      format('Opening hours: day %s closes (%s) before it opens (%s)',
             v_entry ->> 'weekday', v_entry ->> 'closes', v_entry ->> 'opens'));
    weekday := (v_entry ->> 'weekday')::smallint;
    opens := (v_entry ->> 'opens')::time;
    closes := (v_entry ->> 'closes')::time;
    return next;
  end loop;
end
$$;

-- The services a practitioner offers, spelt as the clinic spells them; null stands for all of them.
create function private.practitioner_services(p_clinic_id uuid, p_services jsonb) returns text[]
language plpgsql stable set search_path = '' as $$
declare
  v_wanted text;
  v_name text;
  v_names text[] := '{}';
begin
  if p_services is null or jsonb_typeof(p_services) = 'null' then
    return null;
  end if;
  perform private.require(jsonb_typeof(p_services) = 'array' and jsonb_array_length(p_services) between 1 and 100,
                          'services must be a list of 1 to 100 of the clinic''s services (or null for all of them)');
  for v_wanted in select value #>> '{}' from jsonb_array_elements(p_services) loop
    select s.name into v_name from public.clinic_services s
     where s.clinic_id = p_clinic_id and lower(s.name) = lower(btrim(coalesce(v_wanted, '')));
    if v_name is null then
      raise exception using errcode = 'P0001', message = format(
        'The clinic has no service "%s". Its services: %s', private.printable(coalesce(v_wanted, ''), 80),
        (select string_agg(s.name, ', ' order by s.name) from public.clinic_services s where s.clinic_id = p_clinic_id));
    end if;
    if not v_name = any (v_names) then
      v_names := v_names || v_name;
    end if;
  end loop;
  return v_names;
end
$$;

create function private.set_practitioner_hours(p_practitioner public.practitioners, p_hours jsonb) returns void
language plpgsql set search_path = '' as $$
declare
  v_period record;
begin
  delete from public.practitioner_hours where practitioner_id = p_practitioner.id;
  if p_hours is null or jsonb_typeof(p_hours) = 'null' then
    return;  -- the clinic's hours
  end if;
  for v_period in select * from private.parse_opening_hours(p_hours) loop
    begin
      insert into public.practitioner_hours (clinic_id, practitioner_id, weekday, opens, closes)
      values (p_practitioner.clinic_id, p_practitioner.id, v_period.weekday, v_period.opens, v_period.closes);
    exception when exclusion_violation then
      raise exception using errcode = 'P0001',
        message = format('Opening hours: two periods overlap on day %s', v_period.weekday);
    end;
  end loop;
end
$$;

create function private.check_practitioner_name(p_clinic_id uuid, p_name text, p_except uuid) returns text
language plpgsql stable set search_path = '' as $$
begin
  perform private.require(length(btrim(coalesce(p_name, ''))) between 1 and 100 and p_name !~ '[[:cntrl:]]',
                          'A practitioner''s name must be 1 to 100 printable characters');
  perform private.require(
    not exists (select from public.practitioners p
                where p.clinic_id = p_clinic_id and lower(btrim(p.name)) = lower(btrim(p_name))
                  and p.id is distinct from p_except),
    format('The clinic already has a practitioner called "%s"', btrim(p_name)));
  return btrim(p_name);
end
$$;

create function private.check_calendar_id(p_calendar_id text) returns text
language plpgsql immutable set search_path = '' as $$
begin
  perform private.require(p_calendar_id is null or length(btrim(p_calendar_id)) between 1 and 1024,
                          'The calendar id must be 1 to 1024 characters');
  return nullif(btrim(p_calendar_id), '');
end
$$;

create function public.add_practitioner(
  p_clinic_id uuid, p_name text, p_services jsonb default null, p_opening_hours jsonb default null,
  p_calendar_id text default null
) returns uuid
language plpgsql set search_path = '' as $$
declare
  v_practitioner public.practitioners;
begin
  perform private.require(exists (select from public.clinics where id = p_clinic_id),
                          format('No clinic with id %s', p_clinic_id));
  insert into public.practitioners (clinic_id, name, services, calendar_id)
  values (p_clinic_id, private.check_practitioner_name(p_clinic_id, p_name, null),
          private.practitioner_services(p_clinic_id, p_services), private.check_calendar_id(p_calendar_id))
  returning * into v_practitioner;
  perform private.set_practitioner_hours(v_practitioner, p_opening_hours);
  return v_practitioner.id;
end
$$;

-- p_changes names only what changes: name, services (null: all), opening_hours (null: the
-- clinic's), calendar_id (null: the clinic's), active (true takes a deactivated one back).
create function public.change_practitioner(p_practitioner_id uuid, p_changes jsonb) returns void
language plpgsql set search_path = '' as $$
declare
  v_practitioner public.practitioners;
  v_unknown text;
begin
  select * into v_practitioner from public.practitioners where id = p_practitioner_id for update;
  perform private.require(found, format('No practitioner with id %s', p_practitioner_id));
  perform private.require(jsonb_typeof(p_changes) = 'object' and p_changes <> '{}'::jsonb, 'Nothing to change');
  select string_agg(k, ', ') into v_unknown from jsonb_object_keys(p_changes) k
   where k not in ('name', 'services', 'opening_hours', 'calendar_id', 'active');
  perform private.require(v_unknown is null, format('Unknown change: %s', v_unknown));
  if p_changes ? 'name' then
    update public.practitioners
       set name = private.check_practitioner_name(clinic_id, p_changes ->> 'name', id)
     where id = p_practitioner_id;
  end if;
  if p_changes ? 'services' then
    update public.practitioners
       set services = private.practitioner_services(clinic_id, p_changes -> 'services')
     where id = p_practitioner_id;
  end if;
  if p_changes ? 'calendar_id' then
    update public.practitioners set calendar_id = private.check_calendar_id(p_changes ->> 'calendar_id')
     where id = p_practitioner_id;
  end if;
  if p_changes ? 'opening_hours' then
    perform private.set_practitioner_hours(v_practitioner, p_changes -> 'opening_hours');
  end if;
  if p_changes ? 'active' then
    perform private.require(jsonb_typeof(p_changes -> 'active') = 'boolean', 'active is true or false');
    perform private.require((p_changes ->> 'active')::boolean,
                            'To deactivate a practitioner use deactivate_practitioner (it says what happens to their bookings)');
    update public.practitioners set active = true, deactivated_at = null where id = p_practitioner_id;
  end if;
end
$$;

create function public.clinic_practitioners(p_clinic_id uuid)
returns table (id uuid, name text, services text[], calendar_id text, active boolean,
               opening_hours jsonb, upcoming_bookings integer)
language sql stable set search_path = '' as $$
  select p.id, p.name, p.services, p.calendar_id, p.active,
         (select jsonb_agg(jsonb_build_object('weekday', h.weekday, 'opens', to_char(h.opens, 'HH24:MI'),
                                              'closes', case when h.closes = time '24:00' then '24:00'
                                                             else to_char(h.closes, 'HH24:MI') end)
                           order by h.weekday, h.opens)
            from public.practitioner_hours h where h.practitioner_id = p.id),
         (select count(*)::integer from public.appointments a
           where a.practitioner_id = p.id and a.status = 'booked' and a.ends_at > now())
  from public.practitioners p
  where p.clinic_id = p_clinic_id
  order by p.active desc, lower(p.name), p.id
$$;

revoke execute on function
  private.parse_opening_hours(jsonb),
  private.practitioner_services(uuid, jsonb),
  private.set_practitioner_hours(public.practitioners, jsonb),
  private.check_practitioner_name(uuid, text, uuid),
  private.check_calendar_id(text)
  from public;
grant execute on function
  private.parse_opening_hours(jsonb),
  private.practitioner_services(uuid, jsonb),
  private.set_practitioner_hours(public.practitioners, jsonb),
  private.check_practitioner_name(uuid, text, uuid),
  private.check_calendar_id(text),
  private.printable(text, integer)
  to service_role;
revoke execute on function
  public.add_practitioner(uuid, text, jsonb, jsonb, text),
  public.change_practitioner(uuid, jsonb),
  public.clinic_practitioners(uuid)
  from public, anon, authenticated;
grant execute on function
  public.add_practitioner(uuid, text, jsonb, jsonb, text),
  public.change_practitioner(uuid, jsonb),
  public.clinic_practitioners(uuid)
  to service_role;

-- The profile that `vapi-tools` describes to the model names the practitioners and their services.
create or replace function public.clinic_profile(p_clinic_id uuid) returns jsonb
language plpgsql stable set search_path = '' as $$
declare
  v_profile jsonb;
begin
  select jsonb_build_object(
           'id', c.id, 'name', c.name, 'time_zone', c.time_zone, 'calendar_id', c.calendar_id,
           'slot_minutes', c.slot_minutes, 'booking_horizon_days', c.booking_horizon_days,
           'services', coalesce((
             select jsonb_agg(jsonb_build_object('name', s.name, 'duration_minutes', s.duration_minutes,
                                                 'is_default', s.is_default)
                              order by s.is_default desc, s.name)
             from public.clinic_services s where s.clinic_id = c.id), '[]'::jsonb),
           'opening_hours', coalesce((
             select jsonb_agg(jsonb_build_object('weekday', h.weekday, 'opens', to_char(h.opens, 'HH24:MI'),
                                                 'closes', to_char(h.closes, 'HH24:MI'))
                              order by h.weekday, h.opens)
             from public.clinic_opening_hours h where h.clinic_id = c.id), '[]'::jsonb),
           'practitioners', coalesce((
             select jsonb_agg(jsonb_build_object(
                      'id', p.id, 'name', p.name,
                      'services', coalesce(to_jsonb(p.services),
                                           (select jsonb_agg(s.name order by s.name)
                                              from public.clinic_services s where s.clinic_id = c.id)),
                      'calendar_id', p.calendar_id)
                    order by lower(p.name), p.id)
             from public.practitioners p where p.clinic_id = c.id and p.active), '[]'::jsonb),
           'connection', (
             select jsonb_build_object('status', k.status, 'google_account', k.google_account,
                                       'last_error', k.last_error,
                                       'refresh_token_expires_at', k.refresh_token_expires_at)
             from public.calendar_connections k where k.clinic_id = c.id))
    into v_profile
  from public.clinics c
  where c.id = p_clinic_id;
  if v_profile is null then
    raise exception 'No clinic with id %', p_clinic_id using errcode = 'P0002';
  end if;
  return v_profile;
end
$$;
