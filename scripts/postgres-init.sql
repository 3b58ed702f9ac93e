-- The stack's databases and roles, least privilege (run once, as the PostgreSQL superuser, by
-- scripts/postgres-init.sh; psql variables name the databases and roles and hold the passwords).
--
--   airflow_role  owns airflow_db (Airflow's metadata) and nothing else
--   owner_role    owns tfp_db and its schema: the only role that may create, alter or drop tables
--                 (the init service creates the schema as this role; later `tfp db upgrade`)
--   app_role      what the tasks connect as: SELECT/INSERT/UPDATE/DELETE on the tables, the
--                 sequences behind them, and temporary tables (the criteria and current-view
--                 stages build theirs); no CREATE, ALTER, DROP or TRUNCATE. From PostgreSQL 17 also
--                 MAINTAIN (VACUUM, ANALYZE; no DDL): retention's VACUUM, which makes deleted rows
--                 unrecoverable, and the criteria's ANALYZE. Before 17 only the owner can do either,
--                 and PostgreSQL skips them for anyone else with a mere warning.
--                 The programme-end purge drops and recreates tables and runs VACUUM FULL on
--                 pg_statistic: it must run as owner_role.
\set ON_ERROR_STOP on
CREATE ROLE :"airflow_role" LOGIN PASSWORD :'airflow_password';
CREATE ROLE :"owner_role" LOGIN PASSWORD :'owner_password';
CREATE ROLE :"app_role" LOGIN PASSWORD :'app_password';
CREATE DATABASE :"airflow_db" OWNER :"airflow_role";
CREATE DATABASE :"tfp_db" OWNER :"owner_role";
-- no role but the owners (and the app role, below) may even connect
REVOKE ALL ON DATABASE :"airflow_db" FROM PUBLIC;
REVOKE ALL ON DATABASE :"tfp_db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"tfp_db" TO :"app_role";

\connect :"tfp_db"
REVOKE ALL ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO :"owner_role";
GRANT USAGE ON SCHEMA public TO :"app_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner_role" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner_role" IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO :"app_role";
SELECT current_setting('server_version_num')::int >= 170000 AS has_maintain \gset
\if :has_maintain
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner_role" IN SCHEMA public GRANT MAINTAIN ON TABLES TO :"app_role";
\endif
