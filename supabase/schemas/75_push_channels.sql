-- Google's push notifications: one events.watch channel per calendar the mirror reads
-- (70_calendar_mirror.sql), so that a change made in Google is listed within moments instead of at the
-- next interval.
--
-- - A channel's secret token is stored only as a SHA-256 hash. A channel is recorded before Google is
--   asked for it (begin_calendar_channel), because Google's first ("sync") message may arrive before
--   Google's answer (record_calendar_channel, or abandon_calendar_channel when Google would not make it).
-- - record_calendar_notification() accepts a notification only with a live channel's id, its resource
--   id, its token and a message number it has not seen, and marks the calendar notified (due for a
--   listing: claim_mirror_targets).
-- - calendar_channel_work() says which calendars need a channel (none, near its expiration, never
--   confirmed by Google's "sync" message, or lost: a listing found changes Google never announced, as
--   Google drops channels without telling anyone) and which retired channels to stop at Google. It is
--   leased per calendar, as the listings are, on the calendar's mirror row.
-- - A channel is retired, never deleted: when replaced, lost, when its calendar is no longer read, or
--   when the connection changes (reconnected, needs re-authorisation, removed); then it is stopped at
--   Google (calendar_channel_stopped).
-- Everything is for the service role only (the daemon); RLS on, and a policy no other role gets past.

create table public.calendar_channels (
  id text primary key check (id ~ '^[A-Za-z0-9/_+=-]{1,64}$'),
  clinic_id uuid not null references public.clinics (id) on delete cascade,
  calendar_id text not null check (length(calendar_id) between 1 and 1024),
  resource_id text check (length(resource_id) between 1 and 1024),
  token_hash text not null check (token_hash ~ '^[0-9a-f]{64}$'),
  expires_at timestamptz not null,
  created_at timestamptz not null default now(),
  confirmed_at timestamptz,
  last_message_number bigint,
  retired_at timestamptz,
  retired_because text check (length(retired_because) <= 200),
  stopped_at timestamptz
);
create index calendar_channels_live_calendar on public.calendar_channels (clinic_id, calendar_id)
  where retired_at is null;
comment on table public.calendar_channels is
  'Google push-notification channels (events.watch) of the connected calendars; only a hash of each secret token. '
  'A channel is recorded before Google is asked for it (Google''s first message may arrive before its answer).';

alter table public.calendar_channels enable row level security;
revoke all on table public.calendar_channels from anon, authenticated, service_role;
grant all on table public.calendar_channels to service_role;
-- For the service role only, which bypasses row-level security: every other role, whatever it is
-- granted and whatever permissive policy is ever added, sees and writes no row (restrictive: it is
-- and-ed with any other). It also says so to Supabase's advisor, which reports a table with RLS on
-- and no policy (rls_enabled_no_policy) as possibly forgotten.
create policy service_role_only on public.calendar_channels as restrictive for all to public
  using (false) with check (false);

------------------------------------------------------------------------------------------------------------
-- A channel's life
------------------------------------------------------------------------------------------------------------

-- The daemon's channel work, leased per calendar to p_owner: calendars that need a new channel (a
-- calendar read for an active connection without a live channel, or whose channel expires within
-- p_renew_within_seconds; a channel never confirmed by Google's "sync" message within
-- p_confirm_within_seconds is lost, and retired here) and retired channels not yet stopped at Google.
-- action: 'create' (a channel for the calendar) or 'stop' (the channel to stop). One channel per
-- calendar that is read.
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
revoke all on function public.calendar_channel_work(p_owner text, p_renew_within_seconds integer, p_confirm_within_seconds integer, p_lease_seconds integer, p_limit integer) from public, anon, authenticated, service_role;
grant execute on function public.calendar_channel_work(p_owner text, p_renew_within_seconds integer, p_confirm_within_seconds integer, p_lease_seconds integer, p_limit integer) to service_role;

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
revoke all on function public.begin_calendar_channel(p_clinic_id uuid, p_channel_id text, p_token_hash text, p_calendar_id text) from public, anon, authenticated, service_role;
grant execute on function public.begin_calendar_channel(p_clinic_id uuid, p_channel_id text, p_token_hash text, p_calendar_id text) to service_role;

-- Google made the channel: it is the calendar's from now on (the ones before it are retired, to be
-- stopped) and the lease on the calendar's channel work ends. A resource id other than the one Google's
-- first message named retires it instead.
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
revoke all on function public.record_calendar_channel(p_channel_id text, p_resource_id text, p_expires_at timestamp with time zone, p_owner text) from public, anon, authenticated, service_role;
grant execute on function public.record_calendar_channel(p_channel_id text, p_resource_id text, p_expires_at timestamp with time zone, p_owner text) to service_role;

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
revoke all on function public.abandon_calendar_channel(p_channel_id text) from public, anon, authenticated, service_role;
grant execute on function public.abandon_calendar_channel(p_channel_id text) to service_role;

-- A push notification as it arrived (X-Goog-Channel-ID, -Resource-ID, -Channel-Token, -Resource-State,
-- -Message-Number). Accepted only for a live channel, with its resource id and token, and a message
-- number above every one seen; then the calendar is due for a listing (unless it is the "sync" message
-- that only confirms the channel). The clinic whose calendar it was, or null (refused: nothing changed).
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
revoke all on function public.record_calendar_notification(p_channel_id text, p_resource_id text, p_token text, p_state text, p_message_number bigint) from public, anon, authenticated, service_role;
grant execute on function public.record_calendar_notification(p_channel_id text, p_resource_id text, p_token text, p_state text, p_message_number bigint) to service_role;

-- A retired channel was stopped at Google (or cannot be: it is gone, or the connection is); done.
create function public.calendar_channel_stopped(p_channel_id text)
returns void
language sql volatile
set search_path = ''
as $$
  update public.calendar_channels set stopped_at = now() where id = p_channel_id and stopped_at is null
$$;
revoke all on function public.calendar_channel_stopped(p_channel_id text) from public, anon, authenticated, service_role;
grant execute on function public.calendar_channel_stopped(p_channel_id text) to service_role;

------------------------------------------------------------------------------------------------------------
-- Channels retired
------------------------------------------------------------------------------------------------------------

-- An incremental listing found changes made after the channel was confirmed while no notification had
-- come since the listing before: the calendar's channel no longer delivers (Google drops channels
-- without telling anyone). A new one is made. (A listing a notification started is not judged: the
-- changes it finds may be announced by notifications still on their way.) Called by
-- apply_calendar_changes.
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
revoke all on function private.retire_channel_that_missed_changes(p_clinic_id uuid, p_calendar_id text, p_events jsonb) from public;
grant execute on function private.retire_channel_that_missed_changes(p_clinic_id uuid, p_calendar_id text, p_events jsonb) to service_role;

-- Retires every live channel of a clinic, saying why (p_because).
create function private.retire_channels(p_clinic_id uuid, p_because text) returns void
language sql volatile
set search_path = ''
as $$
  update public.calendar_channels
     set retired_at = now(), retired_because = left(p_because, 200)
   where clinic_id = p_clinic_id and retired_at is null
$$;
revoke all on function private.retire_channels(p_clinic_id uuid, p_because text) from public;
grant execute on function private.retire_channels(p_clinic_id uuid, p_because text) to service_role;

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
revoke all on function private.calendar_connection_changed() from public;

create trigger calendar_connection_changed
  after update of status, refresh_token_encrypted, google_account or delete on public.calendar_connections
  for each row execute function private.calendar_connection_changed();
