#!/usr/bin/env bash
# Entrypoint of the tfp image: exports each secret the service was given (a file in /run/secrets
# named as an environment variable, e.g. TFP_SIGNING_KEY or AIRFLOW__CORE__FERNET_KEY) and hands over
# to Airflow's own entrypoint. Compose's `secrets:` decide which service sees which secret, so no
# secret sits in docker-compose.yaml, in `docker inspect`, or in a container that does not need it.
# The umask makes everything these processes create (logs, work files) private to their user.
set -euo pipefail
umask 0077
dir=${TFP_SECRETS_DIR:-/run/secrets}
if [ -d "$dir" ]; then
    for file in "$dir"/*; do
        name=${file##*/}
        [[ -f $file && $name =~ ^[A-Z_][A-Z0-9_]*$ ]] || continue
        export "$name=$(<"$file")"
    done
fi
exec "${TFP_NEXT_ENTRYPOINT:-/entrypoint}" "$@"
