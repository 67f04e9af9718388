#!/bin/sh
# First start of the compose PostgreSQL: the catalog's role and database beside Dagster's.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v password="$REDUCTION_PG_PASSWORD" <<'SQL'
CREATE ROLE reduction LOGIN PASSWORD :'password';
CREATE DATABASE reduction OWNER reduction;
SQL
