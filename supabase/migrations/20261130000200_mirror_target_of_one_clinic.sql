-- The busy mirror reads one clinic's calendar after the sync loop pushed to it. It used to list every
-- active connection's target and pick one out: a cost that grew with the number of clinics on each
-- push. calendar_mirror_targets now takes an optional clinic: null lists them all, as before.
--
-- Replaced whole (a new argument is a new signature, so the old one is dropped), grants beside it.

drop function public.calendar_mirror_targets();

create function public.calendar_mirror_targets(p_clinic_id uuid default null)
returns table (clinic_id uuid, calendar_id text, time_zone text, sync_token text, last_synced_at timestamptz)
language sql stable
set search_path = ''
as $$
  select c.id, c.calendar_id, c.time_zone, m.sync_token, m.last_synced_at
  from public.calendar_connections k
  join public.clinics c on c.id = k.clinic_id
  left join public.calendar_mirrors m on m.clinic_id = c.id
  where k.status = 'active' and (p_clinic_id is null or k.clinic_id = p_clinic_id)
  order by m.last_synced_at nulls first
$$;

revoke execute on function public.calendar_mirror_targets(uuid) from public, anon, authenticated;
grant execute on function public.calendar_mirror_targets(uuid) to service_role;
