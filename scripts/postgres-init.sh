#!/usr/bin/env bash
# PostgreSQL first-start script (mounted in /docker-entrypoint-initdb.d): creates Airflow's metadata
# database and the tfp warehouse with their roles, from scripts/postgres-init.sql. The passwords are
# read from the secret files by psql itself (\set with backquotes), so none is on a command line.
set -euo pipefail
secrets=${TFP_SECRETS_DIR:-/run/secrets}
sql=${TFP_INIT_SQL:-/opt/tfp-init/postgres-init.sql}
for name in airflow_db_password tfp_owner_password tfp_app_password; do
    [ -s "$secrets/$name" ] || { echo "postgres-init: the secret $name is missing or empty" >&2; false; }
done
{
    printf '\\set airflow_password `cat %s/airflow_db_password`\n' "$secrets"
    printf '\\set owner_password `cat %s/tfp_owner_password`\n' "$secrets"
    printf '\\set app_password `cat %s/tfp_app_password`\n' "$secrets"
    cat "$sql"
} | psql -X -q -v ON_ERROR_STOP=1 \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
    -v airflow_db="${TFP_PG_AIRFLOW_DB:-airflow}" -v tfp_db="${TFP_PG_TFP_DB:-tfp}" \
    -v airflow_role="${TFP_PG_AIRFLOW_ROLE:-airflow}" -v owner_role="${TFP_PG_OWNER_ROLE:-tfp_owner}" \
    -v app_role="${TFP_PG_APP_ROLE:-tfp_app}"
