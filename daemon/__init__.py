"""Clinic calendar sync: Vapi bookings in Supabase, pushed to each clinic's Google Calendar."""
