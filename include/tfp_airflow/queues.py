"""Which Celery queue a tfp task goes to, so that boroughs and sources can be spread across workers
(issue 14 item 6). Airflow's own mechanism: a cluster policy, ``task_policy``, which the dag-processor
applies to every task it parses. ``config/airflow_local_settings.py`` imports it; that file goes on the
Airflow path (``$AIRFLOW_HOME/config/``) of the dag-processor, the scheduler and the workers.

``TFP_CELERY_QUEUE`` (an environment variable of the dag-processor) is the queue's template:

- ``{la_code}``: a borough DAG's code (``tfp_nightly__E09000032`` -> ``E09000032``); ``main`` for
  ``tfp_nightly`` and ``tfp_retention``, whose config the deployment names at run time;
- ``{source}``: the source of a nightly ``<source>.extract`` / ``validate`` / ``stage`` task; ``main``
  for every other task.

Unset, tasks keep Airflow's default queue (``[operators] default_queue``), as before. A Celery worker
takes a queue's tasks with ``airflow celery worker --queues <name>[,<name>...]``; a queue no worker
listens on leaves its tasks *queued*, so start the workers before unpausing the DAGs.
"""

from __future__ import annotations

import os
import re
import string

from tfp.config import ConfigError
from tfp.feeds import ALL_SOURCES

QUEUE_VARIABLE = "TFP_CELERY_QUEUE"
DAG_KINDS = ("tfp_nightly", "tfp_retention")
PLACEHOLDERS = {"la_code", "source"}
QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def _check(template: str) -> None:
    names = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    if names - PLACEHOLDERS or not QUEUE_NAME.match(template.replace("{la_code}", "x").replace("{source}", "x")):
        raise ConfigError(f"{QUEUE_VARIABLE}={template!r}: a queue name of letters, digits, _ . - with the "
                          "placeholders {la_code} and {source} only",
                          hint=f"for example {QUEUE_VARIABLE}=tfp_{{la_code}} or tfp_{{la_code}}_{{source}}")


def queue_for(dag_id: str, task_id: str, template: str) -> str | None:
    """The queue of one task of a tfp DAG under ``template``; None for a DAG that is not tfp's."""
    kind, _, la_code = dag_id.partition("__")
    if kind not in DAG_KINDS:
        return None
    _check(template)
    group, _, step = task_id.partition(".")
    source = group if kind == "tfp_nightly" and group in ALL_SOURCES and step else "main"
    return template.format(la_code=la_code or "main", source=source)


def task_policy(task) -> None:
    """Airflow cluster policy: a tfp task's queue from ``TFP_CELERY_QUEUE``; nothing when it is unset."""
    template = os.environ.get(QUEUE_VARIABLE)
    if not template:
        return
    queue = queue_for(task.dag_id, task.task_id, template)
    if queue is not None:
        task.queue = queue
