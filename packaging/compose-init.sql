-- Run once by the postgres image on an empty data directory
-- (docker-entrypoint-initdb.d), as the superuser, in database app: the roles
-- of README "Production setup", with the demo's passwords. Change them
-- (here and in docker-compose.yml) before anything but a try-out.
-- pgtenant_admin owns the registry and creates tenants; pgtenant_pool is
-- what tenant traffic runs as, and can do nothing a tenant may not.
CREATE ROLE pgtenant_admin LOGIN CREATEROLE PASSWORD 'admin-change-me';
CREATE ROLE pgtenant_pool LOGIN PASSWORD 'pool-change-me'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
GRANT CREATE ON DATABASE app TO pgtenant_admin;
CREATE SCHEMA pgtenant AUTHORIZATION pgtenant_admin;
