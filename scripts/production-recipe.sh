#!/bin/sh
# pgtenant's production recipe (README "Security model"), in role mode: the
# README shows this file as it is, and TestRecipeAsWritten runs it on a
# fresh cluster. Run it with the libpq variables (PGHOST, PGPORT, PGUSER)
# naming a superuser of the server, once per database.
set -eu

# What you choose: the application's database, the tenants, two passwords
# (URL-safe characters) and the secret every tenant role's password derives
# from (at least 16 bytes; `openssl rand -base64 32`). Keep them like any
# password: whoever has the role secret can log in as every tenant.
APP_DB="${APP_DB:-app}"
TENANTS="${TENANTS:-acme globex}"
ADMIN_PASSWORD="${ADMIN_PASSWORD:?choose a password for pgtenant_admin}"
POOL_PASSWORD="${POOL_PASSWORD:?choose a password for pgtenant_pool}"
PGTENANT_ROLE_SECRET="${PGTENANT_ROLE_SECRET:?choose the role secret}"
DB_HOST="${PGHOST:-localhost}"
DB_PORT="${PGPORT:-5432}"
export PGTENANT_ROLE_SECRET

# 1. As a superuser, once: the admin role, which owns the registry and
# creates tenants and their roles; the pool role, which serve checks at
# start and which can do nothing a tenant may not; the group every tenant
# role joins.
psql -X -q -v ON_ERROR_STOP=1 -d "$APP_DB" -v db="$APP_DB" \
  -v admin_pw="$ADMIN_PASSWORD" -v pool_pw="$POOL_PASSWORD" <<'SQL'
CREATE ROLE pgtenant_admin LOGIN CREATEROLE PASSWORD :'admin_pw';
CREATE ROLE pgtenant_pool LOGIN PASSWORD :'pool_pw'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
CREATE ROLE pgtenant_tenants NOLOGIN;
GRANT CONNECT ON DATABASE :"db" TO pgtenant_tenants;
GRANT USAGE ON SCHEMA public TO pgtenant_tenants;
GRANT CREATE ON DATABASE :"db" TO pgtenant_admin;
CREATE SCHEMA pgtenant AUTHORIZATION pgtenant_admin;
SQL

# 2. As the admin: the registry, and each tenant with a schema and a LOGIN
# role (pgt_<tenant>) that owns it and nothing else.
export PGTENANT_REGISTRY="postgres://pgtenant_admin:$ADMIN_PASSWORD@$DB_HOST:$DB_PORT/$APP_DB"
for tenant in $TENANTS; do
  pgtenant tenant create "$tenant" --isolation role
done

# 3. Serve: each tenant's backends log in as its role, the registry is read
# as the admin, and the pool role is what serve checks. DSNs go through the
# environment, not the command line, so ps does not show the passwords.
export PGTENANT_BACKEND="postgres://pgtenant_pool:$POOL_PASSWORD@$DB_HOST:$DB_PORT/$APP_DB"
exec pgtenant serve --isolation role --listen "${LISTEN:-0.0.0.0:6432}" --pool-size 20
