-- Practitioners: several diaries in one clinic.
--
-- - A practitioner belongs to one clinic: a display name (unique in the clinic, ignoring case), the
--   services they offer (null: every service of the clinic), their own opening hours
--   (practitioner_hours; none: the clinic's), their own Google calendar (a calendar the clinic's
--   connected account can write to, e.g. one shared with it; null: the clinic's calendar), and
--   whether they take bookings. Practitioners are deactivated, never deleted: bookings name them.
-- - A clinic without active practitioners has the one diary it always had and answers exactly as
--   before. Bookings name their practitioner in appointments.practitioner_id (30_appointments); the
--   diary rules that follow from it are in 40_diary_rules.
-- - Callers' names are matched forgivingly: case, punctuation and titles (Dr, Doctor, Mr, Mrs, Ms,
--   Miss, Mx, Prof) do not count, and a first or last name on its own will do; "anyone", "whoever
--   is free", "no preference" and the like mean anyone. An unknown, inactive or ambiguous name gets
--   an answer that lists the practitioners (and their services).
-- - Operators add, change, deactivate and list practitioners with add_practitioner,
--   change_practitioner, deactivate_practitioner and clinic_practitioners (service role only).


-- Tables ------------------------------------------------------------------------------------------

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
  -- The target of the composite foreign keys that keep a practitioner's hours and bookings in
  -- the practitioner's own clinic.
  unique (clinic_id, id)
);
comment on table public.practitioners is
  'The people a clinic books patients with. services null: every service of the clinic; calendar_id null: the clinic''s calendar; no practitioner_hours: the clinic''s opening hours.';
create unique index practitioners_name_ci on public.practitioners (clinic_id, lower(btrim(name)));

alter table public.practitioners enable row level security;
revoke all on table public.practitioners from anon, authenticated, service_role;
grant all on table public.practitioners to service_role;
grant select on table public.practitioners to authenticated;
grant select on table public.practitioners to vapi_clinic;
create policy members_read on public.practitioners for select to authenticated
  using (clinic_id in (select clinic_id from public.clinic_members));
create policy own_clinic on public.practitioners for select to vapi_clinic
  using (clinic_id = (select private.request_clinic_id()));

-- As clinic_opening_hours: ISO weekday, `closes` may be 24:00, a day's periods never overlap.
-- A period is identified by its practitioner, day and opening time: two periods of one day that
-- open together would overlap, so the exclusion constraint already kept (practitioner_id, weekday,
-- opens) unique, and clinic_id follows from practitioner_id (the foreign key). The primary key leads
-- with the foreign key's columns, in its order, so its index also serves the foreign key (deleting a
-- practitioner, or a clinic, finds their hours by it).
create table public.practitioner_hours (
  clinic_id uuid not null,
  practitioner_id uuid not null,
  weekday smallint not null check (weekday between 1 and 7),
  opens time not null,
  closes time not null,
  check (closes > opens),
  primary key (clinic_id, practitioner_id, weekday, opens),
  foreign key (clinic_id, practitioner_id) references public.practitioners (clinic_id, id) on delete cascade,
  exclude using gist (practitioner_id with =, weekday with =,
                      tsrange(date '2000-01-01' + opens, date '2000-01-01' + closes) with &&)
);
comment on table public.practitioner_hours is
  'A practitioner''s own hours, in the clinic''s time zone; a practitioner without any works the clinic''s opening hours.';

alter table public.practitioner_hours enable row level security;
revoke all on table public.practitioner_hours from anon, authenticated, service_role;
grant all on table public.practitioner_hours to service_role;
grant select on table public.practitioner_hours to authenticated;
grant select on table public.practitioner_hours to vapi_clinic;
create policy members_read on public.practitioner_hours for select to authenticated
  using (clinic_id in (select clinic_id from public.clinic_members));
create policy own_clinic on public.practitioner_hours for select to vapi_clinic
  using (clinic_id = (select private.request_clinic_id()));


-- Operator commands (service_role only) -------------------------------------------------------------

-- A practitioner of an existing clinic: p_services names some of the clinic's services (null: all
-- of them), p_opening_hours is [{weekday, opens, closes}, ...] as for create_clinic (null: the
-- clinic's hours), p_calendar_id their own calendar (null: the clinic's). Bad input is refused
-- with a sentence the operator can act on.
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
revoke all on function public.add_practitioner(p_clinic_id uuid, p_name text, p_services jsonb, p_opening_hours jsonb, p_calendar_id text) from public, anon, authenticated, service_role;
grant execute on function public.add_practitioner(p_clinic_id uuid, p_name text, p_services jsonb, p_opening_hours jsonb, p_calendar_id text) to service_role;

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
revoke all on function public.change_practitioner(p_practitioner_id uuid, p_changes jsonb) from public, anon, authenticated, service_role;
grant execute on function public.change_practitioner(p_practitioner_id uuid, p_changes jsonb) to service_role;

-- Stops a practitioner taking bookings at once. Their bookings ahead stay booked with them (the
-- patients were told so; the assistant can still cancel and move them, a move going to anyone free
-- unless a practitioner is named), and their calendar is still synced and read while they have any;
-- with p_reassign each one not yet started is moved to a colleague free at that time, by the fair
-- rule that books "anyone" (choose_practitioner), and those no one can take stay. Returns every
-- booking ahead and its fate ('moved' or 'kept'). It takes the clinic's diary lock first, as the
-- tools do, so no booking can race the moves.
create function public.deactivate_practitioner(p_practitioner_id uuid, p_reassign boolean default false)
returns table (appointment_id uuid, reference text, starts_at timestamptz, service text, practitioner_name text,
               outcome text)
language plpgsql set search_path = '' as $$
declare
  v_practitioner public.practitioners;
  v_clinic public.clinics;
  v_appointment public.appointments;
  v_to uuid;
begin
  select * into v_practitioner from public.practitioners where id = p_practitioner_id;
  perform private.require(found, format('No practitioner with id %s', p_practitioner_id));
  select * into v_clinic from public.clinics where id = v_practitioner.clinic_id;
  perform private.lock_diary(v_clinic.id);  -- outside a Vapi call it waits as long as lock_timeout allows
  update public.practitioners set active = false, deactivated_at = coalesce(deactivated_at, now())
   where id = p_practitioner_id;
  for v_appointment in
    select * from public.appointments a
    where a.practitioner_id = p_practitioner_id and a.status = 'booked' and a.ends_at > now()
    order by a.starts_at, a.id
  loop
    v_to := null;
    if p_reassign and v_appointment.starts_at > now() then
      v_to := private.choose_practitioner(v_clinic, v_appointment.service, v_appointment.starts_at,
                (extract(epoch from v_appointment.ends_at - v_appointment.starts_at) / 60)::integer, v_appointment.id);
    end if;
    if v_to is not null then
      update public.appointments set practitioner_id = v_to where id = v_appointment.id;
    end if;
    appointment_id := v_appointment.id;
    reference := v_appointment.reference;
    starts_at := v_appointment.starts_at;
    service := v_appointment.service;
    practitioner_name := private.practitioner_name(coalesce(v_to, p_practitioner_id));
    outcome := case when v_to is not null then 'moved' else 'kept' end;
    return next;
  end loop;
end
$$;
revoke all on function public.deactivate_practitioner(p_practitioner_id uuid, p_reassign boolean) from public, anon, authenticated, service_role;
grant execute on function public.deactivate_practitioner(p_practitioner_id uuid, p_reassign boolean) to service_role;

-- Every practitioner of a clinic, active ones first, with their own hours (null: the clinic's) and
-- how many bookings they still have ahead (the ones deactivate_practitioner would report).
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
revoke all on function public.clinic_practitioners(p_clinic_id uuid) from public, anon, authenticated, service_role;
grant execute on function public.clinic_practitioners(p_clinic_id uuid) to service_role;

-- What the commands store, checked: each says what is wrong before the table's own checks would
-- refuse it with a constraint name.

-- A practitioner's name, trimmed: 1 to 100 printable characters, and no other practitioner of the
-- clinic (p_except: the one being renamed) has it, ignoring case (practitioners_name_ci).
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
revoke all on function private.check_practitioner_name(p_clinic_id uuid, p_name text, p_except uuid) from public;
grant execute on function private.check_practitioner_name(p_clinic_id uuid, p_name text, p_except uuid) to service_role;

-- The services a practitioner offers, spelt as the clinic spells them; null stands for all of them.
create function private.practitioner_services(p_clinic_id uuid, p_services jsonb) returns text[]
language plpgsql stable set search_path = '' as $$
declare
  v_wanted text;
  v_name text;
  v_names text[] := '{}'::text[];  -- typed: plpgsql_check (supabase db lint) warns on an untyped literal
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
revoke all on function private.practitioner_services(p_clinic_id uuid, p_services jsonb) from public;
grant execute on function private.practitioner_services(p_clinic_id uuid, p_services jsonb) to service_role;

-- A practitioner's own calendar id, trimmed; null: none (the clinic's calendar).
create function private.check_calendar_id(p_calendar_id text) returns text
language plpgsql immutable set search_path = '' as $$
begin
  perform private.require(p_calendar_id is null or length(btrim(p_calendar_id)) between 1 and 1024,
                          'The calendar id must be 1 to 1024 characters');
  return nullif(btrim(p_calendar_id), '');
end
$$;
revoke all on function private.check_calendar_id(p_calendar_id text) from public;
grant execute on function private.check_calendar_id(p_calendar_id text) to service_role;

-- Replaces a practitioner's own hours with p_hours (parse_opening_hours' form); null: none, so
-- they work the clinic's opening hours.
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
revoke all on function private.set_practitioner_hours(p_practitioner public.practitioners, p_hours jsonb) from public;
grant execute on function private.set_practitioner_hours(p_practitioner public.practitioners, p_hours jsonb) to service_role;


-- Names as callers say them (the Vapi tools) ----------------------------------------------------------

-- The practitioner a caller named: null for anyone; refuses unknown, inactive and ambiguous names.
-- An exact match of the name's words wins; otherwise every practitioner whose name contains all the
-- words said ("Patel" for "Dr Priya Patel") is a candidate, and only one may be.
create function private.pick_practitioner(p_clinic public.clinics, p_name text) returns uuid
language plpgsql stable set search_path = '' as $$
declare
  v_words text := private.name_words(p_name);
  v_found uuid[];
  v_names text;
begin
  if private.means_anyone(p_name) then
    return null;
  end if;
  if not private.clinic_has_practitioners(p_clinic.id) then
    perform private.refuse('This clinic does not book with a particular practitioner: leave practitioner out');
  end if;
  if v_words <> '' then
    select array_agg(p.id order by p.id) into v_found from public.practitioners p
     where p.clinic_id = p_clinic.id and p.active and private.name_words(p.name) = v_words;
    if v_found is null then
      select array_agg(p.id order by p.id) into v_found from public.practitioners p
       where p.clinic_id = p_clinic.id and p.active
         and string_to_array(v_words, ' ') <@ string_to_array(private.name_words(p.name), ' ');
    end if;
  end if;
  if cardinality(v_found) = 1 then
    return v_found[1];
  end if;
  if cardinality(v_found) > 1 then
    select string_agg(p.name, ', ' order by lower(p.name)) into v_names
      from public.practitioners p where p.id = any (v_found);
    perform private.refuse(format('"%s" could be %s. Which one?', private.printable(p_name), v_names));
  end if;
  select string_agg(p.name, ', ' order by lower(p.name)) into v_names from public.practitioners p
   where p.clinic_id = p_clinic.id and not p.active and v_words <> ''
     and string_to_array(v_words, ' ') <@ string_to_array(private.name_words(p.name), ' ');
  if v_names is not null then
    perform private.refuse(format('%s no longer takes bookings. The practitioners are: %s',
                                  v_names, private.practitioner_roster(p_clinic.id)));
  end if;
  perform private.refuse(format('No practitioner here is called "%s". The practitioners are: %s',
                                private.printable(p_name), private.practitioner_roster(p_clinic.id)));
  return null;
end
$$;
revoke all on function private.pick_practitioner(p_clinic public.clinics, p_name text) from public;
grant execute on function private.pick_practitioner(p_clinic public.clinics, p_name text) to vapi_clinic;
grant execute on function private.pick_practitioner(p_clinic public.clinics, p_name text) to service_role;

-- A name as matching compares it: lower case, punctuation as spaces, titles (Dr, Doctor, Mr, Mrs,
-- Ms, Miss, Mx, Prof, Professor) left out.
create function private.name_words(p_name text) returns text
language sql immutable set search_path = '' as $$
  select btrim(regexp_replace(
    regexp_replace(regexp_replace(lower(coalesce(p_name, '')), '[^[:alnum:]]+', ' ', 'g'),
                   '\m(dr|doctor|mr|mrs|ms|miss|mx|prof|professor)\M', ' ', 'g'),
    ' +', ' ', 'g'))
$$;
revoke all on function private.name_words(p_name text) from public;
grant execute on function private.name_words(p_name text) to vapi_clinic;
grant execute on function private.name_words(p_name text) to service_role;

-- Whether what the caller said for a practitioner means anyone: nothing at all, or a phrase such as
-- "anyone", "whoever", "no preference", "first available" or "don't mind".
create function private.means_anyone(p_name text) returns boolean
language sql immutable set search_path = '' as $$
  select p_name is null
      or private.name_words(p_name) ~ '^(any|anyone|anybody|either|whoever|whichever|no preference|first available|no one in particular|nobody in particular|not fussy|don t mind|doesn t matter|does not matter)( |$)'
$$;
revoke all on function private.means_anyone(p_name text) from public;
grant execute on function private.means_anyone(p_name text) to vapi_clinic;
grant execute on function private.means_anyone(p_name text) to service_role;

-- The clinic's active practitioners as answers list them, each with their services when they do
-- not offer all: 'Dr Lee (Check-up, Hygiene); Dr Patel'.
create function private.practitioner_roster(p_clinic_id uuid) returns text
language sql stable set search_path = '' as $$
  select string_agg(p.name || coalesce(' (' || array_to_string(p.services, ', ') || ')', ''), '; '
                    order by lower(p.name), p.id)
  from public.practitioners p where p.clinic_id = p_clinic_id and p.active
$$;
revoke all on function private.practitioner_roster(p_clinic_id uuid) from public;
grant execute on function private.practitioner_roster(p_clinic_id uuid) to vapi_clinic;
grant execute on function private.practitioner_roster(p_clinic_id uuid) to service_role;

-- A practitioner's display name (null for null: a booking with the clinic as a whole).
create function private.practitioner_name(p_practitioner uuid) returns text
language sql stable set search_path = '' as $$
  select name from public.practitioners where id = p_practitioner
$$;
revoke all on function private.practitioner_name(p_practitioner uuid) from public;
grant execute on function private.practitioner_name(p_practitioner uuid) to vapi_clinic;
grant execute on function private.practitioner_name(p_practitioner uuid) to service_role;

-- ' with <name>' for an answer about a booking, or '' for one with the clinic as a whole.
create function private.with_whom(p_practitioner uuid) returns text
language sql stable set search_path = '' as $$
  select coalesce(' with ' || private.practitioner_name(p_practitioner), '')
$$;
revoke all on function private.with_whom(p_practitioner uuid) from public;
grant execute on function private.with_whom(p_practitioner uuid) to vapi_clinic;
grant execute on function private.with_whom(p_practitioner uuid) to service_role;


-- Who offers what -----------------------------------------------------------------------------------

-- Whether the clinic books with practitioners at all: only active ones count. One without has the
-- one diary it always had.
create function private.clinic_has_practitioners(p_clinic_id uuid) returns boolean
language sql stable set search_path = '' as $$
  select exists (select from public.practitioners where clinic_id = p_clinic_id and active)
$$;
revoke all on function private.clinic_has_practitioners(p_clinic_id uuid) from public;
grant execute on function private.clinic_has_practitioners(p_clinic_id uuid) to vapi_clinic;
grant execute on function private.clinic_has_practitioners(p_clinic_id uuid) to service_role;

-- The active practitioners offering a service, in name order: the diaries a booking for anyone may
-- go to. Whether their calendars can be trusted now is for the caller to ask (diary_mirror_stale).
create function private.offering_practitioners(p_clinic public.clinics, p_service text) returns uuid[]
language sql stable set search_path = '' as $$
  select coalesce(array_agg(p.id order by lower(p.name), p.id), '{}')
  from public.practitioners p
  where p.clinic_id = p_clinic.id and p.active
    and (p.services is null or p_service = any (p.services))
$$;
revoke all on function private.offering_practitioners(p_clinic public.clinics, p_service text) from public;
grant execute on function private.offering_practitioners(p_clinic public.clinics, p_service text) to vapi_clinic;
grant execute on function private.offering_practitioners(p_clinic public.clinics, p_service text) to service_role;
