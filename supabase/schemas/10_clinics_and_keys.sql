-- FUNCTION private.authenticate_request()
-- As in the clinics_and_keys migration, but a key row another request is stamping right now is
-- left alone (SKIP LOCKED) instead of waited for: concurrent calls of one clinic used to queue
-- here, once a minute, behind the whole transaction of the call that stamped it.
create or replace function private.authenticate_request() returns uuid
language plpgsql volatile security definer
set search_path = ''
as $$
declare
  v_clinic_id uuid := private.request_clinic_id();
begin
  if v_clinic_id is not null then
    update public.clinic_api_keys
       set last_used_at = now()
     where key_hash = (select k.key_hash from public.clinic_api_keys k
                 where k.key_hash = pg_catalog.sha256(pg_catalog.convert_to(
                         current_setting('request.headers', true)::json ->> 'x-clinic-key', 'UTF8'))
                   and (k.last_used_at is null or k.last_used_at < now() - interval '1 minute')
                 for no key update skip locked);
  end if;
  return v_clinic_id;
end
$$;

-- TABLE public.clinics
CREATE TABLE public.clinics (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    name text NOT NULL,
    time_zone text DEFAULT 'Europe/London'::text NOT NULL,
    calendar_id text DEFAULT 'primary'::text NOT NULL,
    phone_country_code text DEFAULT '44'::text NOT NULL,
    slot_minutes integer DEFAULT 15 NOT NULL,
    min_notice_minutes integer DEFAULT 60 NOT NULL,
    booking_horizon_days integer DEFAULT 90 NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    mirror_max_age_minutes integer DEFAULT 10 NOT NULL,
    CONSTRAINT clinics_booking_horizon_days_check CHECK (((booking_horizon_days >= 1) AND (booking_horizon_days <= 730))),
    CONSTRAINT clinics_calendar_id_check CHECK (((length(calendar_id) >= 1) AND (length(calendar_id) <= 1024))),
    CONSTRAINT clinics_min_notice_minutes_check CHECK (((min_notice_minutes >= 0) AND (min_notice_minutes <= 10080))),
    CONSTRAINT clinics_mirror_max_age_minutes_check CHECK (((mirror_max_age_minutes >= 1) AND (mirror_max_age_minutes <= 1440))),
    CONSTRAINT clinics_name_check CHECK (((length(btrim(name)) >= 1) AND (length(btrim(name)) <= 200))),
    CONSTRAINT clinics_phone_country_code_check CHECK ((phone_country_code ~ '^[1-9][0-9]{0,2}$'::text)),
    CONSTRAINT clinics_slot_minutes_check CHECK (((slot_minutes >= 5) AND (slot_minutes <= 240))),
    CONSTRAINT clinics_time_zone_check CHECK (private.is_valid_time_zone(time_zone))
);

-- COMMENT public.TABLE clinics
COMMENT ON TABLE public.clinics IS 'Tenants. Times of day (opening hours) are in the clinic''s IANA time_zone.';

-- COMMENT public.COLUMN clinics.mirror_max_age_minutes
COMMENT ON COLUMN public.clinics.mirror_max_age_minutes IS 'How old the mirror of the clinic''s Google Calendar may be before the assistant stops offering times.';

-- FUNCTION private.opening_hours_text(uuid, integer)
create function private.opening_hours_text(p_clinic_id uuid, p_weekday integer) returns text
language sql stable
set search_path = ''
as $$
  select string_agg(to_char(opens, 'HH24:MI') || '-' ||
                    case when closes = time '24:00' then '24:00' else to_char(closes, 'HH24:MI') end,
                    ', ' order by opens)
  from public.clinic_opening_hours
  where clinic_id = p_clinic_id and weekday = p_weekday
$$;

-- FUNCTION private.parse_opening_hours(jsonb)
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

-- TABLE public.clinic_services
CREATE TABLE public.clinic_services (
    clinic_id uuid NOT NULL,
    name text NOT NULL,
    duration_minutes integer NOT NULL,
    is_default boolean DEFAULT false NOT NULL,
    CONSTRAINT clinic_services_duration_minutes_check CHECK (((duration_minutes >= 5) AND (duration_minutes <= 480))),
    CONSTRAINT clinic_services_name_check CHECK (length(btrim(name)) between 1 and 80 and name !~ '[[:cntrl:]]')
);

-- FUNCTION private.pick_service(uuid, text)
-- The service asked for (case-insensitive), else the clinic's default, else its only one.
create function private.pick_service(p_clinic_id uuid, p_name text) returns public.clinic_services
language plpgsql stable
set search_path = ''
as $$
declare
  v_service public.clinic_services;
  v_offered text;
begin
  if p_name is not null then
    select * into v_service from public.clinic_services
    where clinic_id = p_clinic_id and lower(name) = lower(p_name);
  else
    select * into v_service from public.clinic_services
    where clinic_id = p_clinic_id
    order by is_default desc
    limit 1;
    if (select count(*) from public.clinic_services where clinic_id = p_clinic_id) > 1
       and not v_service.is_default then
      v_service := null;
    end if;
  end if;
  if v_service.name is null then
    select string_agg(name, ', ' order by name) into v_offered
    from public.clinic_services where clinic_id = p_clinic_id;
    if v_offered is null then
      perform private.refuse('This clinic has no bookable services set up yet');
    elsif p_name is null then
      perform private.refuse(format('Which service? This clinic offers: %s', v_offered));
    else
      perform private.refuse(format('This clinic does not offer "%s". It offers: %s',
                                    private.printable(p_name), v_offered));
    end if;
  end if;
  return v_service;
end
$$;

-- FUNCTION private.request_clinic_id()
-- The clinic whose valid key came with this request, or null. Used by every tool policy.
create function private.request_clinic_id() returns uuid
language sql stable security definer
set search_path = ''
as $$
  select k.clinic_id
  from public.clinic_api_keys k
  where k.key_hash = pg_catalog.sha256(pg_catalog.convert_to(
          nullif(current_setting('request.headers', true), '')::json ->> 'x-clinic-key', 'UTF8'))
    and (k.revoked_at is null or k.revoked_at > now())
$$;

-- FUNCTION public.clinic_keys(uuid)
-- A clinic's keys, without the keys themselves (only their hash is kept).
create function public.clinic_keys(p_clinic_id uuid)
returns table (id uuid, key_prefix text, label text, created_at timestamptz, revoked_at timestamptz,
               last_used_at timestamptz)
language sql stable
set search_path = ''
as $$
  select id, key_prefix, label, created_at, revoked_at, last_used_at
  from public.clinic_api_keys
  where clinic_id = p_clinic_id
  order by created_at
$$;

-- FUNCTION public.clinic_profile(uuid)
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

-- FUNCTION public.create_clinic(text, text, text, jsonb, jsonb, text)
-- A clinic with its opening hours and services, in one transaction, refusing bad input with
-- a sentence an operator can act on. p_opening_hours: [{"weekday": 1..7 (1 = Monday),
-- "opens": "09:00", "closes": "17:00"}, ...]; p_services: [{"name", "duration_minutes",
-- "is_default"?}, ...] (the first is the default unless one says otherwise).
create function public.create_clinic(
  p_name text,
  p_time_zone text default 'Europe/London',
  p_calendar_id text default 'primary',
  p_opening_hours jsonb default null,
  p_services jsonb default null,
  p_phone_country_code text default '44'
)
returns uuid
language plpgsql volatile
set search_path = ''
as $$
declare
  v_clinic_id uuid;
  v_hours jsonb := coalesce(p_opening_hours, '[]'::jsonb);
  v_services jsonb := coalesce(p_services, '[]'::jsonb);
  v_entry jsonb;
  v_defaults integer;
begin
  perform private.require(length(btrim(coalesce(p_name, ''))) between 1 and 200,
                          'The clinic name must be 1 to 200 characters');
  perform private.require(private.is_valid_time_zone(p_time_zone),
                          format('Unknown time zone "%s" (use an IANA name such as Europe/London)', p_time_zone));
  perform private.require(length(coalesce(p_calendar_id, '')) between 1 and 1024,
                          'The calendar id must be 1 to 1024 characters ("primary" is the account''s own calendar)');
  perform private.require(coalesce(p_phone_country_code, '') ~ '^[1-9][0-9]{0,2}$',
                          'The phone country code must be 1 to 3 digits without "+" (44 for the UK)');
  perform private.require(jsonb_typeof(v_hours) = 'array' and jsonb_array_length(v_hours) > 0,
                          'Give the clinic at least one period of opening hours');
  perform private.require(jsonb_typeof(v_services) = 'array' and jsonb_array_length(v_services) > 0,
                          'Give the clinic at least one service');

  insert into public.clinics (name, time_zone, calendar_id, phone_country_code)
  values (btrim(p_name), p_time_zone, p_calendar_id, p_phone_country_code)
  returning id into v_clinic_id;

  for v_entry in select value from jsonb_array_elements(v_hours) loop
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
    begin
      insert into public.clinic_opening_hours (clinic_id, weekday, opens, closes)
      values (v_clinic_id, (v_entry ->> 'weekday')::smallint, (v_entry ->> 'opens')::time,
              (v_entry ->> 'closes')::time);
    exception when exclusion_violation or unique_violation then
      raise exception using errcode = 'P0001',
        message = format('Opening hours: two periods overlap on day %s', v_entry ->> 'weekday');
    end;
  end loop;

  select count(*) into v_defaults from jsonb_array_elements(v_services) as s(service)
  where jsonb_typeof(service) = 'object' and service -> 'is_default' = 'true'::jsonb;
  perform private.require(v_defaults <= 1, 'Only one service can be the default');
  for v_entry in select value from jsonb_array_elements(v_services) loop
    perform private.require(jsonb_typeof(v_entry) = 'object', 'Each service is an object with a name and a length');
    perform private.require(
      length(btrim(coalesce(v_entry ->> 'name', ''))) between 1 and 80 and (v_entry ->> 'name') !~ '[[:cntrl:]]',
      'A service name must be 1 to 80 printable characters');
    perform private.require(
      jsonb_typeof(v_entry -> 'duration_minutes') = 'number'
        and (v_entry ->> 'duration_minutes') ~ '^[0-9]+$'
        and (v_entry ->> 'duration_minutes')::integer between 5 and 480,
      format('Service "%s": its length must be 5 to 480 whole minutes', v_entry ->> 'name'));
    begin
      insert into public.clinic_services (clinic_id, name, duration_minutes, is_default)
      values (v_clinic_id, btrim(v_entry ->> 'name'), (v_entry ->> 'duration_minutes')::integer,
              coalesce(v_entry -> 'is_default' = 'true'::jsonb, false));
    exception when unique_violation then
      raise exception using errcode = 'P0001',
        message = format('The service "%s" is listed twice', btrim(v_entry ->> 'name'));
    end;
  end loop;
  if v_defaults = 0 then
    update public.clinic_services set is_default = true
     where clinic_id = v_clinic_id and name = btrim(v_services -> 0 ->> 'name');
  end if;
  return v_clinic_id;
end
$$;

-- FUNCTION public.issue_clinic_key(uuid, text)
-- Key management, for operators (service_role only). The plain key is returned once and
-- never stored.
create function public.issue_clinic_key(p_clinic_id uuid, p_label text default '')
returns text
language plpgsql volatile
set search_path = ''
as $$
declare
  v_key text;
begin
  if not exists (select from public.clinics where id = p_clinic_id) then
    raise exception 'No clinic with id %', p_clinic_id using errcode = 'P0002';
  end if;
  v_key := 'ck_' || pg_catalog.translate(pg_catalog.encode(
             pg_catalog.uuid_send(gen_random_uuid()) || pg_catalog.uuid_send(gen_random_uuid()),
             'base64'), '+/=', '-_');
  insert into public.clinic_api_keys (clinic_id, key_hash, key_prefix, label)
  values (p_clinic_id, pg_catalog.sha256(pg_catalog.convert_to(v_key, 'UTF8')),
          left(v_key, 10), coalesce(p_label, ''));
  return v_key;
end
$$;

-- FUNCTION public.revoke_clinic_key(uuid)
create function public.revoke_clinic_key(p_key_id uuid)
returns void
language plpgsql volatile
set search_path = ''
as $$
begin
  update public.clinic_api_keys
     set revoked_at = least(coalesce(revoked_at, now()), now())
   where id = p_key_id;
  if not found then
    raise exception 'No clinic key with id %', p_key_id using errcode = 'P0002';
  end if;
end
$$;

-- FUNCTION public.rotate_clinic_key(uuid, text, interval)
-- Issues a new key and revokes the clinic's other keys after `p_grace` (default: at once),
-- so a deployed assistant can be switched over without a gap.
create function public.rotate_clinic_key(
  p_clinic_id uuid, p_label text default '', p_grace interval default '0'
)
returns text
language plpgsql volatile
set search_path = ''
as $$
declare
  v_key text;
begin
  if p_grace < interval '0' then
    raise exception 'The grace period cannot be negative' using errcode = 'P0001';
  end if;
  update public.clinic_api_keys
     set revoked_at = now() + p_grace
   where clinic_id = p_clinic_id
     and (revoked_at is null or revoked_at > now() + p_grace);
  v_key := public.issue_clinic_key(p_clinic_id, p_label);
  return v_key;
end
$$;

-- TABLE public.clinic_api_keys
CREATE TABLE public.clinic_api_keys (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    clinic_id uuid NOT NULL,
    key_hash bytea NOT NULL,
    key_prefix text NOT NULL,
    label text DEFAULT ''::text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    revoked_at timestamp with time zone,
    last_used_at timestamp with time zone,
    CONSTRAINT clinic_api_keys_key_hash_check CHECK ((length(key_hash) = 32)),
    CONSTRAINT clinic_api_keys_label_check CHECK ((length(label) <= 100))
);

-- TABLE public.clinic_members
CREATE TABLE public.clinic_members (
    clinic_id uuid NOT NULL,
    user_id uuid NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);

-- TABLE public.clinic_opening_hours
CREATE TABLE public.clinic_opening_hours (
    clinic_id uuid NOT NULL,
    weekday smallint NOT NULL,
    opens time without time zone NOT NULL,
    closes time without time zone NOT NULL,
    CONSTRAINT clinic_opening_hours_check CHECK ((closes > opens)),
    CONSTRAINT clinic_opening_hours_weekday_check CHECK (((weekday >= 1) AND (weekday <= 7)))
);

-- CONSTRAINT public.clinic_api_keys clinic_api_keys_key_hash_key
ALTER TABLE ONLY public.clinic_api_keys
    ADD CONSTRAINT clinic_api_keys_key_hash_key UNIQUE (key_hash);

-- CONSTRAINT public.clinic_api_keys clinic_api_keys_pkey
ALTER TABLE ONLY public.clinic_api_keys
    ADD CONSTRAINT clinic_api_keys_pkey PRIMARY KEY (id);

-- CONSTRAINT public.clinic_members clinic_members_pkey
ALTER TABLE ONLY public.clinic_members
    ADD CONSTRAINT clinic_members_pkey PRIMARY KEY (clinic_id, user_id);

-- CONSTRAINT public.clinic_opening_hours clinic_opening_hours_clinic_id_weekday_tsrange_excl
ALTER TABLE ONLY public.clinic_opening_hours
    ADD CONSTRAINT clinic_opening_hours_clinic_id_weekday_tsrange_excl EXCLUDE USING gist (clinic_id WITH =, weekday WITH =, tsrange(('2000-01-01'::date + opens), ('2000-01-01'::date + closes)) WITH &&);

-- CONSTRAINT public.clinic_opening_hours clinic_opening_hours_pkey
ALTER TABLE ONLY public.clinic_opening_hours
    ADD CONSTRAINT clinic_opening_hours_pkey PRIMARY KEY (clinic_id, weekday, opens);

-- CONSTRAINT public.clinic_services clinic_services_pkey
ALTER TABLE ONLY public.clinic_services
    ADD CONSTRAINT clinic_services_pkey PRIMARY KEY (clinic_id, name);

-- CONSTRAINT public.clinics clinics_pkey
ALTER TABLE ONLY public.clinics
    ADD CONSTRAINT clinics_pkey PRIMARY KEY (id);

-- INDEX public.clinic_api_keys_clinic
CREATE INDEX clinic_api_keys_clinic ON public.clinic_api_keys USING btree (clinic_id);

-- INDEX public.clinic_members_user
CREATE INDEX clinic_members_user ON public.clinic_members USING btree (user_id);

-- INDEX public.clinic_services_name_ci
CREATE UNIQUE INDEX clinic_services_name_ci ON public.clinic_services USING btree (clinic_id, lower(name));

-- INDEX public.clinic_services_one_default
CREATE UNIQUE INDEX clinic_services_one_default ON public.clinic_services USING btree (clinic_id) WHERE is_default;

-- FK CONSTRAINT public.clinic_api_keys clinic_api_keys_clinic_id_fkey
ALTER TABLE ONLY public.clinic_api_keys
    ADD CONSTRAINT clinic_api_keys_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;

-- FK CONSTRAINT public.clinic_members clinic_members_clinic_id_fkey
ALTER TABLE ONLY public.clinic_members
    ADD CONSTRAINT clinic_members_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;

-- FK CONSTRAINT public.clinic_members clinic_members_user_id_fkey
ALTER TABLE ONLY public.clinic_members
    ADD CONSTRAINT clinic_members_user_id_fkey FOREIGN KEY (user_id) REFERENCES auth.users(id) ON DELETE CASCADE;

-- FK CONSTRAINT public.clinic_opening_hours clinic_opening_hours_clinic_id_fkey
ALTER TABLE ONLY public.clinic_opening_hours
    ADD CONSTRAINT clinic_opening_hours_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;

-- FK CONSTRAINT public.clinic_services clinic_services_clinic_id_fkey
ALTER TABLE ONLY public.clinic_services
    ADD CONSTRAINT clinic_services_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;

-- ROW SECURITY public.clinic_api_keys
ALTER TABLE public.clinic_api_keys ENABLE ROW LEVEL SECURITY;

-- ROW SECURITY public.clinic_members
ALTER TABLE public.clinic_members ENABLE ROW LEVEL SECURITY;

-- ROW SECURITY public.clinic_opening_hours
ALTER TABLE public.clinic_opening_hours ENABLE ROW LEVEL SECURITY;

-- ROW SECURITY public.clinic_services
ALTER TABLE public.clinic_services ENABLE ROW LEVEL SECURITY;

-- ROW SECURITY public.clinics
ALTER TABLE public.clinics ENABLE ROW LEVEL SECURITY;

-- POLICY public.clinic_opening_hours members_read
CREATE POLICY members_read ON public.clinic_opening_hours FOR SELECT TO authenticated USING ((clinic_id IN ( SELECT clinic_members.clinic_id
   FROM public.clinic_members)));

-- POLICY public.clinic_services members_read
CREATE POLICY members_read ON public.clinic_services FOR SELECT TO authenticated USING ((clinic_id IN ( SELECT clinic_members.clinic_id
   FROM public.clinic_members)));

-- POLICY public.clinics members_read
CREATE POLICY members_read ON public.clinics FOR SELECT TO authenticated USING ((id IN ( SELECT clinic_members.clinic_id
   FROM public.clinic_members)));

-- POLICY public.clinic_opening_hours own_clinic
CREATE POLICY own_clinic ON public.clinic_opening_hours FOR SELECT TO vapi_clinic USING ((clinic_id = ( SELECT private.request_clinic_id() AS request_clinic_id)));

-- POLICY public.clinic_services own_clinic
CREATE POLICY own_clinic ON public.clinic_services FOR SELECT TO vapi_clinic USING ((clinic_id = ( SELECT private.request_clinic_id() AS request_clinic_id)));

-- POLICY public.clinics own_clinic
CREATE POLICY own_clinic ON public.clinics FOR SELECT TO vapi_clinic USING ((id = ( SELECT private.request_clinic_id() AS request_clinic_id)));

-- POLICY public.clinic_members own_memberships
CREATE POLICY own_memberships ON public.clinic_members FOR SELECT TO authenticated USING ((user_id = ( SELECT auth.uid() AS uid)));

-- POLICY public.clinic_api_keys resolve_keys
CREATE POLICY resolve_keys ON public.clinic_api_keys FOR SELECT TO clinic_key_resolver USING (true);

-- POLICY public.clinic_api_keys touch_keys
CREATE POLICY touch_keys ON public.clinic_api_keys FOR UPDATE TO clinic_key_resolver USING (true);

revoke all on function private.authenticate_request() from public;
grant execute on function private.authenticate_request() to vapi_clinic;

revoke all on table public.clinics from anon, authenticated, service_role;
grant all on table public.clinics to service_role;
grant select on table public.clinics to authenticated;
grant select on table public.clinics to vapi_clinic;

revoke all on function private.opening_hours_text(p_clinic_id uuid, p_weekday integer) from public;
grant execute on function private.opening_hours_text(p_clinic_id uuid, p_weekday integer) to vapi_clinic;

revoke all on function private.parse_opening_hours(p_hours jsonb) from public;
grant execute on function private.parse_opening_hours(p_hours jsonb) to service_role;

revoke all on table public.clinic_services from anon, authenticated, service_role;
grant all on table public.clinic_services to service_role;
grant select on table public.clinic_services to authenticated;
grant select on table public.clinic_services to vapi_clinic;

revoke all on function private.pick_service(p_clinic_id uuid, p_name text) from public;
grant execute on function private.pick_service(p_clinic_id uuid, p_name text) to vapi_clinic;

revoke all on function private.request_clinic_id() from public;
grant execute on function private.request_clinic_id() to vapi_clinic;

revoke all on function public.clinic_keys(p_clinic_id uuid) from public, anon, authenticated, service_role;
grant execute on function public.clinic_keys(p_clinic_id uuid) to service_role;

revoke all on function public.clinic_profile(p_clinic_id uuid) from public, anon, authenticated, service_role;
grant execute on function public.clinic_profile(p_clinic_id uuid) to service_role;

revoke all on function public.create_clinic(p_name text, p_time_zone text, p_calendar_id text, p_opening_hours jsonb, p_services jsonb, p_phone_country_code text) from public, anon, authenticated, service_role;
grant execute on function public.create_clinic(p_name text, p_time_zone text, p_calendar_id text, p_opening_hours jsonb, p_services jsonb, p_phone_country_code text) to service_role;

revoke all on function public.issue_clinic_key(p_clinic_id uuid, p_label text) from public, anon, authenticated, service_role;
grant execute on function public.issue_clinic_key(p_clinic_id uuid, p_label text) to service_role;

revoke all on function public.revoke_clinic_key(p_key_id uuid) from public, anon, authenticated, service_role;
grant execute on function public.revoke_clinic_key(p_key_id uuid) to service_role;

revoke all on function public.rotate_clinic_key(p_clinic_id uuid, p_label text, p_grace interval) from public, anon, authenticated, service_role;
grant execute on function public.rotate_clinic_key(p_clinic_id uuid, p_label text, p_grace interval) to service_role;

revoke all on table public.clinic_api_keys from anon, authenticated, service_role;
grant all on table public.clinic_api_keys to service_role;

grant select (clinic_id) on table public.clinic_api_keys TO clinic_key_resolver;

grant select (key_hash) on table public.clinic_api_keys TO clinic_key_resolver;

grant select (revoked_at) on table public.clinic_api_keys TO clinic_key_resolver;

GRANT SELECT(last_used_at),UPDATE(last_used_at) ON TABLE public.clinic_api_keys TO clinic_key_resolver;

revoke all on table public.clinic_members from anon, authenticated, service_role;
grant all on table public.clinic_members to service_role;
grant select on table public.clinic_members to authenticated;

revoke all on table public.clinic_opening_hours from anon, authenticated, service_role;
grant all on table public.clinic_opening_hours to service_role;
grant select on table public.clinic_opening_hours to authenticated;
grant select on table public.clinic_opening_hours to vapi_clinic;

grant create on schema private to clinic_key_resolver;
alter function private.request_clinic_id() owner to clinic_key_resolver;
alter function private.authenticate_request() owner to clinic_key_resolver;
revoke create on schema private from clinic_key_resolver;
