-- FUNCTION private.retire_channel_that_missed_changes(uuid, text, jsonb)
create function private.retire_channel_that_missed_changes(p_clinic_id uuid, p_calendar_id text, p_events jsonb)
returns void
language sql set search_path = '' as $$
  update public.calendar_channels c
     set retired_at = now(), retired_because = 'lost: the calendar changed without a notification'
    from public.calendar_mirrors m
   where c.clinic_id = p_clinic_id and c.calendar_id = p_calendar_id
     and c.retired_at is null and c.confirmed_at is not null
     and m.clinic_id = p_clinic_id and m.calendar_id = p_calendar_id
     and coalesce(m.notified_at, '-infinity') < coalesce(m.last_synced_at, '-infinity')
     and exists (select from jsonb_array_elements(p_events) e
                 where e ->> 'updated' is not null and (e ->> 'updated')::timestamptz > c.confirmed_at)
$$;

-- FUNCTION private.retire_channels(uuid, text)
create function private.retire_channels(p_clinic_id uuid, p_because text) returns void
language sql volatile
set search_path = ''
as $$
  update public.calendar_channels
     set retired_at = now(), retired_because = left(p_because, 200)
   where clinic_id = p_clinic_id and retired_at is null
$$;

-- FUNCTION public.abandon_calendar_channel(text)
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

-- FUNCTION public.begin_calendar_channel(uuid, text, text, text)
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

-- FUNCTION public.calendar_channel_stopped(text)
-- A retired channel was stopped at Google (or cannot be: it is gone, or the connection is); done.
create function public.calendar_channel_stopped(p_channel_id text)
returns void
language sql volatile
set search_path = ''
as $$
  update public.calendar_channels set stopped_at = now() where id = p_channel_id and stopped_at is null
$$;

-- FUNCTION public.calendar_channel_work(text, integer, integer, integer, integer)
-- One channel per calendar that is read.
create or replace function public.calendar_channel_work(
  p_owner text, p_renew_within_seconds integer, p_confirm_within_seconds integer, p_lease_seconds integer,
  p_limit integer default 50
) returns table (action text, clinic_id uuid, calendar_id text, channel_id text, resource_id text)
language plpgsql set search_path = '' as $$
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
    select m.clinic_id, m.calendar_id
    from public.calendar_mirrors m
    join public.calendar_connections k on k.clinic_id = m.clinic_id and k.status = 'active'
    -- No channel that will do: a live one that is not close to expiring, or one waiting for Google's answer.
    -- A renewed calendar keeps its old channel until the new one is recorded (no notification falls between).
    where not exists (select from public.calendar_channels c
                      where c.clinic_id = m.clinic_id and c.calendar_id = m.calendar_id and c.retired_at is null
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
     where m.clinic_id = n.clinic_id and m.calendar_id = n.calendar_id
    returning m.clinic_id, m.calendar_id
  )
  select 'create', l.clinic_id, l.calendar_id, null::text, null::text
  from leased l
  union all
  select 'stop', c.clinic_id, c.calendar_id, c.id, c.resource_id
  from public.calendar_channels c
  where c.retired_at is not null and c.stopped_at is null and c.resource_id is not null
  limit p_limit;
end
$$;

-- FUNCTION public.record_calendar_channel(text, text, timestamp with time zone, text)
create or replace function public.record_calendar_channel(
  p_channel_id text, p_resource_id text, p_expires_at timestamptz, p_owner text
) returns void
language plpgsql set search_path = '' as $$
declare
  v_clinic uuid;
  v_calendar text;
begin
  perform private.require(p_expires_at > now(), 'the channel has already expired');
  update public.calendar_channels
     set resource_id = coalesce(resource_id, p_resource_id), expires_at = p_expires_at
   where id = p_channel_id and retired_at is null
  returning clinic_id, calendar_id into v_clinic, v_calendar;
  perform private.require(v_clinic is not null, format('No channel %s waits for Google''s answer', p_channel_id));
  update public.calendar_channels
     set retired_at = now(),
         retired_because = case when id = p_channel_id then 'Google named another resource' else 'replaced' end
   where clinic_id = v_clinic and calendar_id = v_calendar and retired_at is null
     and (id <> p_channel_id or resource_id <> p_resource_id);
  update public.calendar_mirrors
     set channel_lease_owner = null, channel_lease_expires_at = null
   where clinic_id = v_clinic and calendar_id = v_calendar and channel_lease_owner = p_owner;
end
$$;

-- FUNCTION public.record_calendar_notification(text, text, text, text, bigint)
create or replace function public.record_calendar_notification(
  p_channel_id text, p_resource_id text, p_token text, p_state text, p_message_number bigint
) returns uuid
language plpgsql set search_path = '' as $$
declare
  v_clinic uuid;
  v_calendar text;
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
  returning c.clinic_id, c.calendar_id into v_clinic, v_calendar;
  if v_clinic is not null and p_state <> 'sync' then
    update public.calendar_mirrors set notified_at = now()
     where clinic_id = v_clinic and calendar_id = v_calendar;
  end if;
  return v_clinic;
end
$$;

-- TABLE public.calendar_channels
CREATE TABLE public.calendar_channels (
    id text NOT NULL,
    clinic_id uuid NOT NULL,
    calendar_id text NOT NULL,
    resource_id text,
    token_hash text NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    confirmed_at timestamp with time zone,
    last_message_number bigint,
    retired_at timestamp with time zone,
    retired_because text,
    stopped_at timestamp with time zone,
    CONSTRAINT calendar_channels_calendar_id_check CHECK (((length(calendar_id) >= 1) AND (length(calendar_id) <= 1024))),
    CONSTRAINT calendar_channels_id_check CHECK ((id ~ '^[A-Za-z0-9/_+=-]{1,64}$'::text)),
    CONSTRAINT calendar_channels_resource_id_check CHECK (((length(resource_id) >= 1) AND (length(resource_id) <= 1024))),
    CONSTRAINT calendar_channels_retired_because_check CHECK ((length(retired_because) <= 200)),
    CONSTRAINT calendar_channels_token_hash_check CHECK ((token_hash ~ '^[0-9a-f]{64}$'::text))
);

-- COMMENT public.TABLE calendar_channels
COMMENT ON TABLE public.calendar_channels IS 'Google push-notification channels (events.watch) of the connected calendars; only a hash of each secret token. A channel is recorded before Google is asked for it (Google''s first message may arrive before its answer).';

-- CONSTRAINT public.calendar_channels calendar_channels_pkey
ALTER TABLE ONLY public.calendar_channels
    ADD CONSTRAINT calendar_channels_pkey PRIMARY KEY (id);

-- INDEX public.calendar_channels_live_calendar
CREATE INDEX calendar_channels_live_calendar ON public.calendar_channels USING btree (clinic_id, calendar_id) WHERE (retired_at IS NULL);

-- FK CONSTRAINT public.calendar_channels calendar_channels_clinic_id_fkey
ALTER TABLE ONLY public.calendar_channels
    ADD CONSTRAINT calendar_channels_clinic_id_fkey FOREIGN KEY (clinic_id) REFERENCES public.clinics(id) ON DELETE CASCADE;

-- ROW SECURITY public.calendar_channels
ALTER TABLE public.calendar_channels ENABLE ROW LEVEL SECURITY;

revoke all on function private.retire_channel_that_missed_changes(p_clinic_id uuid, p_calendar_id text, p_events jsonb) from public;
grant execute on function private.retire_channel_that_missed_changes(p_clinic_id uuid, p_calendar_id text, p_events jsonb) to service_role;

revoke all on function private.retire_channels(p_clinic_id uuid, p_because text) from public;
grant execute on function private.retire_channels(p_clinic_id uuid, p_because text) to service_role;

revoke all on function public.abandon_calendar_channel(p_channel_id text) from public, anon, authenticated, service_role;
grant execute on function public.abandon_calendar_channel(p_channel_id text) to service_role;

revoke all on function public.begin_calendar_channel(p_clinic_id uuid, p_channel_id text, p_token_hash text, p_calendar_id text) from public, anon, authenticated, service_role;
grant execute on function public.begin_calendar_channel(p_clinic_id uuid, p_channel_id text, p_token_hash text, p_calendar_id text) to service_role;

revoke all on function public.calendar_channel_stopped(p_channel_id text) from public, anon, authenticated, service_role;
grant execute on function public.calendar_channel_stopped(p_channel_id text) to service_role;

revoke all on function public.calendar_channel_work(p_owner text, p_renew_within_seconds integer, p_confirm_within_seconds integer, p_lease_seconds integer, p_limit integer) from public, anon, authenticated, service_role;
grant execute on function public.calendar_channel_work(p_owner text, p_renew_within_seconds integer, p_confirm_within_seconds integer, p_lease_seconds integer, p_limit integer) to service_role;

revoke all on function public.record_calendar_channel(p_channel_id text, p_resource_id text, p_expires_at timestamp with time zone, p_owner text) from public, anon, authenticated, service_role;
grant execute on function public.record_calendar_channel(p_channel_id text, p_resource_id text, p_expires_at timestamp with time zone, p_owner text) to service_role;

revoke all on function public.record_calendar_notification(p_channel_id text, p_resource_id text, p_token text, p_state text, p_message_number bigint) from public, anon, authenticated, service_role;
grant execute on function public.record_calendar_notification(p_channel_id text, p_resource_id text, p_token text, p_state text, p_message_number bigint) to service_role;

revoke all on table public.calendar_channels from anon, authenticated, service_role;
grant all on table public.calendar_channels to service_role;

