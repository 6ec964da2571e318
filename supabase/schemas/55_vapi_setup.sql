-- Vapi set up by the product: per clinic, what `clinic-sync vapi-sync` made in Vapi through its API (the
-- four function tools, the custom credential that carries the clinic key, the assistant they are
-- attached to), and whether Vapi still describes the clinic as it is.
--
-- - Vapi's ids are remembered here, each as soon as Vapi answers, so a sync updates in place and never
--   makes a second copy (a tool deleted in Vapi's dashboard is made again, and its new id recorded).
-- - The credential's key: the plain key exists only in Vapi's credential (Vapi never returns it) and, for
--   the moment of the sync, in the daemon's memory; here only which key it is (credential_key_id), so
--   `verify` can say when it was revoked, and a rotation can retire the one it replaces.
-- - Stale: the tools' descriptions name the clinic, its time zone, its services and its active
--   practitioners with theirs (daemon/vapi_tools.py). A change to any of those bumps wanted_revision (the
--   triggers at the end); a sync records the revision it made Vapi match (synced_revision). A setup is
--   stale while synced_revision < wanted_revision (private.vapi_setup_is_stale), and a failed sync leaves
--   it stale. Only clinics set up by vapi-sync have a row; for the others the triggers change nothing.
-- - Re-syncs are the daemon's: it leases stale setups (one replica or command per clinic at a time) and
--   retries a failed one after a delay that doubles per failure (private.vapi_sync_delay), or after Vapi's
--   Retry-After when that is longer. Nothing here is on a booking's path: the triggers fire on operator
--   changes to clinics, services and practitioners only.
-- Everything is for the service role only (the daemon, the operator commands); RLS on, no policies.


-- Tables -----------------------------------------------------------------------------------------

-- Vapi's ids (UUIDs today) go into request paths (/tool/{id}): letters, digits, '-', '_' and '.' only.
create table public.vapi_setups (
  clinic_id uuid primary key references public.clinics (id) on delete cascade,
  -- The assistant the tools are attached to (vapi-sync --assistant); null: none named yet.
  assistant_id text check (assistant_id ~ '^[A-Za-z0-9_.-]{1,200}$'),
  credential_id text check (credential_id ~ '^[A-Za-z0-9_.-]{1,200}$'),
  -- The clinic key in the credential; null once that key row is gone.
  credential_key_id uuid references public.clinic_api_keys (id) on delete set null,
  wanted_revision bigint not null default 1 check (wanted_revision >= 1),
  synced_revision bigint not null default 0 check (synced_revision between 0 and wanted_revision),
  -- Since when, and why, Vapi describes the clinic as it was (null while in step).
  stale_since timestamptz default now(),
  stale_because text check (length(stale_because) <= 200),
  -- Failed syncs since the last one that worked, when to try again, and why the last one failed.
  sync_attempts integer not null default 0 check (sync_attempts >= 0),
  next_attempt_at timestamptz default now(),
  last_error text check (length(last_error) <= 500),
  last_synced_at timestamptz,
  lease_owner text check (length(lease_owner) between 1 and 200),
  lease_expires_at timestamptz,
  created_at timestamptz not null default now()
);
comment on table public.vapi_setups is
  'What clinic-sync vapi-sync made in Vapi for a clinic (credential, assistant) and whether Vapi is in step: '
  'stale while synced_revision < wanted_revision.';

alter table public.vapi_setups enable row level security;
revoke all on table public.vapi_setups from anon, authenticated, service_role;
grant all on table public.vapi_setups to service_role;
-- Service role only, as calendar_channels (75_push_channels.sql says why a restrictive deny policy).
create policy service_role_only on public.vapi_setups as restrictive for all to public
  using (false) with check (false);
-- The foreign key's index (a revoked key's row is found when its key is deleted).
create index vapi_setups_credential_key on public.vapi_setups (credential_key_id) where credential_key_id is not null;

-- The clinic's tools in Vapi, by function name (check_availability, ...).
create table public.vapi_setup_tools (
  clinic_id uuid not null references public.vapi_setups (clinic_id) on delete cascade,
  tool_name text not null check (tool_name ~ '^[a-z][a-z0-9_]{0,63}$'),
  tool_id text not null unique check (tool_id ~ '^[A-Za-z0-9_.-]{1,200}$'),
  recorded_at timestamptz not null default now(),
  primary key (clinic_id, tool_name)
);
comment on table public.vapi_setup_tools is 'The Vapi id of each of a clinic''s tools, by function name.';

alter table public.vapi_setup_tools enable row level security;
revoke all on table public.vapi_setup_tools from anon, authenticated, service_role;
grant all on table public.vapi_setup_tools to service_role;
create policy service_role_only on public.vapi_setup_tools as restrictive for all to public
  using (false) with check (false);


-- The rules -------------------------------------------------------------------------------------

-- Stale: Vapi's tools were last made to match an older revision of the clinic than its current one.
create function private.vapi_setup_is_stale(p_setup public.vapi_setups) returns boolean
language sql immutable
set search_path = ''
as $$
  select p_setup.synced_revision < p_setup.wanted_revision
$$;
revoke all on function private.vapi_setup_is_stale(p_setup public.vapi_setups) from public;
grant execute on function private.vapi_setup_is_stale(p_setup public.vapi_setups) to service_role;

-- How long a failed sync waits before the next try, after its p_attempts-th failure in a row: 30 s, doubling,
-- at most an hour (Vapi's outages and rate limits are short; a wrong VAPI_API_KEY is asked about hourly).
create function private.vapi_sync_delay(p_attempts integer) returns interval
language sql immutable
set search_path = ''
as $$
  select least(interval '1 hour', interval '30 seconds' * power(2, greatest(p_attempts, 1) - 1))
$$;
revoke all on function private.vapi_sync_delay(p_attempts integer) from public;
grant execute on function private.vapi_sync_delay(p_attempts integer) to service_role;

-- A setup as the daemon and the operator commands read it: Vapi's ids, its tools by name, whether the
-- credential's key still works, the revision a sync now would match, and the stale/retry bookkeeping.
create function private.vapi_setup_json(p_setup public.vapi_setups) returns jsonb
language sql stable
set search_path = ''
as $$
  select jsonb_build_object(
    'clinic_id', p_setup.clinic_id,
    'clinic_name', (select c.name from public.clinics c where c.id = p_setup.clinic_id),
    'assistant_id', p_setup.assistant_id,
    'credential_id', p_setup.credential_id,
    'credential_key_id', p_setup.credential_key_id,
    -- A key is valid until revoked_at (10_clinics_and_keys).
    'credential_key_valid', exists (select from public.clinic_api_keys k
                                    where k.id = p_setup.credential_key_id
                                      and (k.revoked_at is null or k.revoked_at > now())),
    'tools', coalesce((select jsonb_object_agg(t.tool_name, t.tool_id)
                       from public.vapi_setup_tools t where t.clinic_id = p_setup.clinic_id), '{}'::jsonb),
    'revision', p_setup.wanted_revision,
    'stale', private.vapi_setup_is_stale(p_setup),
    'stale_since', p_setup.stale_since,
    'stale_because', p_setup.stale_because,
    'sync_attempts', p_setup.sync_attempts,
    'next_attempt_at', p_setup.next_attempt_at,
    'last_error', p_setup.last_error,
    'last_synced_at', p_setup.last_synced_at)
$$;
revoke all on function private.vapi_setup_json(p_setup public.vapi_setups) from public;
grant execute on function private.vapi_setup_json(p_setup public.vapi_setups) to service_role;

-- The setup is leased to p_owner (the caller's own lease may be renewed); anything else is refused.
create function private.require_vapi_lease(p_clinic_id uuid, p_owner text) returns public.vapi_setups
language plpgsql volatile
set search_path = ''
as $$
declare
  v_setup public.vapi_setups;
begin
  select * into v_setup from public.vapi_setups where clinic_id = p_clinic_id for update;
  perform private.require(found, format('Vapi is not set up for clinic %s (clinic-sync vapi-sync)', p_clinic_id));
  perform private.require(v_setup.lease_owner = p_owner and v_setup.lease_expires_at > now(),
                          format('The Vapi sync of clinic %s no longer holds its lease', p_clinic_id));
  return v_setup;
end
$$;
revoke all on function private.require_vapi_lease(p_clinic_id uuid, p_owner text) from public;
grant execute on function private.require_vapi_lease(p_clinic_id uuid, p_owner text) to service_role;


-- Syncing (the daemon and the operator commands) -------------------------------------------------------

-- The clinic's setup, or null when vapi-sync never ran for it.
create function public.vapi_setup(p_clinic_id uuid) returns jsonb
language sql stable
set search_path = ''
as $$
  select private.vapi_setup_json(s) from public.vapi_setups s where s.clinic_id = p_clinic_id
$$;
revoke all on function public.vapi_setup(p_clinic_id uuid) from public, anon, authenticated, service_role;
grant execute on function public.vapi_setup(p_clinic_id uuid) to service_role;

-- Every setup, by clinic name: for `verify` and the metrics.
create function public.vapi_setups_overview() returns jsonb
language sql stable
set search_path = ''
as $$
  select coalesce(jsonb_agg(private.vapi_setup_json(s) order by c.name, s.clinic_id), '[]'::jsonb)
  from public.vapi_setups s join public.clinics c on c.id = s.clinic_id
$$;
revoke all on function public.vapi_setups_overview() from public, anon, authenticated, service_role;
grant execute on function public.vapi_setups_overview() to service_role;

-- vapi-sync (and rotate-key) lease the clinic's setup to p_owner for one run, making the row on a
-- clinic's first sync (stale from the start: Vapi has nothing yet). p_assistant_id, when given, is the
-- assistant to attach the tools to from now on. Refused while another run holds the lease.
create function public.claim_vapi_setup(
  p_clinic_id uuid, p_owner text, p_lease_seconds integer, p_assistant_id text default null
) returns jsonb
language plpgsql volatile
set search_path = ''
as $$
declare
  v_setup public.vapi_setups;
begin
  perform private.require_owner(p_owner);
  perform private.require(p_lease_seconds between 5 and 3600, 'lease must be 5 to 3600 seconds');
  if not exists (select from public.clinics where id = p_clinic_id) then
    raise exception 'No clinic with id %', p_clinic_id using errcode = 'P0002';
  end if;
  insert into public.vapi_setups (clinic_id, stale_because)
  values (p_clinic_id, 'not yet set up in Vapi')
  on conflict (clinic_id) do nothing;
  select * into v_setup from public.vapi_setups where clinic_id = p_clinic_id for update;
  perform private.require(
    v_setup.lease_owner is null or v_setup.lease_expires_at <= now() or v_setup.lease_owner = p_owner,
    format('The Vapi setup of clinic %s is being synced by %s until %s UTC; try again then', p_clinic_id,
           v_setup.lease_owner, to_char(v_setup.lease_expires_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS')));
  begin
    update public.vapi_setups
       set lease_owner = p_owner, lease_expires_at = now() + make_interval(secs => p_lease_seconds),
           assistant_id = coalesce(p_assistant_id, assistant_id)
     where clinic_id = p_clinic_id
    returning * into v_setup;
  exception when check_violation then  -- the table's rule for Vapi's ids
    raise exception using errcode = 'P0001',
      message = 'An assistant id is letters, digits, "-", "_" and "." (as Vapi''s dashboard shows it)';
  end;
  return private.vapi_setup_json(v_setup);
end
$$;
revoke all on function public.claim_vapi_setup(p_clinic_id uuid, p_owner text, p_lease_seconds integer, p_assistant_id text) from public, anon, authenticated, service_role;
grant execute on function public.claim_vapi_setup(p_clinic_id uuid, p_owner text, p_lease_seconds integer, p_assistant_id text) to service_role;

-- The daemon's work: up to p_limit stale setups whose next attempt is due and which no live lease holds,
-- leased to p_owner (as a JSON array of setups), the longest stale first.
create function public.claim_stale_vapi_setups(p_owner text, p_limit integer, p_lease_seconds integer)
returns jsonb
language plpgsql volatile
set search_path = ''
as $$
declare
  v_claimed jsonb;
begin
  perform private.require_owner(p_owner);
  perform private.require(p_limit between 1 and 1000, 'limit must be 1 to 1000');
  perform private.require(p_lease_seconds between 5 and 3600, 'lease must be 5 to 3600 seconds');
  with due as (
    select s.clinic_id
    from public.vapi_setups s
    where private.vapi_setup_is_stale(s)
      and (s.next_attempt_at is null or s.next_attempt_at <= now())
      and (s.lease_owner is null or s.lease_expires_at <= now() or s.lease_owner = p_owner)
    order by s.stale_since nulls last, s.clinic_id
    limit p_limit
    for update of s skip locked
  ),
  leased as (
    update public.vapi_setups s
       set lease_owner = p_owner, lease_expires_at = now() + make_interval(secs => p_lease_seconds)
      from due
     where s.clinic_id = due.clinic_id
    returning s.*
  )
  select coalesce(jsonb_agg(private.vapi_setup_json(l) order by l.stale_since nulls last, l.clinic_id), '[]'::jsonb)
    into v_claimed
  from leased l;
  return v_claimed;
end
$$;
revoke all on function public.claim_stale_vapi_setups(p_owner text, p_limit integer, p_lease_seconds integer) from public, anon, authenticated, service_role;
grant execute on function public.claim_stale_vapi_setups(p_owner text, p_limit integer, p_lease_seconds integer) to service_role;

-- A new clinic key for the clinic's Vapi credential (label 'vapi credential'), returned this once with its
-- id; it is the credential's only once save_vapi_credential records it (a key Vapi never received is
-- revoked by the caller: revoke_clinic_key).
create function public.issue_vapi_credential_key(p_clinic_id uuid, p_owner text)
returns table (key_id uuid, key text)
language plpgsql volatile
set search_path = ''
as $$
begin
  perform private.require_vapi_lease(p_clinic_id, p_owner);
  key := public.issue_clinic_key(p_clinic_id, 'vapi credential');
  -- Keys are found by their hash (10_clinics_and_keys): the new row is the one with this key's.
  select k.id into key_id from public.clinic_api_keys k
   where k.key_hash = pg_catalog.sha256(pg_catalog.convert_to(key, 'UTF8'));
  return next;
end
$$;
revoke all on function public.issue_vapi_credential_key(p_clinic_id uuid, p_owner text) from public, anon, authenticated, service_role;
grant execute on function public.issue_vapi_credential_key(p_clinic_id uuid, p_owner text) to service_role;

-- Vapi holds p_key_id in credential p_credential_id from now on. The key the credential carried before
-- stops working: with p_revoke_others_after (a rotation, as rotate_clinic_key), every other key of the
-- clinic after that grace period, so calls in progress finish; without, that one key at once (it was in no
-- other place than a credential that is gone, or no longer holds it).
create function public.save_vapi_credential(
  p_clinic_id uuid, p_owner text, p_credential_id text, p_key_id uuid, p_revoke_others_after interval default null
) returns void
language plpgsql volatile
set search_path = ''
as $$
declare
  v_setup public.vapi_setups := private.require_vapi_lease(p_clinic_id, p_owner);
begin
  perform private.require(
    exists (select from public.clinic_api_keys k
            where k.id = p_key_id and k.clinic_id = p_clinic_id and k.revoked_at is null),
    format('Key %s is not a working key of clinic %s', p_key_id, p_clinic_id));
  perform private.require(p_revoke_others_after is null or p_revoke_others_after >= interval '0',
                          'The grace period cannot be negative');
  if p_revoke_others_after is not null then
    update public.clinic_api_keys
       set revoked_at = now() + p_revoke_others_after
     where clinic_id = p_clinic_id and id <> p_key_id
       and (revoked_at is null or revoked_at > now() + p_revoke_others_after);
  elsif v_setup.credential_key_id is distinct from p_key_id then
    update public.clinic_api_keys
       set revoked_at = least(coalesce(revoked_at, now()), now())
     where id = v_setup.credential_key_id;
  end if;
  update public.vapi_setups
     set credential_id = p_credential_id, credential_key_id = p_key_id
   where clinic_id = p_clinic_id;
end
$$;
revoke all on function public.save_vapi_credential(p_clinic_id uuid, p_owner text, p_credential_id text, p_key_id uuid, p_revoke_others_after interval) from public, anon, authenticated, service_role;
grant execute on function public.save_vapi_credential(p_clinic_id uuid, p_owner text, p_credential_id text, p_key_id uuid, p_revoke_others_after interval) to service_role;

-- Vapi made (or made again) the clinic's tool p_tool_name: its id, kept at once so no later run makes a copy.
create function public.record_vapi_tool(p_clinic_id uuid, p_owner text, p_tool_name text, p_tool_id text)
returns void
language plpgsql volatile
set search_path = ''
as $$
begin
  perform private.require_vapi_lease(p_clinic_id, p_owner);
  insert into public.vapi_setup_tools (clinic_id, tool_name, tool_id)
  values (p_clinic_id, p_tool_name, p_tool_id)
  on conflict (clinic_id, tool_name) do update set tool_id = excluded.tool_id, recorded_at = now();
end
$$;
revoke all on function public.record_vapi_tool(p_clinic_id uuid, p_owner text, p_tool_name text, p_tool_id text) from public, anon, authenticated, service_role;
grant execute on function public.record_vapi_tool(p_clinic_id uuid, p_owner text, p_tool_name text, p_tool_id text) to service_role;

-- The sync made Vapi match revision p_revision (the one its claim read): in step unless the clinic changed
-- again meanwhile (then it stays stale, due at once). The lease ends. True: in step.
create function public.vapi_setup_synced(p_clinic_id uuid, p_owner text, p_revision bigint) returns boolean
language plpgsql volatile
set search_path = ''
as $$
declare
  v_setup public.vapi_setups := private.require_vapi_lease(p_clinic_id, p_owner);
begin
  perform private.require(p_revision between 1 and v_setup.wanted_revision, 'That revision was never wanted');
  update public.vapi_setups
     set synced_revision = greatest(synced_revision, p_revision),
         sync_attempts = 0, last_error = null, last_synced_at = now(),
         lease_owner = null, lease_expires_at = null
   where clinic_id = p_clinic_id
  returning * into v_setup;
  if private.vapi_setup_is_stale(v_setup) then
    update public.vapi_setups set stale_since = now(), next_attempt_at = now() where clinic_id = p_clinic_id;
    return false;
  end if;
  update public.vapi_setups
     set stale_since = null, stale_because = null, next_attempt_at = null
   where clinic_id = p_clinic_id;
  return true;
end
$$;
revoke all on function public.vapi_setup_synced(p_clinic_id uuid, p_owner text, p_revision bigint) from public, anon, authenticated, service_role;
grant execute on function public.vapi_setup_synced(p_clinic_id uuid, p_owner text, p_revision bigint) to service_role;

-- The sync failed (p_error: what to tell the operator; never a secret). Vapi may no longer match, so the
-- setup is stale if it was not; the next try waits private.vapi_sync_delay, or Vapi's Retry-After
-- (p_retry_after_seconds) when longer. The lease ends. Returns when the next try is due.
create function public.vapi_setup_failed(
  p_clinic_id uuid, p_owner text, p_error text, p_retry_after_seconds integer default null
) returns timestamptz
language plpgsql volatile
set search_path = ''
as $$
declare
  v_setup public.vapi_setups := private.require_vapi_lease(p_clinic_id, p_owner);
  v_next timestamptz;
begin
  v_next := now() + greatest(private.vapi_sync_delay(v_setup.sync_attempts + 1),
                             make_interval(secs => least(greatest(coalesce(p_retry_after_seconds, 0), 0), 86400)));
  update public.vapi_setups
     set wanted_revision = case when private.vapi_setup_is_stale(v_setup) then wanted_revision
                                else wanted_revision + 1 end,
         stale_since = coalesce(stale_since, now()),
         stale_because = case when private.vapi_setup_is_stale(v_setup) then stale_because
                              else 'the last sync failed' end,
         sync_attempts = sync_attempts + 1,
         next_attempt_at = v_next,
         last_error = left(coalesce(p_error, 'unknown error'), 500),
         lease_owner = null, lease_expires_at = null
   where clinic_id = p_clinic_id;
  return v_next;
end
$$;
revoke all on function public.vapi_setup_failed(p_clinic_id uuid, p_owner text, p_error text, p_retry_after_seconds integer) from public, anon, authenticated, service_role;
grant execute on function public.vapi_setup_failed(p_clinic_id uuid, p_owner text, p_error text, p_retry_after_seconds integer) to service_role;


-- Marking setups stale --------------------------------------------------------------------------------
-- The triggers run as whoever changes the clinic (the operator functions run as the service role). They
-- only ever touch the clinic's own setup row, by primary key, and do nothing for a clinic without one.

-- The clinic changed in a way its tools describe: one revision more for Vapi to match, due at once.
create function private.mark_vapi_setup_stale(p_clinic_id uuid, p_because text) returns void
language sql volatile
set search_path = ''
as $$
  update public.vapi_setups
     set wanted_revision = wanted_revision + 1,
         stale_since = coalesce(stale_since, now()),
         stale_because = left(p_because, 200),
         next_attempt_at = now()
   where clinic_id = p_clinic_id
$$;
revoke all on function private.mark_vapi_setup_stale(p_clinic_id uuid, p_because text) from public;
grant execute on function private.mark_vapi_setup_stale(p_clinic_id uuid, p_because text) to service_role;

-- The descriptions name the clinic and say times are in its zone.
create function private.clinics_mark_vapi_stale() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  perform private.mark_vapi_setup_stale(new.id, case when new.name is distinct from old.name
                                                     then 'the clinic was renamed'
                                                     else 'the clinic''s time zone changed' end);
  return null;
end
$$;
revoke all on function private.clinics_mark_vapi_stale() from public;

create trigger clinics_mark_vapi_stale
  after update of name, time_zone on public.clinics
  for each row
  when ((new.name, new.time_zone) is distinct from (old.name, old.time_zone))
  execute function private.clinics_mark_vapi_stale();

-- The `service` argument lists the clinic's services, the default first; a practitioner without services
-- of their own offers all of them.
create function private.clinic_services_mark_vapi_stale() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if tg_op = 'UPDATE' and (new.name, new.is_default) is not distinct from (old.name, old.is_default) then
    return null;
  end if;
  perform private.mark_vapi_setup_stale(
    coalesce(new.clinic_id, old.clinic_id),
    format('service %s %s', coalesce(new.name, old.name),
           case tg_op when 'INSERT' then 'added' when 'DELETE' then 'removed' else 'changed' end));
  return null;
end
$$;
revoke all on function private.clinic_services_mark_vapi_stale() from public;

create trigger clinic_services_mark_vapi_stale
  after insert or delete or update of name, is_default on public.clinic_services
  for each row execute function private.clinic_services_mark_vapi_stale();

-- The descriptions name the active practitioners and the services each offers.
create function private.practitioners_mark_vapi_stale() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if tg_op = 'UPDATE'
     and (new.name, new.services, new.active) is not distinct from (old.name, old.services, old.active) then
    return null;
  end if;
  perform private.mark_vapi_setup_stale(
    coalesce(new.clinic_id, old.clinic_id),
    format('practitioner %s %s', coalesce(new.name, old.name),
           case when tg_op = 'INSERT' then 'added'
                when tg_op = 'DELETE' then 'removed'
                when new.active and not old.active then 'taken back'
                when old.active and not new.active then 'deactivated'
                else 'changed' end));
  return null;
end
$$;
revoke all on function private.practitioners_mark_vapi_stale() from public;

create trigger practitioners_mark_vapi_stale
  after insert or delete or update of name, services, active on public.practitioners
  for each row execute function private.practitioners_mark_vapi_stale();
