-- Convention from now on: a function that changes is replaced whole (`create or replace`, its
-- complete definition) in one migration, with its grants restated right beside it, so that one
-- file shows everything about it. supabase/schema.sql (`make schema`) shows every object as it
-- stands after all migrations.
--
-- One completion rule. complete_appointment_sync (calendar_sync) and complete_appointment_syncs
-- (claim_performance) each carried their own copy of the UPDATE that records a confirmed push,
-- so a change to one could silently leave the other behind. The single form now calls the batch
-- form with a one-item array: same signature, same answer ('synced', 'pending' or 'lease_lost'),
-- and the rule lives only in complete_appointment_syncs.

-- Google confirmed revision p_revision. If the appointment changed meanwhile it goes back to
-- pending (the event id is kept, so the next push updates the event).
create or replace function public.complete_appointment_sync(
  p_appointment_id uuid, p_owner text, p_revision integer, p_event_id text, p_event_link text default null
)
returns text
language sql volatile
set search_path = ''
as $$
  select c.state
  from public.complete_appointment_syncs(jsonb_build_array(jsonb_build_object(
    'appointment_id', p_appointment_id, 'owner', p_owner, 'revision', p_revision,
    'event_id', p_event_id, 'event_link', p_event_link))) c
$$;

revoke execute on function public.complete_appointment_sync(uuid, text, integer, text, text)
  from public, anon, authenticated;
grant execute on function public.complete_appointment_sync(uuid, text, integer, text, text) to service_role;
