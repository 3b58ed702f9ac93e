#!/usr/bin/env bash
# Generates the stack's secrets for docker-compose.yaml: one file per secret in secrets/ (mode 600,
# folder 700, git-ignored), each mounted by compose only into the services that need it. Also writes
# .env with AIRFLOW_UID alone (compose reads it for ${AIRFLOW_UID}; no secret is in it) and logs/
# (mode 700). Refuses to overwrite existing secrets: rotating one is a deliberate, per-secret act.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "${TFP_STACK_DIR:-$repo}"
[ -e secrets ] && { echo "secrets/ exists: remove it first if you really mean to rotate every secret"; exit 1; }
uid=${AIRFLOW_UID:-$(id -u)}
# The containers run as this uid and read the 600 secret files, so it must own them; never root.
[ "$uid" = 0 ] && { echo "run this as the unprivileged user that will run the stack (or set AIRFLOW_UID)"; exit 1; }
py=${PYTHON:-$repo/.venv/bin/python}   # tfp's venv: `tfp keys` makes the tfp keys
command -v openssl >/dev/null || { echo "openssl is needed (to hash the SFTP password)"; exit 1; }
rand() { "$py" -c "import secrets; print(secrets.token_urlsafe($1))"; }
umask 077
mkdir -m 700 secrets
mkdir -p -m 700 logs
put() { printf '%s\n' "$2" > "secrets/$1"; }

airflow_db=$(rand 24); redis=$(rand 24); sftp=$(rand 18)
put postgres_password "$(rand 24)"                     # the superuser: postgres only
put airflow_db_password "$airflow_db"                  # role airflow: postgres (init), as URLs below
put tfp_owner_password "$(rand 24)"                    # role tfp_owner: postgres (init), airflow-init
put tfp_app_password "$(rand 24)"                      # role tfp_app: postgres (init), the workers
put redis_password "$redis"
put AIRFLOW__DATABASE__SQL_ALCHEMY_CONN "postgresql+psycopg://airflow:${airflow_db}@postgres/airflow"
# psycopg 3 for the async engine too (asyncpg is not installed)
put AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC "postgresql+psycopg_async://airflow:${airflow_db}@postgres/airflow"
put AIRFLOW__CELERY__RESULT_BACKEND "db+postgresql+psycopg://airflow:${airflow_db}@postgres/airflow"
put AIRFLOW__CELERY__BROKER_URL "redis://:${redis}@redis:6379/0"
put AIRFLOW__CORE__FERNET_KEY "$("$py" -c "import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())")"
put AIRFLOW__API_AUTH__JWT_SECRET "$(rand 48)"
put AIRFLOW__API__SECRET_KEY "$(rand 32)"
put _AIRFLOW_WWW_USER_PASSWORD "$(rand 18)"
keys=$(mktemp -d secrets/.keys.XXXXXX)   # same filesystem: the moves below are renames
"$py" -m tfp.cli keys --out "$keys/k" >/dev/null
mv "$keys/k/pseudonym.key" secrets/TFP_PSEUDONYM_KEY
mv "$keys/k/linkage.key" secrets/TFP_LINKAGE_KEY
mv "$keys/k/signing.key" secrets/TFP_SIGNING_KEY
mv "$keys/k/signing.pub" secrets/signing.pub        # public: for the recipient, mounted nowhere
rm -rf "$keys"  # age.key/age.pub: the recipient makes its own pair and gives you its public key
# The stand-in recipient gets only a SHA-512 crypt hash; the password itself goes into the sftp_ons
# Connection (Admin → Connections), typed by a maintainer, and into no container.
put recipient_sftp_password "$sftp"
put recipient_sftp_users "ons:$(printf '%s' "$sftp" | openssl passwd -6 -stdin):e:1001::inbound/E09000031"
chmod 600 secrets/*
chmod 644 secrets/signing.pub
[ "$(id -u)" = "$uid" ] || chown -R "$uid" secrets logs
printf 'AIRFLOW_UID=%s\n' "$uid" > .env
echo "wrote secrets/ (files 600, folder 700) and .env (AIRFLOW_UID only)."
echo "The admin password is secrets/_AIRFLOW_WWW_USER_PASSWORD; give on-call engineers their own accounts."
echo "Keep a copy of secrets/TFP_* in the council's key store: losing them breaks every later night."
echo "Give secrets/signing.pub to the recipient (tfp verify-delivery --signing-public-key)."
