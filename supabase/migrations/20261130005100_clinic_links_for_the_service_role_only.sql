-- The clinic-link functions of 20261130005000 are for the daemon (the service role) only. Revoking them from
-- PUBLIC left the default privileges Supabase gives the API roles on new functions in public (projects from
-- before 30 May 2026): anon and authenticated could call them (they would then fail on the table, which they
-- cannot read, but an API role has no business running them at all).

revoke execute on function public.issue_clinic_link(uuid, text, interval) from anon, authenticated;
revoke execute on function public.clinic_links(uuid) from anon, authenticated;
revoke execute on function public.revoke_clinic_link(uuid) from anon, authenticated;
revoke execute on function public.open_clinic_link(text, text) from anon, authenticated;
revoke execute on function public.begin_connect_consent(text, text, text) from anon, authenticated;
revoke execute on function public.connect_consent(text) from anon, authenticated;
revoke execute on function public.complete_connect_consent(text, text, text, text[], text, timestamptz, timestamptz)
  from anon, authenticated;
revoke execute on function public.clinic_status_page(text) from anon, authenticated;
revoke execute on function public.reconnect_link(text) from anon, authenticated;
revoke execute on function public.connect_readiness() from anon, authenticated;
revoke execute on function private.clinic_link_state(public.clinic_links) from anon, authenticated;
revoke execute on function private.clinic_link_hash(text) from anon, authenticated;
