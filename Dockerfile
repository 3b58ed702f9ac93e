# The tfp image for the production-shaped stack (docker-compose.yaml): Airflow 3.3.2 on Python 3.11
# with tfp's pinned runtime dependencies and the tfp and tfp_airflow packages installed from include/.
# The base image is pinned by digest (images.lock; scripts/pin-images.sh resolves it). Its celery,
# redis and fab providers come with it, fixed by that digest; requirements.txt pins everything else
# with == (the celery provider included), so a rebuild installs exactly what was tested.
FROM apache/airflow:3.3.2-python3.11@sha256:UNRESOLVED
# /opt/tfp/var seeds the tfp-work volume: the airflow user and group 0 (the stack runs as
# ${AIRFLOW_UID}:0) may write there, no one else; tfp keeps its own folders 0700 within it.
USER root
RUN install -d -o airflow -g root -m 0755 /opt/tfp && install -d -o airflow -g root -m 0770 /opt/tfp/var
USER airflow
# Runtime only: the runtime lock, the tfp and tfp_airflow packages and what they ship as package data
# (include/sql, the GX suites in expectations/, the example config, the DAG files and the plugin, which
# the packages' links point at). tfp is installed as a package (not -e), so it finds all of that in
# site-packages whatever the working directory (tfp.resources); /opt/tfp is only its build source.
# Neither tfp_dev (the generator, the benchmark, the demo) nor requirements-dev.txt nor the [dev]
# extra enters the image; `tfp generate` and `tfp demo` say so in one line there.
COPY --chown=airflow:root requirements.txt pyproject.toml /opt/tfp/
COPY --chown=airflow:root include/tfp /opt/tfp/include/tfp
COPY --chown=airflow:root include/tfp_airflow /opt/tfp/include/tfp_airflow
COPY --chown=airflow:root include/sql /opt/tfp/include/sql
COPY --chown=airflow:root expectations /opt/tfp/expectations
COPY --chown=airflow:root config/tfp.example.yaml /opt/tfp/config/tfp.example.yaml
COPY --chown=airflow:root dags /opt/tfp/dags
COPY --chown=airflow:root plugins /opt/tfp/plugins
RUN pip install --no-cache-dir -r /opt/tfp/requirements.txt \
 && pip install --no-cache-dir --no-deps /opt/tfp \
 && python -c "import airflow.providers.celery, airflow.providers.redis, airflow.providers.fab"
COPY --chown=root:root --chmod=0755 scripts/secrets-entrypoint.sh /opt/tfp/secrets-entrypoint.sh
COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
# Airflow's local settings: the Celery queue policy, and the preload that lets a Celery worker's task
# processes inherit pandas, Great Expectations and Splink instead of importing them per task
# (tfp_airflow.preload; TFP_PRELOAD=0 turns it off).
COPY --chown=airflow:root config/airflow_local_settings.py /opt/airflow/config/airflow_local_settings.py
# Secrets from /run/secrets become the environment of this container's processes only, then
# Airflow's own entrypoint runs (it stays PID 1's child under dumb-init, as in the base image).
ENTRYPOINT ["/usr/bin/dumb-init", "--", "/opt/tfp/secrets-entrypoint.sh"]
CMD []
