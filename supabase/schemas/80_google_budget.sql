-- One Google budget for every replica of the daemon.
--
-- Google meters Calendar requests per user (each clinic's Google account: 600/min) and per project
-- (10,000/min), on a sliding 60 s window, counting every request. Every replica reserves what it sends
-- here first, so N replicas share one budget instead of each spending its own.
--
-- The ledger: each reservation is a row (budget key, requests, usable_until). A replica may send the
-- reserved requests only until usable_until (the reservation time plus a short hold, a few seconds); one
-- it cannot send by then is never sent (it can be given back, which lowers the row's count). So every
-- request sent under a row falls in [reserved_at, usable_until], and a new reservation is allowed when
-- it, plus every row whose usable_until is within the last 60 s, stays within the limit: then no 60 s
-- window anywhere holds more than the limit (for any window, the last reservation whose requests fall in
-- it saw every earlier one that does). Reservations are serialised by one transaction-scoped advisory
-- lock, so two replicas cannot both take the last requests.
--
-- Budget keys: a clinic's Google account (lower case), else 'clinic:<id>' for a clinic not yet
-- connected; the project is the sum over all keys. A rate-limit answer from Google throttles a key for
-- every replica until a moment recorded in google_throttles; answers that keep coming while it was just
-- throttled double the hold (exponential backoff for the account, not only for one row).
--
-- The sync queue reserves under the same ledger as it claims (claim_appointments, 65_sync_queue.sql: a
-- clinic whose account or the project has no budget left is not claimed at all); every other request
-- (a listing, the get and update after a 409, a retry after a 401) is reserved with
-- reserve_google_requests. The tables are private: only these functions reach them.

create table private.google_requests (
  id bigint generated always as identity primary key,
  budget_key text not null check (length(budget_key) between 1 and 400),
  reserved_at timestamptz not null default now(),
  usable_until timestamptz not null,
  requests integer not null check (requests >= 0),
  check (usable_until >= reserved_at)
);
create index google_requests_window on private.google_requests (usable_until) include (budget_key, requests);
comment on table private.google_requests is
  'Google Calendar requests reserved by the daemon''s replicas (the shared budget); rows older than the window are pruned.';
grant select, insert, update, delete on table private.google_requests to service_role;

create table private.google_throttles (
  budget_key text primary key check (length(budget_key) between 1 and 400),
  throttled_until timestamptz not null,
  hold_seconds double precision not null check (hold_seconds between 0 and 86400),
  reason text not null check (length(reason) <= 200)
);
comment on table private.google_throttles is
  'Budget keys Google answered with a rate-limit error, held back for every replica until throttled_until.';
grant select, insert, update, delete on table private.google_throttles to service_role;

------------------------------------------------------------------------------------------------------------
-- For the daemon
------------------------------------------------------------------------------------------------------------

-- Reserve up to p_requests Google requests for one clinic now (a listing, the get and update after a
-- 409, a retry after a 401, an operator command's check), within both limits. granted may be less
-- than asked, or 0 (then retry_after_seconds says when to ask again); entry identifies the
-- reservation for giving back what was not sent (through claim_appointments' p_returns).
create function public.reserve_google_requests(
  p_clinic_id uuid, p_requests integer, p_account_limit integer, p_project_limit integer,
  p_hold_seconds double precision default 2, p_returns jsonb default null
)
returns table (granted integer, entry bigint, retry_after_seconds double precision)
language plpgsql volatile
set search_path = ''
as $$
declare
  v_key text;
  v_grant integer;
  v_entry bigint;
begin
  perform private.require(p_clinic_id is not null, 'a clinic is required');
  perform private.require(p_requests between 1 and 1000, 'requests must be 1 to 1000');
  perform private.require(p_account_limit is not null, 'give both the per-account and the per-project limit');
  perform private.check_budget_arguments(p_account_limit, p_project_limit, p_hold_seconds);
  perform private.begin_budget_change(p_returns);
  v_key := private.google_budget_key_of(p_clinic_id);
  if exists (select from private.google_throttles t where t.budget_key = v_key and t.throttled_until > now()) then
    v_grant := 0;
  else
    v_grant := greatest(0, least(
      p_requests,
      p_account_limit - coalesce((select w.requests from private.google_requests_in_window() w
                                  where w.budget_key = v_key), 0),
      p_project_limit - coalesce((select sum(w.requests) from private.google_requests_in_window() w), 0)))::integer;
  end if;
  if v_grant = 0 then
    return query select 0, null::bigint,
                        greatest(0.05, private.google_budget_wait(v_key, p_account_limit, p_project_limit));
    return;
  end if;
  insert into private.google_requests (budget_key, usable_until, requests)
  values (v_key, now() + make_interval(secs => p_hold_seconds), v_grant)
  returning id into v_entry;
  return query select v_grant, v_entry, 0::double precision;
end
$$;
revoke all on function public.reserve_google_requests(p_clinic_id uuid, p_requests integer, p_account_limit integer, p_project_limit integer, p_hold_seconds double precision, p_returns jsonb) from public, anon, authenticated, service_role;
grant execute on function public.reserve_google_requests(p_clinic_id uuid, p_requests integer, p_account_limit integer, p_project_limit integer, p_hold_seconds double precision, p_returns jsonb) to service_role;

-- Google answered one of a clinic's requests with a rate or usage limit: hold its account back for every
-- replica, p_seconds at first. A refusal within a minute after a hold ended (of a request sent after it)
-- doubles the hold, up to p_max_seconds; one during a hold (a request sent before it) changes nothing.
create function public.throttle_google_requests(
  p_clinic_id uuid, p_seconds double precision, p_max_seconds double precision, p_reason text
)
returns void
language plpgsql volatile
set search_path = ''
as $$
begin
  perform private.require(p_clinic_id is not null, 'a clinic is required');
  perform private.require(p_seconds > 0 and p_max_seconds <= 86400 and p_seconds <= p_max_seconds,
                          'seconds must be more than 0 and at most the maximum, itself at most 86400');
  insert into private.google_throttles as t (budget_key, throttled_until, hold_seconds, reason)
  values (private.google_budget_key_of(p_clinic_id), now() + make_interval(secs => p_seconds), p_seconds,
          left(coalesce(p_reason, 'rate limited'), 200))
  on conflict (budget_key) do update
    set hold_seconds = case when t.throttled_until > now() then t.hold_seconds
                            when t.throttled_until > now() - make_interval(secs => greatest(t.hold_seconds, 60))
                            then least(greatest(t.hold_seconds * 2, excluded.hold_seconds), p_max_seconds)
                            else excluded.hold_seconds end,
        reason = excluded.reason;
  update private.google_throttles t
     set throttled_until = greatest(t.throttled_until, now() + make_interval(secs => t.hold_seconds))
   where t.budget_key = private.google_budget_key_of(p_clinic_id);
end
$$;
revoke all on function public.throttle_google_requests(p_clinic_id uuid, p_seconds double precision, p_max_seconds double precision, p_reason text) from public, anon, authenticated, service_role;
grant execute on function public.throttle_google_requests(p_clinic_id uuid, p_seconds double precision, p_max_seconds double precision, p_reason text) to service_role;

-- For metrics and the sync loop: the project's and the busiest keys' use of the window, throttled keys,
-- the clinics with due work held back for lack of budget, and how soon the first of them gets some.
create function public.google_budget_snapshot(p_account_limit integer, p_project_limit integer, p_top integer default 5)
returns jsonb
language sql stable
set search_path = ''
as $$
  with spent as (select * from private.google_requests_in_window()),
  throttled as (select t.budget_key from private.google_throttles t where t.throttled_until > now()),
  project as (select coalesce(sum(s.requests), 0) as used from spent s),
  due as (
    select distinct private.google_budget_key(a.clinic_id, k.google_account) as budget_key, a.clinic_id
    from public.appointments a
    join public.calendar_connections k on k.clinic_id = a.clinic_id and k.status = 'active'
    where a.sync_state = 'pending' and a.next_attempt_at <= now()
  ),
  held as (
    select d.clinic_id, d.budget_key
    from due d
    where exists (select from throttled t where t.budget_key = d.budget_key)
       or coalesce((select s.requests from spent s where s.budget_key = d.budget_key), 0) >= p_account_limit
       or (select used from project) >= p_project_limit
  )
  select jsonb_build_object(
    'project_used', (select used from project),
    'project_limit', p_project_limit,
    'account_limit', p_account_limit,
    'accounts', coalesce((select jsonb_agg(jsonb_build_object('key', s.budget_key, 'used', s.requests)
                                           order by s.requests desc, s.budget_key)
                          from (select * from spent order by requests desc, budget_key limit greatest(p_top, 0)) s),
                         '[]'::jsonb),
    'throttled', (select count(*) from throttled),
    'held_back_clinics', (select count(*) from held),
    'next_budget_seconds', (select min(greatest(0.05, private.google_budget_wait(h.budget_key, p_account_limit,
                                                                                 p_project_limit)))
                            from held h))
$$;
revoke all on function public.google_budget_snapshot(p_account_limit integer, p_project_limit integer, p_top integer) from public, anon, authenticated, service_role;
grant execute on function public.google_budget_snapshot(p_account_limit integer, p_project_limit integer, p_top integer) to service_role;

------------------------------------------------------------------------------------------------------------
-- The ledger's rules
------------------------------------------------------------------------------------------------------------

-- Serialises every reservation of every replica (claims and reservations on demand), then gives back
-- what replicas report unused ([{"entry": id, "requests": n}]) and prunes rows no window can reach.
create function private.begin_budget_change(p_returns jsonb) returns void
language plpgsql volatile
set search_path = ''
as $$
begin
  perform pg_catalog.pg_advisory_xact_lock(7031202611300300);
  perform private.require(p_returns is null or jsonb_typeof(p_returns) = 'array', 'returns must be a JSON array');
  update private.google_requests g
     set requests = greatest(0, g.requests - r.requests)
    from (select (e ->> 'entry')::bigint as entry, sum((e ->> 'requests')::integer) as requests
          from jsonb_array_elements(coalesce(p_returns, '[]'::jsonb)) e
          group by 1) r
   where g.id = r.entry and r.requests > 0;
  delete from private.google_requests where usable_until < now() - interval '2 minutes';
  delete from private.google_throttles where throttled_until < now() - interval '1 hour';
end
$$;
revoke all on function private.begin_budget_change(p_returns jsonb) from public;
grant execute on function private.begin_budget_change(p_returns jsonb) to service_role;

-- The limits a caller passes, checked alike by claim_appointments and reserve_google_requests: both
-- limits or neither (no limits: claims are not budgeted), and a hold of 0.1 to 60 seconds.
create function private.check_budget_arguments(
  p_account_limit integer, p_project_limit integer, p_hold_seconds double precision
) returns void
language plpgsql stable
set search_path = ''
as $$
begin
  perform private.require(p_account_limit is null or p_account_limit between 1 and 100000,
                          'the per-account limit must be 1 to 100000 requests a minute');
  perform private.require(p_project_limit is null or p_project_limit between 1 and 10000000,
                          'the per-project limit must be 1 to 10000000 requests a minute');
  perform private.require((p_account_limit is null) = (p_project_limit is null),
                          'give both the per-account and the per-project limit, or neither');
  perform private.require(p_hold_seconds between 0.1 and 60, 'the hold must be 0.1 to 60 seconds');
end
$$;
revoke all on function private.check_budget_arguments(p_account_limit integer, p_project_limit integer, p_hold_seconds double precision) from public;
grant execute on function private.check_budget_arguments(p_account_limit integer, p_project_limit integer, p_hold_seconds double precision) to service_role;

-- The key a clinic's requests are counted under.
create function private.google_budget_key(p_clinic_id uuid, p_google_account text) returns text
language sql immutable
set search_path = ''
as $$
  select coalesce(lower(nullif(btrim(p_google_account), '')), 'clinic:' || p_clinic_id::text)
$$;
revoke all on function private.google_budget_key(p_clinic_id uuid, p_google_account text) from public;
grant execute on function private.google_budget_key(p_clinic_id uuid, p_google_account text) to service_role;

-- The key a clinic's requests are counted under, from its Google connection (or its id when it has none).
create function private.google_budget_key_of(p_clinic_id uuid) returns text
language sql stable
set search_path = ''
as $$
  select private.google_budget_key(p_clinic_id, (select google_account from public.calendar_connections
                                                  where clinic_id = p_clinic_id))
$$;
revoke all on function private.google_budget_key_of(p_clinic_id uuid) from public;
grant execute on function private.google_budget_key_of(p_clinic_id uuid) to service_role;

-- Requests counted against each key now: every reservation whose requests may fall in a 60 s window
-- that also holds a request sent from now on.
create function private.google_requests_in_window()
returns table (budget_key text, requests bigint)
language sql stable
set search_path = ''
as $$
  select g.budget_key, sum(g.requests)::bigint
  from private.google_requests g
  where g.usable_until > now() - interval '60 seconds'
  group by g.budget_key
$$;
revoke all on function private.google_requests_in_window() from public;
grant execute on function private.google_requests_in_window() to service_role;

-- Seconds until a key may get budget again: when its throttle ends, and, if its account's (or the
-- project's) window is full, when the oldest reservation in it leaves. 0 when it has budget now.
create function private.google_budget_wait(p_budget_key text, p_account_limit integer, p_project_limit integer)
returns double precision
language sql stable
set search_path = ''
as $$
  with spent as (select * from private.google_requests_in_window())
  select greatest(
    0,
    (select extract(epoch from max(t.throttled_until) - now()) from private.google_throttles t
      where t.budget_key = p_budget_key and t.throttled_until > now()),
    case when coalesce((select s.requests from spent s where s.budget_key = p_budget_key), 0) >= p_account_limit
         then (select extract(epoch from min(g.usable_until) + interval '60 seconds' - now())
               from private.google_requests g
               where g.budget_key = p_budget_key and g.usable_until > now() - interval '60 seconds') end,
    case when coalesce((select sum(s.requests) from spent s), 0) >= p_project_limit
         then (select extract(epoch from min(g.usable_until) + interval '60 seconds' - now())
               from private.google_requests g where g.usable_until > now() - interval '60 seconds') end
  )::double precision
$$;
revoke all on function private.google_budget_wait(p_budget_key text, p_account_limit integer, p_project_limit integer) from public;
grant execute on function private.google_budget_wait(p_budget_key text, p_account_limit integer, p_project_limit integer) to service_role;
