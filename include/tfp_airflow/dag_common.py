"""The header every tfp DAG shares, and how its tasks find the run's config and reference date.

The DAG files call ``DAG(dag_id, **header(...))`` themselves rather than having a factory here build
the DAG: Airflow records the file that calls ``DAG(...)`` as the DAG's file (``fileloc``), and a task
is run by parsing that file again. This module lives on the package path, not in ``dags/``: the
dag-processor would parse a helper in ``dags/`` as a DAG file, and a plain ``DagBag`` (``tfp run``,
the tests) does not put ``dags/`` on ``sys.path``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, Param, get_current_context

TIMEZONE = "Europe/London"  # a night's reference date is its logical date's calendar date here
START_DATE = pendulum.datetime(2025, 1, 1, tz=TIMEZONE)
OWNER = "tfp-data-team"


def failure_callback(bound_config: str | None, kind: str = "nightly",
                     la_code: str | None = None) -> Callable[[Mapping[str, Any]], None]:
    """What every task does when it fails, with the borough's own config when it has one: a nightly task
    writes the failed night's run report (status failed, its stage, the safe message), then the alert
    goes through the borough's own alert Connection when it has one."""

    def alert(context: Mapping[str, Any]) -> None:
        from tfp_airflow.callbacks import notify_failure, report_failure

        if kind == "nightly":
            report_failure(context, bound_config)
        notify_failure(context, bound_config, la_code)

    return alert


def header(*, kind: str, cron: str, description: str, doc_md: str, execution_timeout: timedelta,
           params: Mapping[str, Param], bound_config: str | None = None, la_code: str | None = None) -> dict:
    """``DAG(...)`` keyword arguments shared by ``tfp_<kind>`` and ``tfp_<kind>__<la_code>``: one run at a
    time, no catch-up, a London-time cron timetable, no retries unless a task sets its own (a broken file
    stays broken), an execution timeout and the failure alert on every task."""
    return {
        "description": description + (f" ({la_code})" if la_code else ""),
        "schedule": CronDataIntervalTimetable(cron, timezone=TIMEZONE),
        "start_date": START_DATE,
        "catchup": False,
        "max_active_runs": 1,
        "default_args": {
            "owner": OWNER,
            "retries": 0,
            "execution_timeout": execution_timeout,
            "on_failure_callback": failure_callback(bound_config, kind, la_code),
        },
        "tags": ["tfp", kind, *([la_code] if la_code else [])],
        "doc_md": doc_md,
        "params": dict(params),
    }


def dry_run_param(description: str) -> Param:
    """The ``dry_run`` switch of a manual run; off for scheduled runs."""
    return Param(False, type="boolean", description=description)


def run_config(bound_config: str | None) -> str:
    """The running task's config: the borough DAG's own file, else the deployment's (``TFP_CONFIG``).
    A run whose conf names a config is refused first: a trigger never chooses it."""
    from tfp import deployment

    context = get_current_context()
    deployment.refuse_chosen_config(context["dag_run"].conf, context["params"])
    return bound_config or deployment.config_path()


def run_inputs(bound_config: str | None) -> tuple[str, date]:
    """The running task's config and reference date: the ``reference_date`` param of a manual run when
    the DAG has one and it is set, else the logical date's calendar date in Europe/London. A run
    triggered without a logical date (Airflow 3's default for ``airflow dags trigger`` and the API) has
    none in its context: its ``run_after``, when it was asked to run, stands in."""
    from tfp.pipeline import reference_date_of

    config = run_config(bound_config)
    context = get_current_context()
    chosen = context["params"].get("reference_date")
    if chosen:
        return config, date.fromisoformat(chosen)
    return config, reference_date_of(context.get("logical_date") or context["dag_run"].run_after)


def warn_flags(result: Mapping[str, Any], bound_config: str | None, la_code: str | None) -> None:
    """The warning alert of a night that goes on with feeds flagged (check_inputs' result); the flags are
    already warnings in the task's log, which the UI shows."""
    if not (result.get("datasets_overdue") or result.get("files_volume_flagged")):
        return
    from tfp_airflow.callbacks import notify_warning

    notify_warning(get_current_context(), result["freshness"], bound_config, la_code)


def param(name: str) -> Any:
    """A param of the running task's run."""
    return get_current_context()["params"][name]


def borough_dags(build: Callable[[str, str | None, str | None], DAG], dag_id: str) -> dict[str, DAG]:
    """``{"dag_<la_code>": <dag_id>__<la_code>}`` for every file of ``TFP_BOROUGHS_DIR``, for the DAG
    file's globals (Airflow finds DAGs among a module's globals)."""
    from tfp.deployment import boroughs

    return {f"dag_{code}": build(f"{dag_id}__{code}", path, code) for code, path in boroughs().items()}


def parse_time_config(bound_config: str | None):
    """The config as the DAG file sees it when parsed (the borough's file or ``TFP_CONFIG`` from the
    environment), or None when none is at hand or it does not load (the tasks then fail naming why)."""
    import os

    path = bound_config or os.environ.get("TFP_CONFIG")
    if not path:
        return None
    from tfp.config import load_config
    from tfp.errors import TfpError

    try:
        return load_config(path)
    except (TfpError, OSError):
        return None


def partner_layout(config) -> dict[str, list[str]]:
    """Each source's partner ids as the DAG's task groups show them, from the config read when the DAG file
    is parsed (:func:`parse_time_config`). A source in the short form, or no config at hand, is ``[source]``:
    the groups of today, and a source's tasks then run each of its partners in turn (tfp.pipeline.per_partner)."""
    from tfp.feeds import ALL_SOURCES

    layout = {source: [source] for source in ALL_SOURCES}
    if config is None:
        return layout
    for source in ALL_SOURCES:
        partners = config.partners(source)
        if len(partners) > 1 or (partners and not partners[0].short_form):
            layout[source] = [p.id for p in partners]
    return layout
