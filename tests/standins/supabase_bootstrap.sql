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

-- Supabase Realtime's objects in the project database, as Realtime's own tenant migrations leave
-- them (supabase/realtime, lib/realtime/tenants/repo/migrations): what Broadcast from Database and
-- Realtime Authorization use. `realtime.send` stores a message in `realtime.messages`; Realtime
-- streams that table's inserts and broadcasts each row to its topic; a private channel's join is
-- allowed by the RLS policies on `realtime.messages` (evaluated as the joining role, with
-- `realtime.topic()` set to the channel's topic). Differences: Realtime's janitor creates a partition
-- per day (and drops old ones); here one DEFAULT partition holds every message. Realtime's
-- postgres_changes objects (realtime.subscription, apply_rls, ...) are not here: the Realtime
-- stand-in does that work itself.
do $$
begin
  if not exists (select from pg_roles where rolname = 'supabase_realtime_admin') then
    create role supabase_realtime_admin nologin noinherit noreplication;
  end if;
end
$$;
-- Before Realtime restricted its schema, `postgres` was a member of supabase_realtime_admin; hosted
-- projects now let `postgres` create policies on realtime.messages through supautils' policy_grants.
-- Membership is how `migrator` (our `postgres`) gets the same power here.
grant supabase_realtime_admin to migrator;

create schema if not exists realtime;
grant usage on schema realtime to migrator, anon, authenticated, service_role;

create table if not exists realtime.messages (
  topic text not null,
  extension text not null,
  payload jsonb,
  event text,
  private boolean default false,
  updated_at timestamp without time zone not null default now(),
  inserted_at timestamp without time zone not null default now(),
  id uuid not null default gen_random_uuid(),
  binary_payload bytea,
  constraint messages_payload_exclusive check (payload is null or binary_payload is null),
  primary key (id, inserted_at)
) partition by range (inserted_at);
create table if not exists realtime.messages_default partition of realtime.messages default;
alter table realtime.messages enable row level security;
alter table realtime.messages owner to supabase_realtime_admin;
alter table realtime.messages_default owner to supabase_realtime_admin;
grant select, insert, update on realtime.messages to migrator, anon, authenticated, service_role;

create or replace function realtime.topic() returns text
language sql stable
as $$
  select nullif(current_setting('realtime.topic', true), '')::text;
$$;
alter function realtime.topic() owner to supabase_realtime_admin;

create or replace function realtime.send(payload jsonb, event text, topic text, private boolean default true)
returns void
language plpgsql
as $$
declare
  generated_id uuid;
  final_payload jsonb;
begin
  begin
    generated_id := gen_random_uuid();

    -- Check if payload has an 'id' key, if not, add the generated UUID
    if payload ? 'id' then
      final_payload := payload;
    else
      final_payload := jsonb_set(payload, '{id}', to_jsonb(generated_id));
    end if;

    -- Set the topic configuration
    execute format('SET LOCAL realtime.topic TO %L', topic);

    insert into realtime.messages (id, payload, event, topic, private, extension)
    values (generated_id, final_payload, event, topic, private, 'broadcast');
  exception
    when others then
      raise warning 'WarnSendingBroadcastMessage: %', sqlerrm;
  end;
end;
$$;
alter function realtime.send(jsonb, text, text, boolean) owner to supabase_realtime_admin;
grant execute on all functions in schema realtime to migrator, anon, authenticated, service_role;
