"""Airflow local settings for a deployment that spreads tfp over Celery queues: copy this file to
``$AIRFLOW_HOME/config/airflow_local_settings.py`` on the dag-processor, the scheduler and the workers,
and set ``TFP_CELERY_QUEUE`` (see tfp_airflow.queues and the README's "Many boroughs, one deployment")."""

from tfp_airflow.queues import task_policy

__all__ = ["task_policy"]
