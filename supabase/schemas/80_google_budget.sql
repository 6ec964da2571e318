-- FUNCTION private.begin_budget_change(jsonb)
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

-- FUNCTION private.check_budget_arguments(integer, integer, double precision)
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

-- FUNCTION private.google_budget_key(uuid, text)
-- The key a clinic's requests are counted under.
create function private.google_budget_key(p_clinic_id uuid, p_google_account text) returns text
language sql immutable
set search_path = ''
as $$
  select coalesce(lower(nullif(btrim(p_google_account), '')), 'clinic:' || p_clinic_id::text)
$$;

-- FUNCTION private.google_budget_key_of(uuid)
create function private.google_budget_key_of(p_clinic_id uuid) returns text
language sql stable
set search_path = ''
as $$
  select private.google_budget_key(p_clinic_id, (select google_account from public.calendar_connections
                                                  where clinic_id = p_clinic_id))
$$;

-- FUNCTION private.google_budget_wait(text, integer, integer)
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

-- FUNCTION private.google_requests_in_window()
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

-- FUNCTION public.google_budget_snapshot(integer, integer, integer)
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

-- FUNCTION public.reserve_google_requests(uuid, integer, integer, integer, double precision, jsonb)
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

-- FUNCTION public.throttle_google_requests(uuid, double precision, double precision, text)
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

-- TABLE private.google_requests
CREATE TABLE private.google_requests (
    id bigint NOT NULL,
    budget_key text NOT NULL,
    reserved_at timestamp with time zone DEFAULT now() NOT NULL,
    usable_until timestamp with time zone NOT NULL,
    requests integer NOT NULL,
    CONSTRAINT google_requests_budget_key_check CHECK (((length(budget_key) >= 1) AND (length(budget_key) <= 400))),
    CONSTRAINT google_requests_check CHECK ((usable_until >= reserved_at)),
    CONSTRAINT google_requests_requests_check CHECK ((requests >= 0))
);

-- COMMENT private.TABLE google_requests
COMMENT ON TABLE private.google_requests IS 'Google Calendar requests reserved by the daemon''s replicas (the shared budget); rows older than the window are pruned.';

-- SEQUENCE private.google_requests_id_seq
ALTER TABLE private.google_requests ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME private.google_requests_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

-- TABLE private.google_throttles
CREATE TABLE private.google_throttles (
    budget_key text NOT NULL,
    throttled_until timestamp with time zone NOT NULL,
    hold_seconds double precision NOT NULL,
    reason text NOT NULL,
    CONSTRAINT google_throttles_budget_key_check CHECK (((length(budget_key) >= 1) AND (length(budget_key) <= 400))),
    CONSTRAINT google_throttles_hold_seconds_check CHECK (((hold_seconds >= (0)::double precision) AND (hold_seconds <= (86400)::double precision))),
    CONSTRAINT google_throttles_reason_check CHECK ((length(reason) <= 200))
);

-- COMMENT private.TABLE google_throttles
COMMENT ON TABLE private.google_throttles IS 'Budget keys Google answered with a rate-limit error, held back for every replica until throttled_until.';

-- CONSTRAINT private.google_requests google_requests_pkey
ALTER TABLE ONLY private.google_requests
    ADD CONSTRAINT google_requests_pkey PRIMARY KEY (id);

-- CONSTRAINT private.google_throttles google_throttles_pkey
ALTER TABLE ONLY private.google_throttles
    ADD CONSTRAINT google_throttles_pkey PRIMARY KEY (budget_key);

-- INDEX private.google_requests_window
CREATE INDEX google_requests_window ON private.google_requests USING btree (usable_until) INCLUDE (budget_key, requests);

revoke all on function private.begin_budget_change(p_returns jsonb) from public;
grant execute on function private.begin_budget_change(p_returns jsonb) to service_role;

revoke all on function private.check_budget_arguments(p_account_limit integer, p_project_limit integer, p_hold_seconds double precision) from public;
grant execute on function private.check_budget_arguments(p_account_limit integer, p_project_limit integer, p_hold_seconds double precision) to service_role;

revoke all on function private.google_budget_key(p_clinic_id uuid, p_google_account text) from public;
grant execute on function private.google_budget_key(p_clinic_id uuid, p_google_account text) to service_role;

revoke all on function private.google_budget_key_of(p_clinic_id uuid) from public;
grant execute on function private.google_budget_key_of(p_clinic_id uuid) to service_role;

revoke all on function private.google_budget_wait(p_budget_key text, p_account_limit integer, p_project_limit integer) from public;
grant execute on function private.google_budget_wait(p_budget_key text, p_account_limit integer, p_project_limit integer) to service_role;

revoke all on function private.google_requests_in_window() from public;
grant execute on function private.google_requests_in_window() to service_role;

revoke all on function public.google_budget_snapshot(p_account_limit integer, p_project_limit integer, p_top integer) from public, anon, authenticated, service_role;
grant execute on function public.google_budget_snapshot(p_account_limit integer, p_project_limit integer, p_top integer) to service_role;

revoke all on function public.reserve_google_requests(p_clinic_id uuid, p_requests integer, p_account_limit integer, p_project_limit integer, p_hold_seconds double precision, p_returns jsonb) from public, anon, authenticated, service_role;
grant execute on function public.reserve_google_requests(p_clinic_id uuid, p_requests integer, p_account_limit integer, p_project_limit integer, p_hold_seconds double precision, p_returns jsonb) to service_role;

revoke all on function public.throttle_google_requests(p_clinic_id uuid, p_seconds double precision, p_max_seconds double precision, p_reason text) from public, anon, authenticated, service_role;
grant execute on function public.throttle_google_requests(p_clinic_id uuid, p_seconds double precision, p_max_seconds double precision, p_reason text) to service_role;

grant select, insert, delete, update on table private.google_requests to service_role;

grant select, insert, delete, update on table private.google_throttles to service_role;

