-- Makes a plain PostgreSQL look like a Supabase database, for tests and local runs only.
-- Never apply this to a real Supabase project: it already has all of this.
--
-- Runs as a superuser. Roles are cluster-wide, so they are created only when missing;
-- everything else is per database.

do $$
begin
  -- `migrator` plays Supabase's `postgres` role: it owns the schema, is not a superuser,
  -- may create roles, and bypasses RLS (as Supabase's postgres does).
  if not exists (select from pg_roles where rolname = 'migrator') then
    create role migrator login createrole createdb bypassrls;
  end if;
  if not exists (select from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  if not exists (select from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;
  end if;
end
$$;

grant anon, authenticated, service_role to authenticator;
grant anon, authenticated, service_role to migrator;

-- Supabase's per-role timeouts: PostgreSQL applies authenticator's at login, PostgREST applies the
-- API role's per request (transaction-locally), so a request as anon is cancelled after 3 s (57014).
alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';
alter role authenticator set statement_timeout = '8s';
alter role authenticator set lock_timeout = '8s';

do $$
begin
  execute format('grant create, connect on database %I to migrator', current_database());
end
$$;

create schema if not exists extensions authorization migrator;
grant usage on schema extensions to anon, authenticated, service_role;

alter schema public owner to migrator;
grant usage on schema public to anon, authenticated, service_role;

-- Supabase grants everything in `public` to the API roles by default; RLS and explicit
-- revokes are what protect tables there. Imitate it so migrations are tested against it.
alter default privileges for role migrator in schema public
  grant all on tables to anon, authenticated, service_role;
alter default privileges for role migrator in schema public
  grant all on sequences to anon, authenticated, service_role;
alter default privileges for role migrator in schema public
  grant all on functions to anon, authenticated, service_role;

-- The parts of Supabase Auth that policies use.
create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;

create table if not exists auth.users (
  id uuid primary key,
  email text
);
grant references on auth.users to migrator;

create or replace function auth.jwt() returns jsonb
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;

create or replace function auth.uid() returns uuid
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
  )::uuid
$$;

create or replace function auth.role() returns text
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'
  )::text
$$;

grant execute on all functions in schema auth to anon, authenticated, service_role, migrator;

do $$
begin
  if not exists (select from pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
end
$$;
alter publication supabase_realtime owner to migrator;
