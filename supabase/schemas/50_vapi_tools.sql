-- The Vapi assistant's tools: POST /rest/v1/rpc/vapi_tool_call with the whole Vapi message.
--
-- Contract (see DESIGN.md): whatever the body, the answer is HTTP 200 within Supabase's per-role
-- timeouts, with {"results": [{"toolCallId", "result"|"error"}]} in call order and single-line
-- strings. The clinic comes only from the `x-clinic-key` header. Changing a tool's arguments or
-- answers breaks deployed assistants.
--
-- - public.vapi_tool_call is SECURITY DEFINER, owned by `vapi_clinic`, a role without BYPASSRLS
--   that owns no table: every tool body runs under RLS scoped to the key's clinic. Only `anon` may
--   execute it: Vapi calls with the anon key, and Supabase's advisor flags a SECURITY DEFINER
--   function that `authenticated` can execute.
-- - Tool-level refusals are raised with SQLSTATE VA001 (private.refuse, 00_foundations.sql) and
--   turned into that call's `error`. Each call runs in its own savepoint, so a refused call
--   changes nothing.
-- - Every wait is bounded by the call's own budget. On Supabase `anon` runs with
--   `statement_timeout = 3s`, and a statement cancelled by it (57014) cannot be caught, so
--   PostgREST would answer HTTP 500 and Vapi would drop the result. vapi_tool_call gives itself at
--   most 2 s for waiting on locks (60% of the role's statement_timeout when that is shorter). Each
--   wait runs with `lock_timeout` set to what is left, and a call that cannot get its turn in time
--   is answered "The diary is busy ... please try again" (HTTP 200, nothing changed). A
--   statement_timeout set inside a running statement does not shorten it, so the budget is kept
--   with lock_timeout, which bounds the only waits these calls make.
-- - One clinic's bookings, moves and cancellations take turns. Each holds the clinic's diary
--   (private.lock_diary and the diary rules, 40_diary_rules.sql) before it checks anything, so two
--   callers racing for one slot do not meet inside the exclusion constraint. The second one waits
--   its turn and hears the nearest free times.
-- - The body arrives as one unnamed `json` parameter, not `jsonb`. A `\u0000` anywhere in it (Vapi
--   forwards transcripts) would fail the jsonb conversion before any of our code ran (22P05, HTTP
--   400). A call containing a NUL is refused on its own, NULs elsewhere (a transcript) change
--   nothing, and an id containing one is echoed exactly.
-- - Whole-message problems (no Vapi message, no list of calls, too many calls, a body jsonb cannot
--   hold) still answer every call id that can be found.
-- - A mutating call is answered once per toolCallId (vapi_tool_calls), so a Vapi retry gets the
--   same answer instead of a second booking.
--
-- In this file: the answers table; the entry point and the envelope; the wait budget; one call;
-- the four tools; finding the caller's booking; reading arguments.

------------------------------------------------------------------------------------------
-- The answers already given
------------------------------------------------------------------------------------------

-- Answers given to mutating tool calls, so a Vapi retry (same toolCallId) gets the same
-- answer instead of a second booking. request_hash is the SHA-256 of the tool's name and
-- arguments: the same id sent for a different request is refused. result is null until the
-- first attempt has answered (a concurrent retry waits for its commit).
create table public.vapi_tool_calls (
  clinic_id uuid not null references public.clinics (id) on delete cascade,
  tool_call_id text not null check (length(tool_call_id) between 1 and 200),
  tool_name text not null,
  request_hash bytea not null,
  result text,
  created_at timestamptz not null default now(),
  primary key (clinic_id, tool_call_id)
);
-- For purge_vapi_tool_calls, oldest first.
create index vapi_tool_calls_created on public.vapi_tool_calls (created_at);

alter table public.vapi_tool_calls enable row level security;
revoke all on table public.vapi_tool_calls from anon, authenticated, service_role;
grant all on table public.vapi_tool_calls to service_role;
grant select, insert, update on table public.vapi_tool_calls to vapi_clinic;
create policy own_clinic on public.vapi_tool_calls for all to vapi_clinic
  using (clinic_id = (select private.request_clinic_id()))
  with check (clinic_id = (select private.request_clinic_id()));

-- Retention: the answers carry patient details. Deletes up to p_limit tool-call answers older
-- than p_older_than (at least a day: Vapi may still retry a younger call, and its first answer
-- must be found). It returns how many went. The daemon calls it on a schedule, until fewer than
-- p_limit go, so no one statement runs long.
create function public.purge_vapi_tool_calls(p_older_than interval, p_limit integer default 10000)
returns integer
language plpgsql volatile
set search_path = ''
as $$
declare
  v_deleted integer;
begin
  perform private.require(p_older_than is not null, 'p_older_than is required, e.g. ''30 days''');
  perform private.require(p_older_than >= interval '1 day',
    format('p_older_than must be at least 1 day, not %s: Vapi may still retry a younger tool call', p_older_than));
  perform private.require(p_limit between 1 and 100000, 'p_limit must be between 1 and 100000');
  delete from public.vapi_tool_calls
   where (clinic_id, tool_call_id) in (select clinic_id, tool_call_id from public.vapi_tool_calls
                                       where created_at < now() - p_older_than
                                       order by created_at
                                       limit p_limit);
  get diagnostics v_deleted = row_count;
  return v_deleted;
end
$$;
revoke all on function public.purge_vapi_tool_calls(p_older_than interval, p_limit integer) from public, anon, authenticated, service_role;
grant execute on function public.purge_vapi_tool_calls(p_older_than interval, p_limit integer) to service_role;

------------------------------------------------------------------------------------------
-- The entry point and the envelope
------------------------------------------------------------------------------------------

-- POST /rest/v1/rpc/vapi_tool_call: the whole Vapi message as one unnamed `json` parameter
-- (PostgREST passes a body to a function with one unnamed parameter whole). `json` keeps the text
-- as sent, so a `\u0000` escape reaches this code. Each one is swapped for a marker unique to this
-- request, and then the body is read as jsonb. A call containing one is refused on its own (by
-- run_tool_call), and the marker turns back into `\u0000` in the answer, so an id is echoed exactly.
-- A body that is valid JSON but cannot become jsonb (a number beyond numeric's range, such as
-- 1e400000) still gets an answer for every call id in it (vapi_refuse_unreadable). First of all
-- it sets the call's wait budget, `vapi.deadline` (see vapi_wait_budget).
create or replace function public.vapi_tool_call(json) returns json
language plpgsql volatile security definer
set search_path = ''
as $$
declare
  v_text text := $1::text;
  v_marker text;
  v_body jsonb;
  v_answer text;
begin
  perform set_config('vapi.deadline', (statement_timestamp() + private.vapi_wait_budget())::text, true);
  if strpos(v_text, '\u0000') > 0 then
    v_marker := 'NUL' || replace(gen_random_uuid()::text, '-', '');
    -- A `\u0000` escape is one whose backslash is not itself escaped: preceded by an even run of them.
    v_text := regexp_replace(v_text, '(?<!\\)((?:\\\\)*)\\u0000', '\1' || v_marker, 'g');
  end if;
  begin
    v_body := v_text::jsonb;
  exception
    when others then  -- valid JSON that jsonb cannot hold (a number beyond numeric's range)
      v_answer := private.vapi_refuse_unreadable(v_text::json,
        'The body could not be read: ' || regexp_replace(sqlerrm, '[\r\n]+', ' ', 'g'))::text;
  end;
  if v_answer is null then
    v_answer := private.vapi_answer(v_body, v_marker)::text;
  end if;
  if v_marker is null then
    return v_answer::json;
  end if;
  return replace(v_answer, v_marker, '\u0000')::json;
end
$$;
revoke all on function public.vapi_tool_call(json) from public, anon, authenticated, service_role;
grant execute on function public.vapi_tool_call(json) to anon;

-- The entry point runs as vapi_clinic; handing it over needs CREATE on public for a moment.
grant create on schema public to vapi_clinic;
alter function public.vapi_tool_call(json) owner to vapi_clinic;
revoke create on schema public from vapi_clinic;

-- The message, once its body could be read as jsonb. Whole-message problems (no Vapi message, no
-- list of calls, more than 20 calls) answer every call found. Then the clinic is the one whose key
-- is in `x-clinic-key` (private.authenticate_request), and an assistant's metadata.org_id, when
-- given, must be that clinic's id. Each call then runs on its own, in order (run_tool_call). Calls
-- not started by the deadline are answered "busy". p_nul_marker stands for `\u0000` in this body
-- (null: there is none). The Vapi call's id (message.call.id) is kept for a booking's
-- vapi_call_id only when it has at most 200 characters and no NUL.
create function private.vapi_answer(p_body jsonb, p_nul_marker text) returns jsonb
language plpgsql volatile
set search_path = ''
as $$
declare
  v_message jsonb := p_body -> 'message';
  v_calls jsonb;
  v_clinic public.clinics;
  v_clinic_id uuid;
  v_org_id jsonb;
  v_ctx jsonb;
  v_results jsonb := '[]'::jsonb;
  v_call jsonb;
  v_call_id text;
  v_deadline timestamptz := nullif(current_setting('vapi.deadline', true), '')::timestamptz;
begin
  if jsonb_typeof(v_message) is distinct from 'object' then
    return private.vapi_refuse_message(private.vapi_calls_found(p_body),
      'The body must be a Vapi server message: {"message": {"type": "tool-calls", ...}}');
  end if;
  v_calls := private.vapi_calls_of(v_message);
  if v_calls is null then
    return private.vapi_refuse_message(private.vapi_calls_found(v_message), 'The message has no toolCallList');
  end if;
  if jsonb_array_length(v_calls) > 20 then
    return private.vapi_refuse_message(v_calls, 'Too many tool calls in one message (at most 20)');
  end if;

  v_clinic_id := private.authenticate_request();
  if v_clinic_id is null then
    return private.vapi_refuse_all(v_calls,
      'Not authorised: this assistant''s clinic key is missing, wrong or revoked');
  end if;
  v_org_id := v_message -> 'assistant' -> 'metadata' -> 'org_id';
  if v_org_id is not null and v_org_id is distinct from to_jsonb(v_clinic_id::text) then
    return private.vapi_refuse_all(v_calls,
      'Not authorised: the assistant''s org_id does not match its clinic key');
  end if;
  select * into strict v_clinic from public.clinics where id = v_clinic_id;

  v_call_id := v_message #>> '{call,id}';
  v_ctx := jsonb_build_object(
    'caller_number', coalesce(v_message #>> '{call,customer,number}', v_message #>> '{customer,number}'),
    'call_id', case when length(v_call_id) <= 200 and (p_nul_marker is null or strpos(v_call_id, p_nul_marker) = 0)
                    then v_call_id end,
    'nul_marker', p_nul_marker);
  for v_call in select value from jsonb_array_elements(v_calls) loop
    v_results := v_results || jsonb_build_array(
      case when clock_timestamp() < v_deadline or v_deadline is null
           then private.run_tool_call(v_clinic, v_call, v_ctx)
           else jsonb_build_object('toolCallId', v_call -> 'id', 'error', private.busy_message()) end);
  end loop;
  return jsonb_build_object('results', v_results);
end
$$;
revoke all on function private.vapi_answer(p_body jsonb, p_nul_marker text) from public;
grant execute on function private.vapi_answer(p_body jsonb, p_nul_marker text) to vapi_clinic;

-- The tool calls of a Vapi message, in order: `toolCallList` (current and older flat item
-- shapes), else `toolCalls` (real payloads carry it instead of `toolCallList`), else the
-- `toolCall` of each `toolWithToolCallList` entry, named by its entry. Null when there is no
-- list at all.
create or replace function private.vapi_calls_of(p_message jsonb) returns jsonb
language sql immutable
set search_path = ''
as $$
  select case
    when jsonb_typeof(p_message -> 'toolCallList') = 'array' then p_message -> 'toolCallList'
    when jsonb_typeof(p_message -> 'toolCalls') = 'array' then p_message -> 'toolCalls'
    when jsonb_typeof(p_message -> 'toolWithToolCallList') = 'array' then (
      select coalesce(jsonb_agg(
               case when jsonb_typeof(entry -> 'toolCall') = 'object'
                    then jsonb_build_object('name', coalesce(entry -> 'function' -> 'name', entry -> 'name'))
                         || (entry -> 'toolCall')
                    else entry end
               order by position), '[]'::jsonb)
      from jsonb_array_elements(p_message -> 'toolWithToolCallList') with ordinality as e(entry, position))
  end
$$;
revoke all on function private.vapi_calls_of(p_message jsonb) from public;
grant execute on function private.vapi_calls_of(p_message jsonb) to vapi_clinic;

-- Whatever looks like tool calls in a message that cannot be served (or in a body that is no
-- Vapi message), so a whole-message refusal still answers every call id that can be found.
create function private.vapi_calls_found(p_container jsonb) returns jsonb
language sql immutable
set search_path = ''
as $$
  select coalesce(
    case when jsonb_typeof(p_container) = 'object' then coalesce(
      private.vapi_calls_of(p_container),
      case when jsonb_typeof(p_container -> 'toolCallList') = 'object' then jsonb_build_array(p_container -> 'toolCallList') end,
      case when jsonb_typeof(p_container -> 'toolCalls') = 'object' then jsonb_build_array(p_container -> 'toolCalls') end)
    end,
    '[]'::jsonb)
$$;
revoke all on function private.vapi_calls_found(p_container jsonb) from public;
grant execute on function private.vapi_calls_found(p_container jsonb) to vapi_clinic;

-- A whole-message problem: every call found gets it as its error, and the answer says it once more.
create function private.vapi_refuse_message(p_calls jsonb, p_message text) returns jsonb
language sql immutable
set search_path = ''
as $$
  select private.vapi_refuse_all(p_calls, p_message) || jsonb_build_object('error', p_message)
$$;
revoke all on function private.vapi_refuse_message(p_calls jsonb, p_message text) from public;
grant execute on function private.vapi_refuse_message(p_calls jsonb, p_message text) to vapi_clinic;

-- Every call answered with p_message as its error, in order. On its own it is the answer to a
-- message whose calls cannot be served for who sent it (no valid key, an org_id of another clinic).
create function private.vapi_refuse_all(p_calls jsonb, p_message text) returns jsonb
language sql immutable
set search_path = ''
as $$
  select jsonb_build_object('results', coalesce(jsonb_agg(
           jsonb_build_object('toolCallId', call -> 'id', 'error', p_message) order by position), '[]'::jsonb))
  from jsonb_array_elements(p_calls) with ordinality as c(call, position)
$$;
revoke all on function private.vapi_refuse_all(p_calls jsonb, p_message text) from public;
grant execute on function private.vapi_refuse_all(p_calls jsonb, p_message text) to vapi_clinic;

-- The calls of a message (or of a body that is no Vapi message) read without jsonb, each with
-- p_message as its error: what vapi_calls_found() and vapi_refuse_message() do for jsonb.
-- The json operators leave numbers as text, so a body jsonb cannot hold is still read.
create function private.vapi_refuse_unreadable(p_body json, p_message text) returns json
language sql immutable
set search_path = ''
as $$
  with container as (
    select case when json_typeof(p_body -> 'message') = 'object' then p_body -> 'message' else p_body end as c
  ),
  calls as (
    select case
      when json_typeof(c) <> 'object' then '[]'::json
      when json_typeof(c -> 'toolCallList') = 'array' then c -> 'toolCallList'
      when json_typeof(c -> 'toolCalls') = 'array' then c -> 'toolCalls'
      when json_typeof(c -> 'toolWithToolCallList') = 'array' then (
        select coalesce(json_agg(coalesce(entry -> 'toolCall', entry) order by position), '[]'::json)
        from json_array_elements(c -> 'toolWithToolCallList') with ordinality as e(entry, position))
      when json_typeof(c -> 'toolCallList') = 'object' then json_build_array(c -> 'toolCallList')
      when json_typeof(c -> 'toolCalls') = 'object' then json_build_array(c -> 'toolCalls')
      else '[]'::json end as list
    from container
  )
  select json_build_object(
    'results', coalesce(json_agg(json_build_object('toolCallId', call -> 'id', 'error', p_message) order by position),
                        '[]'::json),
    'error', p_message)
  from calls
  left join lateral json_array_elements(calls.list) with ordinality as c(call, position) on true
$$;
revoke all on function private.vapi_refuse_unreadable(p_body json, p_message text) from public;
grant execute on function private.vapi_refuse_unreadable(p_body json, p_message text) to vapi_clinic;

------------------------------------------------------------------------------------------
-- Waiting within the call's budget
------------------------------------------------------------------------------------------

-- How long vapi_tool_call may spend waiting for locks: 2 s, or 60% of the statement_timeout
-- in force when that is shorter (anon's 3 s on Supabase leaves 1.8 s).
create function private.vapi_wait_budget() returns interval
language sql stable
set search_path = ''
as $$
  select case when s.setting::bigint > 0
              then least(interval '2 seconds', make_interval(secs => s.setting::bigint * 0.6 / 1000))
              else interval '2 seconds' end
  from pg_catalog.pg_settings s
  where s.name = 'statement_timeout'
$$;
revoke all on function private.vapi_wait_budget() from public;
grant execute on function private.vapi_wait_budget() to vapi_clinic;

-- The lock_timeout for the next wait: what is left of the budget vapi_tool_call set
-- (`vapi.deadline`); the current lock_timeout outside it. Refuses (busy) when nothing is left.
-- Callers apply it themselves, `perform set_config('lock_timeout', private.wait_left(), true)`,
-- as a function's own setting changes end with it. The service role may call it too: its
-- deactivate_practitioner finds free colleagues as the tools do.
create function private.wait_left() returns text
language plpgsql volatile
set search_path = ''
as $$
declare
  v_deadline timestamptz := nullif(current_setting('vapi.deadline', true), '')::timestamptz;
  v_left_ms bigint;
begin
  if v_deadline is null then
    return current_setting('lock_timeout');
  end if;
  -- Rounded up, so a wait that times out ends at or after the deadline, never just before it.
  v_left_ms := ceil(extract(epoch from v_deadline - clock_timestamp()) * 1000);
  if v_left_ms <= 0 then
    perform private.refuse(private.busy_message());
  end if;
  return v_left_ms || 'ms';
end
$$;
revoke all on function private.wait_left() from public;
grant execute on function private.wait_left() to vapi_clinic;
grant execute on function private.wait_left() to service_role;

-- What a call that could not get its turn in time hears: nothing changed, try again.
create function private.busy_message() returns text
language sql immutable
set search_path = ''
as $$
  select 'The diary is busy right now and nothing was changed. Please try again in a moment'
$$;
revoke all on function private.busy_message() from public;
grant execute on function private.busy_message() to vapi_clinic;

------------------------------------------------------------------------------------------
-- One call
------------------------------------------------------------------------------------------

-- One tool call, in its own savepoint: a refusal or a fault rolls back only this call. A call
-- containing a NUL (p_ctx.nul_marker stands in for it) is refused whole, and so is a call without
-- a usable id. A mutating call first claims its id in vapi_tool_calls. A concurrent retry waits
-- there (within the budget) for the first attempt to commit, then answers with what it answered.
-- check_availability changes nothing and is not recorded. A wait past the budget (lock_timeout) or
-- a deadlock is "busy". Any other fault is logged with only the tool name and SQLSTATE, because
-- the arguments may carry patient details.
create or replace function private.run_tool_call(p_clinic public.clinics, p_call jsonb, p_ctx jsonb) returns jsonb
language plpgsql volatile
set search_path = ''
as $$
declare
  v_id jsonb := p_call -> 'id';
  v_tool_call_id text := v_id #>> '{}';
  v_name text;
  v_args jsonb;
  v_hash bytea;
  v_prior public.vapi_tool_calls;
  v_result text;
begin
  if strpos(p_call::text, p_ctx ->> 'nul_marker') > 0 then
    return jsonb_build_object('toolCallId', v_id, 'error',
      'This tool call contains a NUL character (U+0000), which cannot be stored, so nothing was done');
  end if;
  if jsonb_typeof(v_id) is distinct from 'string' or length(v_tool_call_id) not between 1 and 200 then
    return jsonb_build_object('toolCallId', v_id, 'error', 'This tool call has no usable id');
  end if;
  begin
    v_name := private.vapi_call_name(p_call);
    v_args := private.vapi_call_arguments(p_call);
    if v_name <> 'check_availability' then
      -- The first attempt claims the id; a concurrent retry waits here (within the budget) for
      -- it to commit, then answers with what the first attempt answered.
      v_hash := sha256(convert_to(v_name || ' ' || v_args::text, 'UTF8'));
      perform set_config('lock_timeout', private.wait_left(), true);
      insert into public.vapi_tool_calls (clinic_id, tool_call_id, tool_name, request_hash)
      values (p_clinic.id, v_tool_call_id, v_name, v_hash)
      on conflict do nothing;
      if not found then
        select * into v_prior from public.vapi_tool_calls
        where clinic_id = p_clinic.id and tool_call_id = v_tool_call_id;
        if v_prior.request_hash <> v_hash then
          perform private.refuse('This toolCallId was already used for a different request');
        end if;
        return jsonb_build_object('toolCallId', v_id, 'result', v_prior.result);
      end if;
    end if;
    v_result := case v_name
      when 'check_availability' then private.tool_check_availability(p_clinic, v_args)
      when 'book_appointment' then
        private.tool_book_appointment(p_clinic, v_args, p_ctx || jsonb_build_object('tool_call_id', v_tool_call_id))
      when 'cancel_appointment' then private.tool_cancel_appointment(p_clinic, v_args, p_ctx)
      when 'reschedule_appointment' then private.tool_reschedule_appointment(p_clinic, v_args, p_ctx)
    end;
    if v_hash is not null then
      update public.vapi_tool_calls set result = v_result
      where clinic_id = p_clinic.id and tool_call_id = v_tool_call_id;
    end if;
    return jsonb_build_object('toolCallId', v_id, 'result', v_result);
  exception
    when sqlstate 'VA001' then
      return jsonb_build_object('toolCallId', v_id, 'error', sqlerrm);
    when lock_not_available or deadlock_detected then
      return jsonb_build_object('toolCallId', v_id, 'error', private.busy_message());
    when others then
      -- Only the tool name and SQLSTATE: arguments may carry patient details.
      raise warning 'vapi_tool_call: % failed with SQLSTATE %', coalesce(v_name, 'unnamed tool'), sqlstate;
      return jsonb_build_object('toolCallId', v_id, 'error',
        'Something went wrong on our side. Please take a message and the clinic will call back');
  end;
end
$$;
revoke all on function private.run_tool_call(p_clinic public.clinics, p_call jsonb, p_ctx jsonb) from public;
grant execute on function private.run_tool_call(p_clinic public.clinics, p_call jsonb, p_ctx jsonb) to vapi_clinic;

-- The tool a call names (`function.name`, or a flat `name`): one of the four, or refused with
-- the list of them.
create function private.vapi_call_name(p_call jsonb) returns text
language plpgsql stable
set search_path = ''
as $$
declare
  v_name jsonb := coalesce(p_call -> 'function' -> 'name', p_call -> 'name');
begin
  if jsonb_typeof(v_name) is distinct from 'string' then
    perform private.refuse('This tool call has no function name');
  end if;
  if v_name #>> '{}' not in ('check_availability', 'book_appointment', 'cancel_appointment',
                             'reschedule_appointment') then
    perform private.refuse(format('Unknown tool "%s". Available tools: check_availability, '
                                  'book_appointment, cancel_appointment, reschedule_appointment',
                                  private.printable(v_name #>> '{}')));
  end if;
  return v_name #>> '{}';
end
$$;
revoke all on function private.vapi_call_name(p_call jsonb) from public;
grant execute on function private.vapi_call_name(p_call jsonb) to vapi_clinic;

-- Arguments arrive as an object in practice but are typed as a JSON string in Vapi's schema;
-- older payloads call them `parameters`.
create function private.vapi_call_arguments(p_call jsonb) returns jsonb
language plpgsql stable
set search_path = ''
as $$
declare
  v_args jsonb := coalesce(p_call -> 'function' -> 'arguments', p_call -> 'function' -> 'parameters',
                           p_call -> 'arguments', p_call -> 'parameters');
begin
  if v_args is null or jsonb_typeof(v_args) = 'null'
     or (jsonb_typeof(v_args) = 'string' and btrim(v_args #>> '{}') = '') then
    return '{}'::jsonb;
  end if;
  if jsonb_typeof(v_args) = 'string' then
    begin
      v_args := (v_args #>> '{}')::jsonb;
    exception
      when invalid_text_representation then
        perform private.refuse('The tool call''s arguments are not valid JSON');
    end;
  end if;
  if jsonb_typeof(v_args) <> 'object' then
    perform private.refuse('The tool call''s arguments must be a JSON object');
  end if;
  return v_args;
end
$$;
revoke all on function private.vapi_call_arguments(p_call jsonb) from public;
grant execute on function private.vapi_call_arguments(p_call jsonb) to vapi_clinic;

------------------------------------------------------------------------------------------
-- The tools
------------------------------------------------------------------------------------------

-- check_availability {date, service?, practitioner?}: the free start times on a clinic-local day,
-- up to the booking horizon. A clinic without active practitioners has the one diary it always
-- had, and answers exactly as before. With practitioners, the answer lists the named one's times,
-- or the times of each practitioner who offers the service and works that day, by practitioner.
-- The free times of a calendar whose mirror is stale cannot be trusted. When it is the only
-- calendar asked about, the call is refused with the reason; among several, it is left out.
-- It only reads, so it takes no lock and is not recorded for retries.
create or replace function private.tool_check_availability(p_clinic public.clinics, p_args jsonb) returns text
language plpgsql stable set search_path = '' as $$
declare
  v_day date;
  v_service public.clinic_services;
  v_today date := (now() at time zone p_clinic.time_zone)::date;
  v_slots text;
  v_day_name text;
  v_practitioner uuid;
  v_diaries uuid[];
  v_working uuid[];
  v_weekday integer;
begin
  perform private.check_arg_names(p_args, array['date', 'service', 'practitioner']);
  v_day := private.parse_local_date(private.required_text_arg(p_args, 'date', 40), 'date');
  v_service := private.pick_service(p_clinic.id, private.text_arg(p_args, 'service', 80));
  v_practitioner := private.pick_practitioner(p_clinic, private.text_arg(p_args, 'practitioner', 100));
  if v_day < v_today then
    perform private.refuse('That date has already passed');
  end if;
  if v_day > (now() at time zone p_clinic.time_zone)::date + p_clinic.booking_horizon_days then
    perform private.refuse(format('Bookings can be made at most %s days ahead', p_clinic.booking_horizon_days));
  end if;
  v_day_name := to_char(v_day, 'FMDay FMDD FMMonth YYYY');
  v_weekday := extract(isodow from v_day)::integer;

  if not private.clinic_has_practitioners(p_clinic.id) then
    perform private.refuse_if_closed(p_clinic.id, v_day);
    perform private.refuse_if_mirror_stale(p_clinic);
    select string_agg(private.local_clock(f.instant, p_clinic.time_zone), ', ' order by f.instant) into v_slots
    from private.diary_free_slots(p_clinic, v_day, v_service.duration_minutes, array[null::uuid]) as f;
    if v_slots is null then
      return format('No free times on %s for a %s (opening hours that day: %s).',
                    v_day_name, v_service.name, private.opening_hours_text(p_clinic.id, v_weekday));
    end if;
    return format('Free start times on %s for a %s-minute %s (%s time): %s.',
                  v_day_name, v_service.duration_minutes, v_service.name,
                  private.zone_place(p_clinic.time_zone), v_slots);
  end if;

  if v_practitioner is not null then
    perform private.refuse_unless_offered(v_practitioner, v_service.name);
    if not exists (select from private.diary_hours(p_clinic.id, v_practitioner, v_weekday)) then
      perform private.refuse(format('%s does not see patients on %ss', private.practitioner_name(v_practitioner),
                                    to_char(v_day, 'FMDay')));
    end if;
    perform private.refuse_if_diary_stale(p_clinic, v_practitioner);
    select string_agg(private.local_clock(f.instant, p_clinic.time_zone), ', ' order by f.instant) into v_slots
    from private.diary_free_slots(p_clinic, v_day, v_service.duration_minutes, array[v_practitioner]) as f;
    if v_slots is null then
      return format('No free times on %s for a %s with %s (their hours that day: %s).',
                    v_day_name, v_service.name, private.practitioner_name(v_practitioner),
                    private.diary_hours_text(p_clinic.id, v_practitioner, v_weekday));
    end if;
    return format('Free start times on %s for a %s-minute %s with %s (%s time): %s.',
                  v_day_name, v_service.duration_minutes, v_service.name, private.practitioner_name(v_practitioner),
                  private.zone_place(p_clinic.time_zone), v_slots);
  end if;

  v_diaries := private.offering_practitioners(p_clinic, v_service.name);
  if cardinality(v_diaries) = 0 then
    perform private.refuse(format('No practitioner here offers %s. The practitioners are: %s',
                                  v_service.name, private.practitioner_roster(p_clinic.id)));
  end if;
  select coalesce(array_agg(d order by o), '{}') into v_diaries
  from unnest(v_diaries) with ordinality as x(d, o)
  where exists (select from private.diary_hours(p_clinic.id, d, v_weekday));
  if cardinality(v_diaries) = 0 then
    perform private.refuse(format('No one sees patients for a %s on %ss', v_service.name, to_char(v_day, 'FMDay')));
  end if;
  v_working := v_diaries;
  select coalesce(array_agg(d order by o), '{}') into v_diaries
  from unnest(v_working) with ordinality as x(d, o)
  where not private.diary_mirror_stale(p_clinic, d);
  if cardinality(v_diaries) = 0 then  -- no one's calendar can be trusted: say so, not "no free times"
    perform private.refuse_if_diary_stale(p_clinic, v_working[1]);
  end if;
  select string_agg(format('%s: %s', private.practitioner_name(per.practitioner_id), per.times), '; '
                    order by per.first_free, per.o)
    into v_slots
  from (select f.practitioner_id, min(f.instant) as first_free,
               min(x.o) as o,
               string_agg(private.local_clock(f.instant, p_clinic.time_zone), ', ' order by f.instant) as times
        from private.diary_free_slots(p_clinic, v_day, v_service.duration_minutes, v_diaries) as f
        join unnest(v_diaries) with ordinality as x(d, o) on x.d = f.practitioner_id
        group by f.practitioner_id) per;
  if v_slots is null then
    return format('No free times on %s for a %s with anyone.', v_day_name, v_service.name);
  end if;
  return format('Free start times on %s for a %s-minute %s (%s time), by practitioner: %s. '
                'Book with a practitioner by name, or leave practitioner out for whoever is free.',
                v_day_name, v_service.duration_minutes, v_service.name, private.zone_place(p_clinic.time_zone), v_slots);
end
$$;
revoke all on function private.tool_check_availability(p_clinic public.clinics, p_args jsonb) from public;
grant execute on function private.tool_check_availability(p_clinic public.clinics, p_args jsonb) to vapi_clinic;

-- book_appointment {start, patient_name, patient_phone?, service?, notes?, practitioner?}. The
-- phone is the caller's number unless one is given. The booking is with the named practitioner or,
-- for anyone, with the one chosen fairly; private.diary_for_booking also checks that the time is
-- bookable, on the grid and free. The clinic's diary is held from before those checks until the
-- transaction ends. An exclusion violation can still come from a writer that does not hold the
-- diary (staff, the service role), and is answered with the nearest free times.
create or replace function private.tool_book_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) returns text
language plpgsql set search_path = '' as $$
declare
  v_start_text text;
  v_name text;
  v_phone text;
  v_notes text;
  v_service public.clinic_services;
  v_start record;
  v_ends timestamptz;
  v_reference text;
  v_named uuid;
  v_practitioner uuid;
  v_with_practitioners boolean;
begin
  perform private.check_arg_names(p_args, array['start', 'patient_name', 'patient_phone', 'service', 'notes',
                                                'practitioner']);
  v_start_text := private.required_text_arg(p_args, 'start', 40);
  v_name := private.required_text_arg(p_args, 'patient_name', 100);
  v_phone := private.patient_phone(p_clinic, p_args, p_ctx);
  if v_phone is null then
    perform private.refuse('patient_phone is required: the caller''s number is not available, so ask for one');
  end if;
  v_notes := private.text_arg(p_args, 'notes', 500, true);
  v_service := private.pick_service(p_clinic.id, private.text_arg(p_args, 'service', 80));
  v_named := private.pick_practitioner(p_clinic, private.text_arg(p_args, 'practitioner', 100));
  v_start := private.parse_local_start(v_start_text, p_clinic.time_zone, 'start');
  v_ends := v_start.instant + make_interval(mins => v_service.duration_minutes);
  perform private.lock_diary(p_clinic.id);
  perform set_config('lock_timeout', private.wait_left(), true);
  v_with_practitioners := private.clinic_has_practitioners(p_clinic.id);
  v_practitioner := private.diary_for_booking(p_clinic, v_named, v_with_practitioners and v_named is null,
                                              v_service.name, v_start.instant, v_service.duration_minutes, null);
  v_reference := private.new_reference(p_clinic.id);
  begin
    insert into public.appointments (
      clinic_id, reference, patient, service, notes, starts_at, ends_at, source,
      vapi_call_id, vapi_tool_call_id, practitioner_id)
    values (
      p_clinic.id, v_reference, jsonb_build_object('name', v_name, 'phone', v_phone),
      v_service.name, v_notes, v_start.instant, v_ends, 'vapi',
      p_ctx ->> 'call_id', p_ctx ->> 'tool_call_id', v_practitioner);
  exception
    when exclusion_violation then  -- a writer that does not hold the diary (staff, the service role)
      perform private.slot_taken(p_clinic, v_start.instant, v_service.duration_minutes, null, array[v_practitioner]);
  end;
  return format('Booked: %s%s on %s at %s%s for %s. Reference %s.',
                v_service.name, private.with_whom(v_practitioner),
                private.local_day(v_start.instant, p_clinic.time_zone),
                private.local_clock(v_start.instant, p_clinic.time_zone),
                case when v_start.ambiguous
                     then ' (the first of the two times the clock shows that hour, before the clocks go back)'
                     else '' end,
                v_name, v_reference);
end
$$;
revoke all on function private.tool_book_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) from public;
grant execute on function private.tool_book_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) to vapi_clinic;

-- cancel_appointment {reference?, patient_phone?, start?}: cancels the upcoming booking that
-- find_appointment names, holding the clinic's diary.
create or replace function private.tool_cancel_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) returns text
language plpgsql set search_path = '' as $$
declare
  v_appointment public.appointments;
begin
  perform private.check_arg_names(p_args, array['reference', 'patient_phone', 'start']);
  perform private.lock_diary(p_clinic.id);
  perform set_config('lock_timeout', private.wait_left(), true);
  v_appointment := private.find_appointment(p_clinic, p_args, p_ctx, private.text_arg(p_args, 'start', 40));
  update public.appointments
     set status = 'cancelled', cancelled_at = now()
   where id = v_appointment.id;
  return format('Cancelled: %s%s on %s at %s (reference %s).',
                v_appointment.service, private.with_whom(v_appointment.practitioner_id),
                private.local_day(v_appointment.starts_at, p_clinic.time_zone),
                private.local_clock(v_appointment.starts_at, p_clinic.time_zone), v_appointment.reference);
end
$$;
revoke all on function private.tool_cancel_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) from public;
grant execute on function private.tool_cancel_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) to vapi_clinic;

-- reschedule_appointment {reference?, patient_phone?, new_start?, practitioner?}: moves the
-- booking, holding the clinic's diary as book_appointment does. The practitioner is kept unless
-- one is asked for (new_start may then be left out: the same time with someone else), or unless
-- they no longer take bookings: then whoever is free.
create or replace function private.tool_reschedule_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) returns text
language plpgsql set search_path = '' as $$
declare
  v_new_start_text text;
  v_practitioner_text text;
  v_appointment public.appointments;
  v_new record;
  v_length interval;
  v_minutes integer;
  v_named uuid;
  v_anyone boolean;
  v_practitioner uuid;
  v_with_practitioners boolean;
begin
  perform private.check_arg_names(p_args, array['reference', 'patient_phone', 'new_start', 'practitioner']);
  v_practitioner_text := private.text_arg(p_args, 'practitioner', 100);
  if v_practitioner_text is null then
    v_new_start_text := private.required_text_arg(p_args, 'new_start', 40);
  else
    v_new_start_text := private.text_arg(p_args, 'new_start', 40);
    v_named := private.pick_practitioner(p_clinic, v_practitioner_text);
  end if;
  perform private.lock_diary(p_clinic.id);
  perform set_config('lock_timeout', private.wait_left(), true);
  v_appointment := private.find_appointment(p_clinic, p_args, p_ctx, null);
  if v_new_start_text is null then
    select v_appointment.starts_at as instant, false as ambiguous into v_new;
  else
    v_new := private.parse_local_start(v_new_start_text, p_clinic.time_zone, 'new_start');
  end if;
  v_with_practitioners := private.clinic_has_practitioners(p_clinic.id);
  if v_practitioner_text is null then
    -- Kept, unless the practitioner no longer takes bookings: then whoever is free.
    v_named := v_appointment.practitioner_id;
    v_anyone := v_with_practitioners and v_named is not null
                and not (select active from public.practitioners where id = v_named);
  else
    v_anyone := v_with_practitioners and v_named is null;
  end if;
  if v_new.instant = v_appointment.starts_at
     and (v_named is not distinct from v_appointment.practitioner_id and not v_anyone) then
    perform private.refuse(format('The booking %s is already at that time%s', v_appointment.reference,
                                  private.with_whom(v_named)));
  end if;
  v_length := v_appointment.ends_at - v_appointment.starts_at;
  v_minutes := (extract(epoch from v_length) / 60)::integer;
  v_practitioner := private.diary_for_booking(p_clinic, case when v_anyone then null else v_named end, v_anyone,
                                              v_appointment.service, v_new.instant, v_minutes, v_appointment.id);
  begin
    update public.appointments
       set starts_at = v_new.instant, ends_at = v_new.instant + v_length, practitioner_id = v_practitioner
     where id = v_appointment.id;
  exception
    when exclusion_violation then  -- a writer that does not hold the diary (staff, the service role)
      perform private.slot_taken(p_clinic, v_new.instant, v_minutes, v_appointment.id, array[v_practitioner]);
  end;
  return format('Moved: %s%s from %s at %s to %s%s at %s%s (reference %s).',
                v_appointment.service, private.with_whom(v_appointment.practitioner_id),
                private.local_day(v_appointment.starts_at, p_clinic.time_zone),
                private.local_clock(v_appointment.starts_at, p_clinic.time_zone),
                case when v_practitioner is distinct from v_appointment.practitioner_id
                     then private.practitioner_name(v_practitioner) || ' on ' else '' end,
                private.local_day(v_new.instant, p_clinic.time_zone),
                private.local_clock(v_new.instant, p_clinic.time_zone),
                case when v_new.ambiguous
                     then ' (the first of the two times the clock shows that hour, before the clocks go back)'
                     else '' end,
                v_appointment.reference);
end
$$;
revoke all on function private.tool_reschedule_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) from public;
grant execute on function private.tool_reschedule_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) to vapi_clinic;

------------------------------------------------------------------------------------------
-- Whose booking: the caller's phone number and their booking
------------------------------------------------------------------------------------------

-- The upcoming live appointment a cancel/reschedule refers to: by reference, else by the
-- caller's phone number (and start time, when given). Locked for the change that follows.
create function private.find_appointment(
  p_clinic public.clinics, p_args jsonb, p_ctx jsonb, p_start_text text
) returns public.appointments
language plpgsql volatile
set search_path = ''
as $$
declare
  v_reference text := upper(regexp_replace(coalesce(private.text_arg(p_args, 'reference', 20), ''),
                                           '[[:space:]-]', '', 'g'));
  v_phone text;
  v_start timestamptz;
  v_found public.appointments;
  v_count integer;
  v_list text;
begin
  if v_reference <> '' then
    select * into v_found from public.appointments
    where clinic_id = p_clinic.id and reference = v_reference
    for update;
    if not found then
      perform private.refuse(format('No booking has the reference %s', private.printable(v_reference, 20)));
    end if;
  else
    v_phone := private.patient_phone(p_clinic, p_args, p_ctx);
    if v_phone is null then
      perform private.refuse('Give the booking reference, or the phone number the booking was made with');
    end if;
    if p_start_text is not null then
      v_start := (private.parse_local_start(p_start_text, p_clinic.time_zone, 'start')).instant;
    end if;
    select count(*),
           string_agg(format('%s at %s (reference %s)', private.local_day(starts_at, p_clinic.time_zone),
                             private.local_clock(starts_at, p_clinic.time_zone), reference),
                      '; ' order by starts_at)
      into v_count, v_list
    from public.appointments
    where clinic_id = p_clinic.id and status = 'booked' and starts_at > now()
      and patient ->> 'phone' = v_phone
      and (v_start is null or starts_at = v_start);
    if v_count = 0 then
      perform private.refuse(case when v_start is null
                                  then 'No upcoming booking was found for that phone number'
                                  else 'No upcoming booking was found for that phone number at that time' end);
    elsif v_count > 1 then
      perform private.refuse(format('There are %s upcoming bookings for that phone number: %s. Which one?',
                                    v_count, v_list));
    end if;
    select * into v_found from public.appointments
    where clinic_id = p_clinic.id and status = 'booked' and starts_at > now()
      and patient ->> 'phone' = v_phone and (v_start is null or starts_at = v_start)
    for update;
  end if;
  if v_found.status = 'cancelled' then
    perform private.refuse(format('The booking %s is already cancelled', v_found.reference));
  end if;
  if v_found.starts_at <= now() then
    perform private.refuse(format('The booking %s has already started or taken place', v_found.reference));
  end if;
  return v_found;
end
$$;
revoke all on function private.find_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb, p_start_text text) from public;
grant execute on function private.find_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb, p_start_text text) to vapi_clinic;

-- The caller's phone number: the `patient_phone` argument, else the number Vapi saw calling.
create function private.patient_phone(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) returns text
language plpgsql stable
set search_path = ''
as $$
declare
  v_given text := private.text_arg(p_args, 'patient_phone', 30);
  v_phone text;
begin
  if v_given is not null then
    v_phone := private.normalise_phone(v_given, p_clinic.phone_country_code);
    if v_phone is null then
      perform private.refuse('patient_phone does not look like a phone number');
    end if;
  else
    v_phone := private.normalise_phone(p_ctx ->> 'caller_number', p_clinic.phone_country_code);
  end if;
  return v_phone;
end
$$;
revoke all on function private.patient_phone(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) from public;
grant execute on function private.patient_phone(p_clinic public.clinics, p_args jsonb, p_ctx jsonb) to vapi_clinic;

------------------------------------------------------------------------------------------
-- Reading arguments
------------------------------------------------------------------------------------------

-- Refuses any argument the tool does not take, naming the unexpected ones and the ones it takes.
create function private.check_arg_names(p_args jsonb, p_allowed text[]) returns void
language plpgsql stable
set search_path = ''
as $$
declare
  v_unexpected text;
begin
  select string_agg(private.printable(k), ', ' order by k) into v_unexpected
  from jsonb_object_keys(p_args) as k
  where k <> all (p_allowed);
  if v_unexpected is not null then
    perform private.refuse(format('Unexpected argument(s): %s. This tool takes: %s',
                                  v_unexpected, array_to_string(p_allowed, ', ')));
  end if;
end
$$;
revoke all on function private.check_arg_names(p_args jsonb, p_allowed text[]) from public;
grant execute on function private.check_arg_names(p_args jsonb, p_allowed text[]) to vapi_clinic;

-- A text argument, trimmed; null when absent, null or blank. Refuses other JSON types,
-- control characters (newlines and tabs only where p_multiline) and overlong values.
create function private.text_arg(
  p_args jsonb, p_key text, p_max_length integer, p_multiline boolean default false
) returns text
language plpgsql stable
set search_path = ''
as $$
declare
  v_value jsonb := p_args -> p_key;
  v_text text;
begin
  if v_value is null or jsonb_typeof(v_value) = 'null' then
    return null;
  end if;
  if jsonb_typeof(v_value) <> 'string' then
    perform private.refuse(format('%s must be text', p_key));
  end if;
  v_text := btrim(v_value #>> '{}');
  if v_text = '' then
    return null;
  end if;
  if length(v_text) > p_max_length then
    perform private.refuse(format('%s is too long (at most %s characters)', p_key, p_max_length));
  end if;
  if v_text ~ (case when p_multiline then '[\x01-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]'
                    else '[\x01-\x1f\x7f-\x9f\u2028\u2029]' end) then
    perform private.refuse(format('%s contains control characters', p_key));
  end if;
  return v_text;
end
$$;
revoke all on function private.text_arg(p_args jsonb, p_key text, p_max_length integer, p_multiline boolean) from public;
grant execute on function private.text_arg(p_args jsonb, p_key text, p_max_length integer, p_multiline boolean) to vapi_clinic;

-- text_arg, refused when absent or blank.
create function private.required_text_arg(p_args jsonb, p_key text, p_max_length integer)
returns text
language plpgsql stable
set search_path = ''
as $$
declare
  v_text text := private.text_arg(p_args, p_key, p_max_length);
begin
  if v_text is null then
    perform private.refuse(format('%s is required', p_key));
  end if;
  return v_text;
end
$$;
revoke all on function private.required_text_arg(p_args jsonb, p_key text, p_max_length integer) from public;
grant execute on function private.required_text_arg(p_args jsonb, p_key text, p_max_length integer) to vapi_clinic;

-- A clinic-local date "YYYY-MM-DD", refused unless it is a real date.
create function private.parse_local_date(p_text text, p_arg text) returns date
language plpgsql stable
set search_path = ''
as $$
begin
  if p_text !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' then
    perform private.refuse(format('%s must be a date like 2026-12-01', p_arg));
  end if;
  return p_text::date;
exception
  when datetime_field_overflow or invalid_datetime_format then
    perform private.refuse(format('%s is not a real date', p_arg));
    return null;
end
$$;
revoke all on function private.parse_local_date(p_text text, p_arg text) from public;
grant execute on function private.parse_local_date(p_text text, p_arg text) to vapi_clinic;

-- A clinic-local "YYYY-MM-DDTHH:MM" (seconds ":00" and a space separator are tolerated). It is
-- refused when that time does not exist (clocks go forward). A time that happens twice (clocks
-- go back) is its first occurrence, and `ambiguous` says so (private.local_to_instant).
create function private.parse_local_start(
  p_text text, p_zone text, p_arg text, out instant timestamptz, out ambiguous boolean
)
language plpgsql stable
set search_path = ''
as $$
declare
  v_local timestamp;
begin
  if p_text !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ]([01][0-9]|2[0-3]):[0-5][0-9](:00)?$' then
    perform private.refuse(format(
      '%s must be a clinic-local date and time like 2026-12-01T10:30, without a time zone', p_arg));
  end if;
  begin
    v_local := replace(p_text, 'T', ' ')::timestamp;
  exception
    when datetime_field_overflow or invalid_datetime_format then
      perform private.refuse(format('%s is not a real date', p_arg));
  end;
  select t.instant, t.ambiguous into instant, ambiguous
  from private.local_to_instant(v_local, p_zone) as t;
  if instant is null then
    perform private.refuse(format('%s does not exist in %s: clocks go forward',
                                  to_char(v_local, 'YYYY-MM-DD HH24:MI'), private.zone_place(p_zone)));
  end if;
end
$$;
revoke all on function private.parse_local_start(p_text text, p_zone text, p_arg text, OUT instant timestamp with time zone, OUT ambiguous boolean) from public;
grant execute on function private.parse_local_start(p_text text, p_zone text, p_arg text, OUT instant timestamp with time zone, OUT ambiguous boolean) to vapi_clinic;
