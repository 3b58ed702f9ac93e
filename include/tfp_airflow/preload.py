"""Import the heavy libraries of tfp's tasks once, in the process that every task process is forked from.

Under Airflow 3 each task instance is a process of its own: the LocalExecutor forks its workers from the
scheduler when it starts, a Celery worker forks its pool from the ``airflow celery worker`` process, and the
Task SDK's supervisor forks the task process from that worker (``os.fork``, no exec, on Linux). tfp's tasks
import pandas, pyarrow, Great Expectations, Splink and DuckDB inside the task (right for the dag-processor,
which must parse fast), so every task pays those imports again: seconds each, Great Expectations most.
Imported once in the scheduler or the Celery worker before it forks, they are inherited and a task's
``import`` finds them in ``sys.modules``.

Only there: never in the api-server, the dag-processor, the triggerer, the ``airflow`` command line, or
``tfp run`` (which imports each library once anyway). The decision is made from ``sys.argv`` (``airflow
scheduler`` with a LocalExecutor among the executors, ``airflow celery worker``) because
``config/airflow_local_settings.py``, which calls :func:`preload`, is imported by every Airflow process.
``TFP_PRELOAD=0`` (or false/no/off) turns it off.

Only third-party libraries are preloaded, not tfp's own modules: a changed tfp still reaches the next task
without restarting the scheduler (tfp's modules import in well under a second). The imports start no Python
thread and open no file, socket or database connection (``tests/test_preload.py`` checks it); numpy's and
scipy's OpenBLAS and pyarrow's jemalloc start native threads, which those libraries make fork-safe with
``pthread_atfork`` handlers.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

SWITCH = "TFP_PRELOAD"
OFF = frozenset({"0", "false", "no", "off"})

# What the nightly tasks import (python -X importtime of each stage's task, less what the scheduler already
# holds), cheapest first. Great Expectations alone takes several seconds.
MODULES = (
    "numpy",
    "pandas",
    "pyarrow",
    "pyarrow.compute",
    "pyarrow.csv",
    "sqlalchemy",
    "alembic",
    "yaml",
    "pydantic",
    "cryptography.hazmat.primitives.ciphers.aead",
    "cryptography.hazmat.primitives.asymmetric.ed25519",
    "pyrage",
    "paramiko",
    "duckdb",
    "sqlglot",
    "splink",
    "nicknames",
    "great_expectations",
    "great_expectations.core",
    "great_expectations.data_context.types.base",
    "great_expectations.validator.v1_validator",
)

log = logging.getLogger(__name__)


def _airflow_command(argv: Sequence[str]) -> list[str] | None:
    """The words after ``airflow`` when ``argv`` is the airflow command line (``airflow ...`` or
    ``python -m airflow ...``), else None."""
    if not argv:
        return None
    program = Path(argv[0])
    if program.name == "airflow" or (program.name == "__main__.py" and program.parent.name == "airflow"):
        return list(argv[1:])
    return None


def _local_executor(executors: str) -> bool:
    """Whether ``[core] executor`` (a comma-separated list, each a name or an alias:name path) holds the
    LocalExecutor, the only executor that forks its task processes from the scheduler."""
    for entry in executors.split(","):
        name = entry.strip().rsplit(":", 1)[-1].rsplit(".", 1)[-1]
        if name == "LocalExecutor":
            return True
    return False


def _start_method() -> str:
    """multiprocessing's start method as the LocalExecutor will find it, without fixing it here: only "fork"
    lets its workers inherit the scheduler's modules (Python 3.14 makes "forkserver" Linux's default)."""
    import multiprocessing

    return multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]


def _configured_executor() -> str:
    try:
        from airflow.configuration import conf

        return conf.get("core", "executor", fallback="LocalExecutor")
    except Exception:  # noqa: BLE001 - never stop Airflow from starting over an optimisation
        return os.environ.get("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")


def wanted(argv: Sequence[str], environ: Mapping[str, str], executor: str | None = None) -> bool:
    """Whether this process should preload: ``airflow scheduler`` whose executors include the LocalExecutor
    (``executor``: ``[core] executor``, read from Airflow's configuration when None) and whose workers will
    be forked, or ``airflow celery worker``; never with ``TFP_PRELOAD`` off, never for ``--help``."""
    if environ.get(SWITCH, "").strip().lower() in OFF:
        return False
    words = _airflow_command(argv)
    if not words or "-h" in words or "--help" in words:
        return False
    if words[:2] == ["celery", "worker"]:
        return True
    if words[0] == "scheduler":
        return (_local_executor(executor if executor is not None else _configured_executor())
                and _start_method() == "fork")
    return False


def preload(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
            modules: Sequence[str] = MODULES) -> list[str]:
    """Import ``modules`` when :func:`wanted` says so; returns what it imported. A module that fails to import
    is skipped (the task that needs it fails as it would have): preloading must never stop a scheduler."""
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    if not wanted(argv, environ):
        return []
    # as tfp does everywhere it starts Airflow; Great Expectations reads it when imported
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    # Great Expectations logs hundreds of INFO lines while importing; its tasks set the same level
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    started = time.perf_counter()
    done = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - see the docstring
            log.warning("tfp preload: could not import %s (%s); tasks will import it themselves",
                        name, type(e).__name__)
            continue
        done.append(name)
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    # Airflow configures its logging after importing airflow_local_settings, so a log record made here would be
    # dropped: one line on stderr (the component's log) says what this process holds for its task processes
    print(f"tfp preload: {len(done)} of {len(modules)} modules in {time.perf_counter() - started:.1f} s, inherited "
          f"by the task processes forked from this one ({SWITCH}=0 turns it off)", file=sys.stderr, flush=True)
    return done


LOCAL_SETTINGS = '''"""Airflow local settings written by `tfp airflow` (the repository's config/airflow_local_settings.py): the
cluster policy of tfp_airflow.queues, and tfp_airflow.preload in the scheduler (TFP_PRELOAD=0 turns it off)."""

from tfp_airflow.preload import preload
from tfp_airflow.queues import task_policy

preload()

__all__ = ["task_policy"]
'''


def install_local_settings(home: Path) -> tuple[Path, bool]:
    """Write ``<home>/config/airflow_local_settings.py`` (tfp's policy and preload) unless the home has one:
    its path, and whether it was written now (an operator's own file is kept as it is)."""
    target = home / "config" / "airflow_local_settings.py"
    if target.exists():
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(LOCAL_SETTINGS, encoding="utf-8")
    return target, True

