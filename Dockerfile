# The tfp image for the production-shaped stack (docker-compose.yaml): Airflow 3.3.2 on Python 3.11
# with tfp's pinned dependencies and the package installed from include/.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root requirements.txt pyproject.toml /opt/tfp/
COPY --chown=airflow:root include /opt/tfp/include
RUN pip install --no-cache-dir -r /opt/tfp/requirements.txt "apache-airflow-providers-fab" \
        "apache-airflow-providers-celery" "apache-airflow-providers-redis" \
 && pip install --no-cache-dir --no-deps -e /opt/tfp
COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
