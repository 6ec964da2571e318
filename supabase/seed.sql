-- Local development data for `supabase db reset` (never run against production).
-- A demo clinic with weekday hours and two services; issue its key yourself:
--   select public.issue_clinic_key('00000000-0000-4000-8000-00000000c11c', 'local');

insert into public.clinics (id, name, time_zone, calendar_id)
values ('00000000-0000-4000-8000-00000000c11c', 'Riverside Clinic (local)', 'Europe/London', 'primary')
on conflict (id) do nothing;

insert into public.clinic_opening_hours (clinic_id, weekday, opens, closes)
select '00000000-0000-4000-8000-00000000c11c', weekday, '09:00', '17:00'
from generate_series(1, 5) as weekday
on conflict do nothing;

insert into public.clinic_services (clinic_id, name, duration_minutes, is_default)
values ('00000000-0000-4000-8000-00000000c11c', 'Check-up', 30, true),
       ('00000000-0000-4000-8000-00000000c11c', 'Consultation', 60, false)
on conflict do nothing;
