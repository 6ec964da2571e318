-- The Vapi entry point answers every call, in time, whatever the body and however crowded the diary.
--
-- - One clinic's bookings, moves and cancellations take turns: each takes a transaction-scoped
--   advisory lock on the clinic's diary before it checks anything, then looks for a clash itself.
--   Two callers racing for one slot no longer meet inside the exclusion constraint (where two
--   inserts could deadlock, 40P01, and the loser heard "Something went wrong"): the second one
--   waits its turn and hears the nearest free times at once.
-- - Every wait is bounded by the call's own budget: on Supabase `anon` runs with
--   `statement_timeout = 3s`, and a statement cancelled by it (57014) cannot be caught, so
--   PostgREST would answer HTTP 500 and Vapi would drop the result. vapi_tool_call gives itself
--   at most 2 s (60% of the role's statement_timeout when that is shorter) for waiting on locks:
--   each wait runs with `lock_timeout` set to what is left, and a call that cannot get its turn
--   in time is answered "The diary is busy ... please try again" (HTTP 200, nothing changed).
--   (A statement_timeout set inside a running statement does not shorten it, so the budget is
--   kept with lock_timeout, which bounds the only waits these calls make.)
-- - The body arrives as one unnamed `json` parameter, not `jsonb`: a `\u0000` anywhere in it
--   (Vapi forwards transcripts) failed the jsonb conversion before any of our code ran (22P05,
--   HTTP 400). Now a call containing a NUL is refused on its own; NULs elsewhere (a transcript)
--   change nothing; an id containing one is echoed exactly.
-- - `toolCalls` (seen in real traffic) is read like `toolCallList`; whole-message problems (no
--   Vapi message, no list, too many calls) answer every call id that can be found.
-- - A start time off the clinic's slot grid (14:05 on a 15-minute grid) is refused with the
--   nearest free times, for bookings and reschedules.
-- - Only `anon` may execute vapi_tool_call (Supabase's advisor flags a SECURITY DEFINER function
--   that `authenticated` can execute).
-- - purge_vapi_tool_calls() forgets tool-call answers (which carry patient details) after a
--   retention period; the daemon calls it on a schedule.

------------------------------------------------------------------------------------------
-- Waiting within the call's budget
------------------------------------------------------------------------------------------

create function private.busy_message() returns text
language sql immutable
set search_path = ''
as $$
  select 'The diary is busy right now and nothing was changed. Please try again in a moment'
$$;

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

-- The lock_timeout for the next wait: what is left of the budget vapi_tool_call set
-- (`vapi.deadline`); the current lock_timeout outside it. Refuses (busy) when nothing is left.
-- Callers apply it themselves, `perform set_config('lock_timeout', private.wait_left(), true)`,
-- as a function's own setting changes end with it.
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

-- One clinic's diary, for the rest of the transaction: bookings, moves and cancellations take
-- turns (two-key advisory lock: 1147 is this lock's class, the second key the clinic).
create function private.lock_diary(p_clinic_id uuid) returns void
language plpgsql volatile
set search_path = ''
as $$
begin
  perform set_config('lock_timeout', private.wait_left(), true);
  perform pg_catalog.pg_advisory_xact_lock(1147, pg_catalog.hashtext(p_clinic_id::text));
end
$$;

------------------------------------------------------------------------------------------
-- Clashes and the slot grid, checked while holding the diary
------------------------------------------------------------------------------------------

create function private.nearest_free_times(
  p_clinic public.clinics, p_wanted timestamptz, p_minutes integer, p_ignore uuid default null
) returns text
language sql stable
set search_path = ''
as $$
  select coalesce('Nearest free times that day: ' || string_agg(private.local_clock(s, p_clinic.time_zone), ', ' order by s),
                  'There are no other free times that day')
  from (select s
        from private.free_slots(p_clinic, (p_wanted at time zone p_clinic.time_zone)::date, p_minutes, p_ignore) as s
        order by abs(extract(epoch from s - p_wanted)) limit 6) as nearest
$$;

-- As in the vapi_tool_call migration, the nearest free times from nearest_free_times().
create or replace function private.slot_taken(
  p_clinic public.clinics, p_wanted timestamptz, p_minutes integer, p_ignore uuid default null
) returns void
language plpgsql stable
set search_path = ''
as $$
begin
  perform private.refuse(format('%s on %s is not available. %s',
    private.local_clock(p_wanted, p_clinic.time_zone), private.local_day(p_wanted, p_clinic.time_zone),
    private.nearest_free_times(p_clinic, p_wanted, p_minutes, p_ignore)));
end
$$;

-- Refuses a window that overlaps another live appointment (other than p_ignore, the one being
-- moved) with the nearest free times. Holding the diary, this sees every booking that can clash.
create function private.refuse_if_taken(
  p_clinic public.clinics, p_starts timestamptz, p_ends timestamptz, p_ignore uuid default null
) returns void
language plpgsql stable
set search_path = ''
as $$
begin
  if exists (select from public.appointments a
             where a.clinic_id = p_clinic.id
               and a.status = 'booked'
               and a.id is distinct from p_ignore
               and tstzrange(a.starts_at, a.ends_at, '[)') && tstzrange(p_starts, p_ends, '[)')) then
    perform private.slot_taken(p_clinic, p_starts, (extract(epoch from p_ends - p_starts) / 60)::integer, p_ignore);
  end if;
end
$$;

-- Start times are the clinic's slot grid: every slot_minutes from each opening time, as
-- check_availability offers them. Anything else is refused with the nearest free times.
create function private.refuse_off_grid(
  p_clinic public.clinics, p_starts timestamptz, p_minutes integer, p_ignore uuid default null
) returns void
language plpgsql stable
set search_path = ''
as $$
declare
  v_local timestamp := p_starts at time zone p_clinic.time_zone;
begin
  if not exists (
    select from public.clinic_opening_hours h
    where h.clinic_id = p_clinic.id
      and h.weekday = extract(isodow from v_local)
      and v_local >= v_local::date + h.opens and v_local < v_local::date + h.closes
      and extract(epoch from v_local - (v_local::date + h.opens))::bigint % (p_clinic.slot_minutes * 60) = 0) then
    perform private.refuse(format('%s on %s is not a start time the clinic offers (appointments start every %s minutes). %s',
      private.local_clock(p_starts, p_clinic.time_zone), private.local_day(p_starts, p_clinic.time_zone),
      p_clinic.slot_minutes, private.nearest_free_times(p_clinic, p_starts, p_minutes, p_ignore)));
  end if;
end
$$;

------------------------------------------------------------------------------------------
-- The tools that change the diary: each holds it before checking
------------------------------------------------------------------------------------------

create or replace function private.tool_book_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb)
returns text
language plpgsql volatile
set search_path = ''
as $$
declare
  v_start_text text;
  v_name text;
  v_phone text;
  v_notes text;
  v_service public.clinic_services;
  v_start record;
  v_ends timestamptz;
  v_reference text;
begin
  perform private.check_arg_names(p_args, array['start', 'patient_name', 'patient_phone', 'service', 'notes']);
  v_start_text := private.required_text_arg(p_args, 'start', 40);
  v_name := private.required_text_arg(p_args, 'patient_name', 100);
  v_phone := private.patient_phone(p_clinic, p_args, p_ctx);
  if v_phone is null then
    perform private.refuse('patient_phone is required: the caller''s number is not available, so ask for one');
  end if;
  v_notes := private.text_arg(p_args, 'notes', 500, true);
  v_service := private.pick_service(p_clinic.id, private.text_arg(p_args, 'service', 80));
  v_start := private.parse_local_start(v_start_text, p_clinic.time_zone, 'start');
  v_ends := v_start.instant + make_interval(mins => v_service.duration_minutes);
  perform private.lock_diary(p_clinic.id);
  perform set_config('lock_timeout', private.wait_left(), true);
  perform private.check_bookable(p_clinic, v_start.instant, v_ends);
  perform private.refuse_off_grid(p_clinic, v_start.instant, v_service.duration_minutes);
  perform private.refuse_if_taken(p_clinic, v_start.instant, v_ends);
  v_reference := private.new_reference(p_clinic.id);
  begin
    insert into public.appointments (
      clinic_id, reference, patient, service, notes, starts_at, ends_at, source,
      vapi_call_id, vapi_tool_call_id)
    values (
      p_clinic.id, v_reference, jsonb_build_object('name', v_name, 'phone', v_phone),
      v_service.name, v_notes, v_start.instant, v_ends, 'vapi',
      p_ctx ->> 'call_id', p_ctx ->> 'tool_call_id');
  exception
    when exclusion_violation then  -- a writer that does not hold the diary (staff, the service role)
      perform private.slot_taken(p_clinic, v_start.instant, v_service.duration_minutes);
  end;
  return format('Booked: %s on %s at %s%s for %s. Reference %s.',
                v_service.name, private.local_day(v_start.instant, p_clinic.time_zone),
                private.local_clock(v_start.instant, p_clinic.time_zone),
                case when v_start.ambiguous
                     then ' (the first of the two times the clock shows that hour, before the clocks go back)'
                     else '' end,
                v_name, v_reference);
end
$$;

create or replace function private.tool_cancel_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb)
returns text
language plpgsql volatile
set search_path = ''
as $$
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
  return format('Cancelled: %s on %s at %s (reference %s).',
                v_appointment.service, private.local_day(v_appointment.starts_at, p_clinic.time_zone),
                private.local_clock(v_appointment.starts_at, p_clinic.time_zone), v_appointment.reference);
end
$$;

create or replace function private.tool_reschedule_appointment(p_clinic public.clinics, p_args jsonb, p_ctx jsonb)
returns text
language plpgsql volatile
set search_path = ''
as $$
declare
  v_new_start_text text;
  v_appointment public.appointments;
  v_new record;
  v_length interval;
  v_minutes integer;
begin
  perform private.check_arg_names(p_args, array['reference', 'patient_phone', 'new_start']);
  v_new_start_text := private.required_text_arg(p_args, 'new_start', 40);
  perform private.lock_diary(p_clinic.id);
  perform set_config('lock_timeout', private.wait_left(), true);
  v_appointment := private.find_appointment(p_clinic, p_args, p_ctx, null);
  v_new := private.parse_local_start(v_new_start_text, p_clinic.time_zone, 'new_start');
  if v_new.instant = v_appointment.starts_at then
    perform private.refuse(format('The booking %s is already at that time', v_appointment.reference));
  end if;
  v_length := v_appointment.ends_at - v_appointment.starts_at;
  v_minutes := (extract(epoch from v_length) / 60)::integer;
  perform private.check_bookable(p_clinic, v_new.instant, v_new.instant + v_length);
  perform private.refuse_off_grid(p_clinic, v_new.instant, v_minutes, v_appointment.id);
  perform private.refuse_if_taken(p_clinic, v_new.instant, v_new.instant + v_length, v_appointment.id);
  begin
    update public.appointments
       set starts_at = v_new.instant, ends_at = v_new.instant + v_length
     where id = v_appointment.id;
  exception
    when exclusion_violation then  -- a writer that does not hold the diary (staff, the service role)
      perform private.slot_taken(p_clinic, v_new.instant, v_minutes, v_appointment.id);
  end;
  return format('Moved: %s from %s at %s to %s at %s%s (reference %s).',
                v_appointment.service,
                private.local_day(v_appointment.starts_at, p_clinic.time_zone),
                private.local_clock(v_appointment.starts_at, p_clinic.time_zone),
                private.local_day(v_new.instant, p_clinic.time_zone),
                private.local_clock(v_new.instant, p_clinic.time_zone),
                case when v_new.ambiguous
                     then ' (the first of the two times the clock shows that hour, before the clocks go back)'
                     else '' end,
                v_appointment.reference);
end
$$;

------------------------------------------------------------------------------------------
-- Who is calling: the key's last use is bookkeeping, never a wait
------------------------------------------------------------------------------------------

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

------------------------------------------------------------------------------------------
-- The envelope
------------------------------------------------------------------------------------------

-- As in the vapi_tool_call migration, and `toolCalls` (real payloads carry it instead of
-- `toolCallList`). Null when there is no list at all.
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

-- A whole-message problem: every call found gets it as its error, and the answer says it once more.
create function private.vapi_refuse_message(p_calls jsonb, p_message text) returns jsonb
language sql immutable
set search_path = ''
as $$
  select private.vapi_refuse_all(p_calls, p_message) || jsonb_build_object('error', p_message)
$$;

-- As in the vapi_tool_call migration, and: a call containing a NUL (p_ctx.nul_marker stands in
-- for it) is refused whole; a wait past the budget (lock_timeout) or a deadlock is "busy".
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

-- The message, once its body could be read: what vapi_tool_call(jsonb) did, and: whole-message
-- problems answer every call found; calls not started by the deadline are "busy".
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

-- POST /rest/v1/rpc/vapi_tool_call: the whole Vapi message as one unnamed `json` parameter
-- (PostgREST passes the body to it as it passed it to the jsonb one). `json` keeps the text as
-- sent, so a `\u0000` escape reaches this code: each one is swapped for a marker unique to this
-- request (then the body is jsonb as before), a call containing one is refused on its own, and
-- the marker turns back into `\u0000` in the answer (an id is echoed exactly).
create function public.vapi_tool_call(json) returns json
language plpgsql volatile security definer
set search_path = ''
as $$
declare
  v_text text := $1::text;
  v_marker text;
  v_body jsonb;
  v_answer jsonb;
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
      return json_build_object('results', json_build_array(),
        'error', 'The body could not be read: ' || regexp_replace(sqlerrm, '[\r\n]+', ' ', 'g'));
  end;
  v_answer := private.vapi_answer(v_body, v_marker);
  if v_marker is null then
    return v_answer::json;
  end if;
  return replace(v_answer::text, v_marker, '\u0000')::json;
end
$$;

drop function public.vapi_tool_call(jsonb);

revoke execute on function
  private.busy_message(),
  private.vapi_wait_budget(),
  private.wait_left(),
  private.lock_diary(uuid),
  private.nearest_free_times(public.clinics, timestamptz, integer, uuid),
  private.refuse_if_taken(public.clinics, timestamptz, timestamptz, uuid),
  private.refuse_off_grid(public.clinics, timestamptz, integer, uuid),
  private.vapi_calls_found(jsonb),
  private.vapi_refuse_message(jsonb, text),
  private.vapi_answer(jsonb, text)
  from public;
grant execute on function
  private.busy_message(),
  private.vapi_wait_budget(),
  private.wait_left(),
  private.lock_diary(uuid),
  private.nearest_free_times(public.clinics, timestamptz, integer, uuid),
  private.refuse_if_taken(public.clinics, timestamptz, timestamptz, uuid),
  private.refuse_off_grid(public.clinics, timestamptz, integer, uuid),
  private.vapi_calls_found(jsonb),
  private.vapi_refuse_message(jsonb, text),
  private.vapi_answer(jsonb, text)
  to vapi_clinic;

-- The entry point runs as vapi_clinic; handing it over needs CREATE on public for a moment.
grant create on schema public to vapi_clinic;
alter function public.vapi_tool_call(json) owner to vapi_clinic;
revoke create on schema public from vapi_clinic;

-- Vapi calls with the anon key; nobody else needs this SECURITY DEFINER function.
revoke execute on function public.vapi_tool_call(json) from public, authenticated, service_role;
grant execute on function public.vapi_tool_call(json) to anon;

------------------------------------------------------------------------------------------
-- Retention: tool-call answers carry patient details
------------------------------------------------------------------------------------------

-- Deletes up to p_limit tool-call answers older than p_older_than (at least a day: Vapi may
-- still retry a younger call, and its first answer must be found); returns how many. The
-- daemon calls it until fewer than p_limit go, so no one statement runs long.
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

revoke execute on function public.purge_vapi_tool_calls(interval, integer) from public, anon, authenticated;
grant execute on function public.purge_vapi_tool_calls(interval, integer) to service_role;
