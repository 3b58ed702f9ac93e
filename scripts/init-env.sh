#!/usr/bin/env bash
# Writes .env for docker-compose.yaml with freshly generated secrets. Refuses to overwrite one.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -e .env ] && { echo ".env exists: remove it first if you really mean to rotate every secret"; exit 1; }
py=${PYTHON:-.venv/bin/python}
rand() { "$py" -c "import secrets; print(secrets.token_urlsafe($1))"; }
umask 077
cat > .env <<ENV
AIRFLOW_UID=$(id -u)
POSTGRES_PASSWORD=$(rand 24)
AIRFLOW_FERNET_KEY=$("$py" -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())")
AIRFLOW_JWT_SECRET=$(rand 48)
AIRFLOW_API_SECRET_KEY=$(rand 32)
_AIRFLOW_WWW_USER_USERNAME=admin
_AIRFLOW_WWW_USER_PASSWORD=$(rand 18)
RECIPIENT_SFTP_PASSWORD=$(rand 18)
ENV
echo "wrote .env (mode 600). The admin password is in it; give on-call engineers their own accounts."
