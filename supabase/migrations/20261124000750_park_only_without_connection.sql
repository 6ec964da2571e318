-- A push that found the clinic's grant dead parks its appointment until the clinic reconnects,
-- and reconnecting unparks the clinic's parked rows. A reconnect that landed while that push was
-- failing found the row still in flight, so the row was parked afterwards with nothing left to
-- unpark it. Now parking checks the connection under a share lock (a reconnect waits for it, and
-- its unparking then sees the parked row): with an active connection the row goes back to
-- pending at once instead.
create or replace function public.end_appointment_attempt(
  p_appointment_id uuid, p_owner text, p_state text, p_error text, p_delay_seconds double precision default 0
)
returns text
language plpgsql volatile
set search_path = ''
as $$
declare
  v_target text := p_state;
  v_state text;
begin
  perform private.require(p_state in ('pending', 'failed', 'parked'), 'state must be pending, failed or parked');
  perform private.require(p_delay_seconds between 0 and 86400, 'delay must be 0 to 86400 seconds');
  if p_state = 'parked' then
    perform from public.calendar_connections c
      join public.appointments a on a.clinic_id = c.clinic_id
     where a.id = p_appointment_id and c.status = 'active'
       for share of c;
    if found then
      v_target := 'pending';
    end if;
  end if;
  update public.appointments
     set sync_state = v_target,
         next_attempt_at = case when v_target = 'pending' then now() + make_interval(secs => p_delay_seconds) end,
         last_sync_error = left(p_error, 500), lease_owner = null, lease_expires_at = null
   where id = p_appointment_id and sync_state = 'in_flight' and lease_owner = p_owner
  returning sync_state into v_state;
  return coalesce(v_state, 'lease_lost');
end
$$;
