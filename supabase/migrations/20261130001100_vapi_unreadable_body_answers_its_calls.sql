-- A body that is valid JSON but cannot become jsonb (a number beyond numeric's range, such as
-- 1e400000) still gets an answer for every call id in it, read with the `json` operators, which
-- leave numbers as text. Until now it was answered `{"results": [], "error": ...}`.

-- The calls of a message (or of a body that is no Vapi message) read without jsonb, each with
-- p_message as its error: what vapi_calls_found() and vapi_refuse_message() do for jsonb.
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

revoke execute on function private.vapi_refuse_unreadable(json, text) from public;
grant execute on function private.vapi_refuse_unreadable(json, text) to vapi_clinic;

-- As in the vapi_answers_every_call migration, and: a body jsonb cannot hold answers its calls.
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

-- Vapi calls with the anon key; nobody else needs this SECURITY DEFINER function.
revoke execute on function public.vapi_tool_call(json) from public, authenticated, service_role;
grant execute on function public.vapi_tool_call(json) to anon;
