-- Runs once, when the PostgreSQL data volume is first initialised (docker-entrypoint-initdb.d).
-- The image creates the app database (POSTGRES_DB=study); Dagster's storage gets its own
-- database because both sides keep their Alembic revision in a table named alembic_version.
CREATE DATABASE dagster;
