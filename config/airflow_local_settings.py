"""Airflow local settings for tfp: copy this file to ``$AIRFLOW_HOME/config/airflow_local_settings.py`` on the
dag-processor, the scheduler and the workers (Airflow imports it in every one of its processes at start-up).

- ``task_policy`` spreads tfp over Celery queues when ``TFP_CELERY_QUEUE`` is set (see tfp_airflow.queues and
  the README's "Many boroughs, one deployment").
- :func:`tfp_airflow.preload.preload` imports the tasks' heavy libraries once in ``airflow scheduler`` (with
  the LocalExecutor) and ``airflow celery worker``, so the task processes forked from them do not import them
  again; every other process is left as it was. ``TFP_PRELOAD=0`` turns it off.
"""

from tfp_airflow.preload import preload
from tfp_airflow.queues import task_policy

preload()

__all__ = ["task_policy"]
