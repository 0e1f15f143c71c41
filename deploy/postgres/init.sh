#!/bin/sh
# PostgreSQL's first start in docker-compose.yml (/docker-entrypoint-initdb.d): one owner role,
# one runtime role and one schema per service, from the ONE provisioning file
# (deploy/postgres/provision.sql, mounted at /etc/platform/provision.sql), the same statements
# `cargo xtask` runs. Passwords come from compose secrets; nothing here repeats the SQL.
set -eu

sql=${PROVISION_SQL:-/etc/platform/provision.sql}
database=${POSTGRES_DB:-platform}
for service in auth reports analytics; do
  psql --no-psqlrc -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "$database" \
    -v service="$service" \
    -v role_prefix= \
    -v owner_password="$(cat "/run/secrets/${service}_owner_password")" \
    -v runtime_password="$(cat "/run/secrets/${service}_runtime_password")" \
    -f "$sql"
  echo "init.sh: roles ${service}_owner and ${service}, schema ${service}"
done
