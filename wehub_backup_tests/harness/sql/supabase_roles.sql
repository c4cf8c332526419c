-- Cluster-wide roles of a Supabase project. Run once per cluster by the bootstrap superuser supabase_admin.
CREATE ROLE anon NOLOGIN NOINHERIT;
CREATE ROLE authenticated NOLOGIN NOINHERIT;
CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
ALTER ROLE anon SET statement_timeout = '3s';
ALTER ROLE authenticated SET statement_timeout = '8s';

CREATE ROLE authenticator LOGIN NOINHERIT;
GRANT anon, authenticated, service_role TO authenticator;

CREATE ROLE postgres NOSUPERUSER CREATEDB CREATEROLE LOGIN REPLICATION BYPASSRLS;
GRANT anon, authenticated, service_role, pg_signal_backend, pg_monitor TO postgres WITH ADMIN OPTION;
ALTER ROLE postgres SET search_path = "$user", public, extensions;
ALTER ROLE postgres SET statement_timeout = '2min';
GRANT SET ON PARAMETER session_replication_role TO postgres;

CREATE ROLE supabase_auth_admin NOINHERIT CREATEROLE LOGIN;
CREATE ROLE supabase_storage_admin NOINHERIT CREATEROLE LOGIN;
ALTER ROLE supabase_storage_admin SET search_path = storage, extensions;
CREATE ROLE supabase_realtime_admin NOINHERIT NOLOGIN;
CREATE ROLE supabase_replication_admin LOGIN REPLICATION;
CREATE ROLE supabase_read_only_user LOGIN BYPASSRLS;
GRANT pg_read_all_data TO supabase_read_only_user;
CREATE ROLE dashboard_user NOSUPERUSER CREATEDB CREATEROLE REPLICATION;
CREATE ROLE pgbouncer LOGIN;
CREATE ROLE supabase_functions_admin NOINHERIT CREATEROLE LOGIN;
GRANT authenticator TO supabase_storage_admin;
