"""The values every layer shares, grouped by concern as the SQL is (supabase/schemas): each SQL function's
reply as a frozen pydantic model (`daemon.domain.reply`), what the daemon sends the functions, and the names
of outcomes.

The bottom of the package: nothing here imports the rest of the daemon.
"""
