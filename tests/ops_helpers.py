"""A real Airflow on loopback for the operations tests: api-server, scheduler, dag-processor (and workers).

The stack itself lives in :mod:`tfp_dev.airflow_stack` (the backfill benchmark starts the same one); here
it starts from a copy of the session's migrated SQLite metadata database instead of migrating its own.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from conftest import airflow_home
from tfp_airflow.local import free_port
from tfp_dev import airflow_stack as _stack
from tfp_dev.airflow_stack import (
    AIRFLOW,
    BIN,
    REPO,
    TFP,
    USERS,
    AirflowStack,
    StackError,
    clean_env,
    sensitive_names,
)

__all__ = ["AIRFLOW", "BIN", "REPO", "TFP", "USERS", "AirflowStack", "StackError", "airflow_stack", "clean_env",
           "free_port", "sensitive_names"]


def airflow_stack(root: Path, extra_env: dict[str, str], **kwargs) -> AbstractContextManager[AirflowStack]:
    """:func:`tfp_dev.airflow_stack.airflow_stack` on a copy of the session's migrated metadata database
    (unless ``sql_alchemy_conn`` names another database, which the stack migrates)."""
    return _stack.airflow_stack(root, extra_env, prepare_home=airflow_home, **kwargs)
