"""Local stand-ins for the services the product talks to (PostgreSQL, Supabase, Google).

Shared by the test suite and the local demo; never part of the `daemon` package.
"""
